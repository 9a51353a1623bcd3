"""Lightning callbacks and plugins that training needs beyond Lightning's own: the last-step
validation, the learning rate, the progress bar, the validation curve, the view images for
TensorBoard, the training clock (the benchmark's timers: nerf_lab.analysis.benchmarking) and
atomic checkpoint writes."""

from __future__ import annotations

import csv
import logging
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

from nerf_lab.files import written_atomically
from nerf_lab.nerf.metrics import image_psnr
from nerf_lab.visuals.panels import view_panel


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


class LogViewImages(pl.Callback):
    """Every validation view at each validation (`val/view_<n>`) and every test view at the
    end (`test/view_<n>`, n the view's index in its split), as ground truth, prediction with its
    PSNR, depth with its colour bar, and opacity. The views come from the module's validation
    and test steps, which return what they rendered. (With data-parallel ranks, rank 0 logs
    the views it rendered itself.)"""

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, "val", outputs, batch)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        self._log(trainer, "test", outputs, batch)

    @staticmethod
    def _log(trainer: pl.Trainer, split: str, outputs: Any, batch: Any) -> None:
        writer = trainer.logger.experiment if trainer.logger is not None else None
        if outputs is None or not hasattr(writer, "add_image"):
            return
        prediction, target = outputs.rgb.float().clamp(0, 1), batch.rgb.float()
        psnr = image_psnr(prediction, target)
        near, far = trainer.lightning_module.renderer.near, trainer.lightning_module.renderer.far
        panel = view_panel(target, prediction, outputs.depth, outputs.opacity, near, far, f"prediction, {psnr:.2f} dB")
        writer.add_image(f"{split}/view_{batch.view}", panel, trainer.global_step, dataformats="HWC")


class TrainingClock(pl.Callback):
    """Seconds spent training, validation excluded, and the steps they took: steps/s that mean
    the same with any validation interval.

    The seconds go into checkpoints, so a resumed run reports the training time of all its
    steps, not only of those since the resume. (A checkpoint without them counts the steps
    since the resume only.)"""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.first_step = 0
        self._restored = False
        self._since: float | None = None

    def _pause(self) -> None:
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def _resume(self) -> None:
        self._since = time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return {"seconds": self.seconds + running}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = float(state_dict["seconds"])
        self._restored = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The first step that `seconds` covers: 0 when they came back from the checkpoint.
        self.first_step = 0 if self._restored else trainer.global_step
        self._resume()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._resume()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()


log = logging.getLogger("nerf_lab")


def format_duration(seconds: float) -> str:
    """`42 s`, `7 min 05 s`, `2 h 03 min`: a duration as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class StepPace(pl.Callback):
    """The measured seconds a training step and the time left to `trainer.max_steps`.

    The first `skip` steps (start-up: the first batch's set-up, memory allocation, and with
    `torch.compile` the compilation) are not measured; from then on, the seconds between the
    ends of consecutive steps, validation excluded. The time left is the steps left at that
    pace plus, once one has run, the validations left at their measured mean. Shown in the
    progress bar (`StepProgressBar`: `s/step`, `left`) and logged once, as soon as `measure`
    steps or `measure_s` seconds have been measured."""

    def __init__(self, skip: int = 1, measure: int = 3, measure_s: float = 30.0, clock: Any = time.perf_counter) -> None:
        self.skip, self.measure, self.measure_s, self.clock = skip, measure, measure_s, clock
        self.steps, self.seconds = 0, 0.0
        self.validations, self.validation_seconds = 0, 0.0
        self.reported = False
        self._first_step = 0
        self._last: tuple[int, float] | None = None
        self._validation_started: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_step = trainer.global_step
        self._last = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now, step = self.clock(), trainer.global_step
        if self._last is not None and self._last[0] - self._first_step >= self.skip and step > self._last[0]:
            self.steps += step - self._last[0]
            self.seconds += now - self._last[1]
        self._last = (step, now)
        if not self.reported and self.steps > 0 and (self.steps >= self.measure or self.seconds >= self.measure_s):
            self.reported = True
            if trainer.is_global_zero:
                log.info("pace: %s", self.describe(trainer))

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._validation_started = self.clock()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validation_started is None:
            return
        now = self.clock()
        self.validations += 1
        self.validation_seconds += now - self._validation_started
        self._validation_started = None
        if self._last is not None:  # the next step's interval starts here, not before the validation
            self._last = (self._last[0], now)

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steps if self.steps else None

    def seconds_left(self, trainer: pl.Trainer) -> float | None:
        """Seconds to `trainer.max_steps` at the measured pace (None before a measured step)."""
        pace = self.seconds_per_step
        if pace is None or trainer.max_steps is None or trainer.max_steps < 0:
            return None
        step, last = trainer.global_step, trainer.max_steps
        left = max(0, last - step) * pace
        if self.validations:
            interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else 0
            validations_left = (last // interval - step // interval) if interval else 0
            if last > step and (not interval or last % interval):
                validations_left += 1  # the validation after the last step (ValidateOnLastStep)
            left += validations_left * self.validation_seconds / self.validations
        return left

    def describe(self, trainer: pl.Trainer) -> str:
        """One line: the pace and the time left, e.g. `0.52 s a step (3 steps measured, start-up
        excluded); 995 steps to trainer.max_steps=1000: about 8 min 37 s`."""
        left = self.seconds_left(trainer)
        validations = (
            f", validations included ({self.validation_seconds / self.validations:.1f} s each)" if self.validations else ", validations not yet measured"
        )
        return (
            f"{self.seconds_per_step:.3g} s a step ({self.steps} step{'s' if self.steps != 1 else ''} measured, start-up excluded); "
            f"{max(0, trainer.max_steps - trainer.global_step)} steps to trainer.max_steps={trainer.max_steps}: "
            f"about {format_duration(left or 0.0)}{validations}"
        )
