"""Evaluate a checkpoint on its scene's test split: `python -m nerf_lab.eval ckpt_path=<file>`.

Writes, into the run folder: `views/<n>.png` (prediction | ground truth | depth, labelled);
for other metric tools (LPIPS, FLIP), each view's plain prediction `pred/<view>.png`, its ground
truth `gt/<view>.png` and its depth `depth/<view>.npy` (float32, scene units; where nothing was
hit, far), named after the split's image (`r_0`); `metrics.json` with PSNR, SSIM and, where
its weights are on the machine, LPIPS (VGG) for every view (`views`) and their means, the
resolution evaluated at, and the protocol (`nerf_lab.training.views`: background, SSIM's window
and variant, number of views); and `test_views.csv`, the views' rows. A training run's test
writes the same record.

`resolution=<width>` evaluates at another image width than the training run's (up to the
source images'); the scene's settings (`data.*`) otherwise all come from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import imageio.v3 as iio
import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig

from nerf_lab.cli import hydra_command, run_task
from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers before Hydra composes it)
from nerf_lab.nerf.metrics import image_psnr
from nerf_lab.runs.checkpoints import load_trained
from nerf_lab.runs.hydra_callbacks import take_prepared
from nerf_lab.config.compose import CONF_DIR
from nerf_lab.config.checks import EVAL_CHECKS, check_values
from nerf_lab.training.hardware import keep_freed_memory, resolve_precision
from nerf_lab.visuals.panels import comparison_strip, to_uint8
from nerf_lab.runs.records import write_json_atomically
from nerf_lab.training.views import VIEWS_CSV, record_test_views


class SaveViews(pl.Callback):
    """Writes each rendered view as a labelled panel, and as plain files named by view."""

    def __init__(self, folder: Path, near: float, far: float) -> None:
        self.folder, self.near, self.far = folder, near, far
        for name in ("views", "pred", "gt", "depth"):
            (folder / name).mkdir(parents=True, exist_ok=True)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        view = batch.view
        name = Path(trainer.datamodule.splits["test"].file_paths[view]).stem  # r_0, as the data set names it
        prediction = outputs.rgb.float().clamp(0, 1)
        depth, opacity = outputs.depth.float(), outputs.opacity.float()
        mask = batch.mask  # the pixels that count, where not all do: the title's PSNR is the scored one
        psnr = image_psnr(prediction, batch.rgb) if mask is None else image_psnr(prediction[mask], batch.rgb[mask])
        panel = comparison_strip(prediction, batch.rgb, depth, opacity, self.near, self.far, f"prediction ({name}), {psnr:.2f} dB")
        iio.imwrite(self.folder / "views" / f"{view:03d}.png", panel)
        iio.imwrite(self.folder / "pred" / f"{name}.png", to_uint8(prediction))
        iio.imwrite(self.folder / "gt" / f"{name}.png", to_uint8(batch.rgb))
        np.save(self.folder / "depth" / f"{name}.npy", depth.cpu().numpy().astype(np.float32))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    prepared = take_prepared(cfg)  # the model the check before the run loaded, if it ran
    if prepared is not None:
        trained = prepared.trained
    else:
        check_values(cfg, EVAL_CHECKS)
        trained = load_trained(cfg.ckpt_path, cfg.chunk)
    datamodule = trained.datamodule(cfg.scene_dir, cfg.views, cfg.get("resolution"))
    output_dir = Path(cfg.paths.output_dir)

    keep_freed_memory()
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    saver = SaveViews(output_dir, trained.run_config.data.near, trained.run_config.data.far)
    trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, precision=precision, logger=False, callbacks=[saver])
    trainer.test(trained.module, datamodule=datamodule, verbose=False)

    per_view = trained.module.test_views
    metrics = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "split": "test",
        "psnr": float(trainer.callback_metrics["test/psnr"]),
        "ssim": float(trainer.callback_metrics["test/ssim"]),
        "resolution": [datamodule.splits["test"].width, datamodule.splits["test"].height],
        "precision": precision,
    }
    if "test/lpips" in trainer.callback_metrics:
        metrics["lpips"] = float(trainer.callback_metrics["test/lpips"])
    # The same per-view record and protocol as a training run's test writes.
    metrics.update(record_test_views(output_dir, per_view, trained.module.test_protocol))
    write_json_atomically(output_dir / "metrics.json", metrics)
    width, height = metrics["resolution"]
    lpips = f", LPIPS ({metrics['protocol']['lpips']['network']}) {metrics['lpips']:.3f}" if "lpips" in metrics else ""
    print(
        f"test: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}{lpips} over {len(per_view)} views at {width}×{height} px; "
        f"images, metrics.json and {VIEWS_CSV} in {output_dir}"
    )
    if "lpips" not in metrics:
        print(metrics["protocol"]["lpips"]["unavailable"])
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _main(cfg: DictConfig) -> None:
    run_task(evaluate, cfg)


main = hydra_command(_main, own_keys_only="eval")

if __name__ == "__main__":
    main()
