"""The seconds a run trains, validation excluded (the benchmark's timers: nerf_lab.analysis.benchmarking)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn



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
