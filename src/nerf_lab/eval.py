"""Evaluate a checkpoint on its scene's test split: `python -m nerf_lab.eval ckpt_path=<file>`.

Writes, into the run folder: `views/<n>.png` (prediction | ground truth | depth) and
`metrics.json` with PSNR and SSIM for every view and their means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import imageio.v3 as iio
import pytorch_lightning as pl
from omegaconf import DictConfig

from nerf_lab.cli import hydra_command, run_task
from nerf_lab.training.checkpoints import load_trained
from nerf_lab.training.config import CONF_DIR, EVAL_CHECKS, check_values
from nerf_lab.training.hardware import auto_precision, keep_freed_memory
from nerf_lab.training.panels import colourise_depth, side_by_side
from nerf_lab.training.runs import write_json_atomically


class SaveViews(pl.Callback):
    """Writes each rendered view as prediction | ground truth | depth."""

    def __init__(self, folder: Path, near: float, far: float) -> None:
        self.folder, self.near, self.far = folder, near, far

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        depth = colourise_depth(outputs["depth"].float(), outputs["opacity"].float(), self.near, self.far)
        iio.imwrite(self.folder / f"{int(batch['view']):03d}.png", side_by_side(outputs["rgb"], batch["rgb"], depth))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    check_values(cfg, EVAL_CHECKS)
    trained = load_trained(cfg.ckpt_path, cfg.chunk)
    datamodule = trained.datamodule(cfg.scene_dir, cfg.views)
    output_dir = Path(cfg.paths.output_dir)
    views_dir = output_dir / "views"
    views_dir.mkdir(parents=True, exist_ok=True)

    keep_freed_memory()
    precision = auto_precision(cfg.accelerator) if cfg.precision == "auto" else cfg.precision
    saver = SaveViews(views_dir, trained.run_config.data.near, trained.run_config.data.far)
    trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, precision=precision, logger=False, callbacks=[saver])
    trainer.test(trained.module, datamodule=datamodule, verbose=False)

    per_view = trained.module.test_views
    metrics = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "split": "test",
        "psnr": float(trainer.callback_metrics["test/psnr"]),
        "ssim": float(trainer.callback_metrics["test/ssim"]),
        "views": per_view,
        "precision": precision,
    }
    write_json_atomically(output_dir / "metrics.json", metrics)
    print(f"test: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} over {len(per_view)} views; images and metrics.json in {output_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)


main = hydra_command(_main)

if __name__ == "__main__":
    main()
