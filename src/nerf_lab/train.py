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
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nerf_lab.cli import hydra_command, run_task
from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers before Hydra composes it)
from nerf_lab.errors import TrainingDiverged, TrainingFailed
from nerf_lab.training.callbacks import AtomicCheckpointIO, StepPace, TrainingClock
from nerf_lab.config.build import Run, build_run, run_config
from nerf_lab.config.compose import CONF_DIR, run_choices
from nerf_lab.runs.checkpoints import SCENE_KEY, Resume, check_resumable, read_checkpoint
from nerf_lab.runs.hydra_callbacks import take_prepared
from nerf_lab.training.hardware import keep_freed_memory, resolve_precision
from nerf_lab.runs.resume import ScheduleFromConfig
from nerf_lab.config.stored import CHOICES_KEY
from nerf_lab.runs.records import finish_record, start_record
from nerf_lab.training.views import record_test_views
from nerf_lab.runs.stops import (
    RunInterrupted,
    StopSignals,
    command_overrides,
    interrupted,
    preempted_checkpoint,
    stop_signals,
)
from nerf_lab.training.tensorboard import describe_run, log_run_figures
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
    way: `last.ckpt` at that step, and `RunInterrupted` (`nerf_lab.runs.stops`)."""
    prepared = take_prepared(cfg)  # what the check before the run built, if it ran
    preempted = preempted_checkpoint(Path(cfg.paths.output_dir))
    if preempted is not None and cfg.ckpt_path and Path(cfg.ckpt_path).resolve() == preempted.resolve():
        preempted = None  # resumed from that very checkpoint by its own arguments
    if preempted is not None:  # a submitit job requeued: the run goes on from its earlier try
        log.info("resuming the run in %s, stopped before it finished, from %s", cfg.paths.output_dir, preempted)
        with open_dict(cfg):
            cfg.ckpt_path = str(preempted)
    if prepared is not None and preempted is None:
        run, resume = prepared.run, prepared.resume
    else:
        run = build_run(cfg)
        resume = check_resumable(cfg, run.module) if cfg.ckpt_path else None
    output_dir = Path(cfg.paths.output_dir)
    with stop_signals() as stops:
        try:
            previous = start_record(output_dir)
            return _train(cfg, run, resume, output_dir, stops, previous)
        except (SIGTERMException, RunInterrupted):
            step = 0 if stops.trainer is None else stops.trainer.global_step
            raise interrupted(stops, step, output_dir, command_overrides()) from None


def _train(
    cfg: DictConfig, run: Run, resume: Resume | None, output_dir: Path, stops: StopSignals, previous: dict[str, Any]
) -> dict[str, Any]:
    datamodule, module = run.datamodule, run.module
    # The config checkpoints carry: this run's, with the scene's values the build recorded.
    module.hparams["config"] = run_config(cfg, run.config["data"])
    # The group choices (data=blender, sampling=occupancy, …): what eval and render rebuild
    # the run from, with today's config (nerf_lab.config.stored); the config is data.
    module.hparams[CHOICES_KEY] = run_choices(cfg)
    module.hparams[SCENE_KEY] = datamodule.scene_identity()  # what a resume checks its scene against
    data = run.config["data"]
    if data.get("normalize") and data.get("scene_transform") is not None:
        # Hydra wrote .hydra/config.yaml before the scene was read: it holds the configured values.
        log.info(
            "data.normalize: centre %s, scale %.4g; near %.4g, far %.4g, scene_box %s, derived from the training cameras and "
            "recorded in the checkpoints' config (.hydra/config.yaml keeps the configured values)",
            [round(x, 4) + 0.0 for x in data["scene_transform"]["centre"]], data["scene_transform"]["scale"], data["near"], data["far"],
            data["scene_box"],
        )
    if cfg.compile:
        module.renderer.compile_fields()
    clock = TrainingClock()
    logger = instantiate(cfg.logger)
    # The pace after start-up: a compiled run's first steps compile (and may compile again).
    pace = StepPace(skip=3 if cfg.compile else 1)
    callbacks = [instantiate(callback) for callback in cfg.callbacks.values() if callback is not None] + [clock, pace]
    if resume is not None:  # the schedule of this run's config, at the resumed step
        callbacks.append(ScheduleFromConfig(resume.changes))
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
        warning = long_run_warning(cfg, module.renderer, trainer.strategy.root_device, dtype)
        if warning:
            log.warning(warning)

    started = time.perf_counter()
    # weights_only=True: our checkpoints hold tensors and plain containers only (the config is
    # a plain dict), so resuming unpickles nothing that could run code.
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    if trainer.global_step <= (0 if resume is None else resume.start_step):
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
            "parameters": sum(p.numel() for p in module.renderer.parameters()),
            "device": _device_name(trainer),
            "precision": str(trainer.precision),
            "status": "completed",
            **tested,
        }
    )
    if trainer.is_global_zero:
        log_run_figures(logger, metrics, step=trainer.global_step)
        if cfg.test:
            metrics.update(record_test_views(output_dir, module.test_views, module.test_protocol))
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
