"""Lightning callbacks and plugins that training needs beyond Lightning's own."""

from __future__ import annotations

import csv
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import LearningRateMonitor, TQDMProgressBar
from pytorch_lightning.trainer.states import TrainerFn

from nerf_lab.data.files import written_atomically
from nerf_lab.training.timing import StepPace, format_duration


class ValidateOnLastStep(pl.Callback):
    """Validate after the last training step too, not only every `val_check_interval` steps,
    so every run (even one of a few steps) ends with a `val/psnr` and a best checkpoint.

    Lightning validates when `trainer.should_stop` is set; this sets it at `max_steps`.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class ValidationCurveCSV(pl.Callback):
    """Append each validation to `path` (the run's `curve.csv`) as it ends, one row a
    validation: `step` (updates done), `wall_s` (seconds since this process started fitting,
    validation included), `val_psnr` (dB) and `val_ssim`, so a run stopped at any point has
    written its curve so far in a file that any tool reads. A resumed run appends to the same
    file (its `wall_s` starts again from 0). Sanity-check validations are not recorded."""

    COLUMNS = ("step", "wall_s", "val_psnr", "val_ssim")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.started = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        value = lambda key: float(metrics[key]) if key in metrics else math.nan  # noqa: E731
        row = [trainer.global_step, f"{time.perf_counter() - self.started:.2f}", f"{value('val/psnr'):.4f}", f"{value('val/ssim'):.5f}"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file()
        with self.path.open("a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(self.COLUMNS)
            writer.writerow(row)
            file.flush()
            os.fsync(file.fileno())


class TrainLearningRate(LearningRateMonitor):
    """Lightning's learning-rate monitor, writing `train/lr` beside the other training curves
    rather than `lr-Adam`, a group of its own in TensorBoard."""

    def _extract_stats(self, trainer: pl.Trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        return {"train/" + re.sub(r"^lr-\w+", "lr", name): value for name, value in stats.items()}


class StepProgressBar(TQDMProgressBar):
    """A progress bar over steps (a NeRF run is one long epoch of random rays) that shows the
    loss and PSNR, without Lightning's version number."""

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("train")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        # The run's measured pace (`StepPace`), start-up excluded: tqdm's own rate counts the
        # first step's set-up and says nothing until it ends.
        pace = next((callback for callback in trainer.callbacks if isinstance(callback, StepPace)), None)
        if pace is not None and pace.seconds_per_step is not None and trainer.state.fn == TrainerFn.FITTING:
            metrics["s/step"] = f"{pace.seconds_per_step:.3g}"
            metrics["left"] = format_duration(pace.seconds_left(trainer) or 0.0)
        return metrics


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file and rename it into place: a run killed while
    saving keeps its previous `last.ckpt` whole, so it can always be resumed. The temporary
    file such a kill leaves behind is removed at the folder's next save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            with written_atomically(path) as partial:
                super().save_checkpoint(checkpoint, partial, storage_options)
        except OSError as error:  # name the file (Lightning's write through fsspec names none)
            if error.filename is None and error.errno is not None:
                raise OSError(error.errno, error.strerror, str(path)) from error
            raise
