"""Train a NeRF: `python -m nerf_lab.train [overrides]`, or a sweep with `-m`.

    python -m nerf_lab.train                                   # Tiny NeRF on the built-in scene
    python -m nerf_lab.train model=original                    # the paper's network
    python -m nerf_lab.train experiment=tiny_lego              # a preset
    python -m nerf_lab.train -m model.depth=2,4 sampling.n_c=64,128
    python -m nerf_lab.train ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt

`train(cfg)` is a plain function returning the run's metrics; the command only wraps it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nerf_lab.cli import hydra_command, run_task
from nerf_lab.errors import TrainingDiverged, TrainingFailed
from nerf_lab.training.callbacks import AtomicCheckpointIO
from nerf_lab.records.checkpoints import SCENE_KEY, check_resumable, read_checkpoint
from nerf_lab.records.config import CONF_DIR, build_datamodule, build_module, validate_config
from nerf_lab.training.hardware import keep_freed_memory, resolve_precision
from nerf_lab.records.resume import ScheduleFromConfig
from nerf_lab.records.run_config import CHOICES_KEY, run_choices
from nerf_lab.records.runs import finish_record, start_record
from nerf_lab.records.stops import (
    RunInterrupted,
    StopSignals,
    command_overrides,
    interrupted,
    stop_signals,
)
from nerf_lab.training.tensorboard import describe_run, log_run_figures
from nerf_lab.training.timing import StepPace, TrainingClock
from nerf_lab.analysis.benchmarking import long_run_warning

log = logging.getLogger("nerf_lab")

# The keys a run reports, in metrics.json and in the sweep table.
REPORTED = ("val/psnr", "val/psnr_best", "val/ssim", "test/psnr", "test/ssim", "train/loss", "train/psnr")


def _device_name(trainer: pl.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, validate and test one NeRF as `cfg` says; write `metrics.json` into the run
    folder (`paths.output_dir`) and return the metrics.

    A run resumed into its own folder starts by taking its old record out of the folder (a
    stop or failure from now on is not beside a `metrics.json`) and ends with the old metrics
    that this part did not measure again. SIGTERM or SIGINT stop the run after the step under
    way: `last.ckpt` at that step, and `RunInterrupted` (`nerf_lab.records.stops`)."""
    validate_config(cfg)
    resume_changes = check_resumable(cfg) if cfg.ckpt_path else []
    start_step = int(read_checkpoint(cfg.ckpt_path).get("global_step", 0)) if cfg.ckpt_path else 0
    output_dir = Path(cfg.paths.output_dir)
    with stop_signals() as stops:
        try:
            previous = start_record(output_dir)
            return _train(cfg, output_dir, stops, previous, resume_changes, start_step)
        except (SIGTERMException, RunInterrupted):
            step = 0 if stops.trainer is None else stops.trainer.global_step
            raise interrupted(stops, step, output_dir, command_overrides()) from None


def _train(
    cfg: DictConfig, output_dir: Path, stops: StopSignals, previous: dict[str, Any], resume_changes: list[str], start_step: int
) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # Checkpoints carry the config: make its paths absolute, so that evaluation and rendering
    # find the scene from any working directory.
    for group, key in (("data", "scene_dir"), ("data", "cache_dir")):
        if run_config[group].get(key):
            run_config[group][key] = str(Path(run_config[group][key]).resolve())
    record_scene_geometry(run_config["data"], datamodule.scene_geometry())
    module = build_module(OmegaConf.create(run_config), config=run_config)
    # The group choices (data=blender, sampling=occupancy, …): what eval and render rebuild
    # the run from, with today's config (nerf_lab.records.run_config); the config is data.
    module.hparams[CHOICES_KEY] = run_choices(cfg)
    module.hparams[SCENE_KEY] = datamodule.scene_identity()  # what a resume checks its scene against
    if cfg.compile:
        module.model.compile_fields()
    clock = TrainingClock()
    logger = instantiate(cfg.logger)
    # The pace after start-up: a compiled run's first steps compile (and may compile again).
    pace = StepPace(skip=3 if cfg.compile else 1)
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values() if callback is not None] + [clock, pace]
    if cfg.ckpt_path:  # the schedule of this run's config, at the resumed step
        callbacks.append(ScheduleFromConfig(resume_changes))
    if not cfg.trainer.enable_progress_bar:
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    keep_freed_memory()
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, precision=precision, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()]
    )

    describe_run(logger, cfg, precision=str(trainer.precision))
    stops.trainer = trainer
    if trainer.is_global_zero:
        dtype = torch.bfloat16 if str(trainer.precision).startswith("bf16") else torch.float32
        warning = long_run_warning(cfg, module.model, trainer.strategy.root_device, dtype)
        if warning:
            log.warning(warning)

    started = time.perf_counter()
    # weights_only=True: our checkpoints hold tensors and plain containers only (the config is
    # a plain dict), so resuming unpickles nothing that could run code.
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    if trainer.global_step <= start_step:
        raise TrainingFailed(
            f"the run trained 0 steps (stopped at step {trainer.global_step}; trainer.max_time={cfg.trainer.max_time}, "
            f"trainer.max_steps={cfg.trainer.max_steps}): expected at least one training step; its metrics are not results"
        )
    # Saving, not loading: Lightning's save flag of the same name says whether to drop the
    # optimizer state; it is kept so the run can go on. Every load is weights_only=True.
    trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt", weights_only=False)
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items() if k in REPORTED}
    tested: dict[str, Any] = {}
    if cfg.test:
        # The weights of the best validation, as the report renders them and eval is shown with.
        best = best_checkpoint(trainer)
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        tested = {
            "tested_checkpoint": "final weights" if best is None else Path(best).name,
            "tested_step": trainer.global_step if best is None else int(read_checkpoint(best)["global_step"]),
        }

    not_finite = [f"{key} {value}" for key, value in metrics.items() if not math.isfinite(value)]
    if not_finite:
        raise TrainingDiverged(f"{', '.join(not_finite)}: expected finite metrics; the run failed (try a lower optim.lr, now {cfg.optim.lr})")

    steps = trainer.global_step - clock.first_step
    metrics = {**previous, **metrics}
    metrics.update(
        {
            "steps": trainer.global_step,
            "train_time_s": round(clock.seconds, 2),
            "wall_time_s": round(time.perf_counter() - started, 2),
            "steps_per_s": round(steps / clock.seconds, 3) if clock.seconds > 0 else math.nan,
            "parameters": sum(p.numel() for p in module.model.parameters()),
            "device": _device_name(trainer),
            "precision": str(trainer.precision),
            "status": "completed",
            **tested,
        }
    )
    if trainer.is_global_zero:
        log_run_figures(logger, metrics, step=trainer.global_step)
        finish_record(output_dir, metrics)
        print(_summary_line(metrics, output_dir))
    return metrics


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint of the best `val/psnr` (the checkpoint callback that monitors it), or None
    when there is none (callbacks.best_checkpoint=null, or no validation ran)."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) == "val/psnr" and callback.best_model_path:
            return callback.best_model_path
    return None


def record_scene_geometry(data: dict[str, Any], geometry: dict[str, Any]) -> None:
    """Write the near, far, box and scene transform the data module uses (derived, with
    data.normalize) into the run's `data` config, before the model is built from it: the
    checkpoint's config then holds the values used, and eval, render and a resume use them."""
    data["near"], data["far"], data["scene_box"] = geometry["near"], geometry["far"], geometry["scene_box"]
    transform = geometry["scene_transform"]
    if transform is not None:
        data["scene_transform"] = transform.to_config()


def _summary_line(metrics: dict[str, Any], output_dir: Path) -> str:
    minutes, seconds = divmod(int(metrics["wall_time_s"]), 60)
    test = f", test/psnr {metrics['test/psnr']:.2f} dB" if "test/psnr" in metrics else ""
    return (
        f"done: best val/psnr {metrics.get('val/psnr_best', math.nan):.2f} dB{test}; "
        f"{metrics['steps']} steps in {minutes}m{seconds:02d}s ({metrics['steps_per_s']:.1f} steps/s on {metrics['device']}); "
        f"run files in {output_dir}"
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    result = run_task(train, cfg)
    return None if result is None else result.get("val/psnr_best")


main = hydra_command(_main)

if __name__ == "__main__":
    main()
