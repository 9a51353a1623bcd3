"""The seconds a run trains, validation excluded, and the pace it goes at (the benchmark's timers:
nerf_lab.analysis.benchmarking)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

log = logging.getLogger("nerf_lab")


class TrainingClock(pl.Callback):
    """Seconds spent training, validation excluded, and the steps they took: steps/s that mean
    the same with any validation interval.

    The seconds go into checkpoints, so a resumed run reports the training time of all its
    steps, not only of those since the resume. (A checkpoint without them, from an older
    version, counts the steps since the resume only.)"""

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
