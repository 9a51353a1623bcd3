"""Callbacks that tests add to a run on the command line (`+callbacks.x._target_=...`), with
tests/ on PYTHONPATH, to see inside processes they cannot reach otherwise."""

import json
from pathlib import Path

import pytorch_lightning as pl
import torch


class RecordRays(pl.Callback):
    """Writes the first training batch's ray directions and the thread count, one file a rank."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save(batch.directions.cpu(), self.folder / f"rays_rank{trainer.global_rank}.pt")
            record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "threads": torch.get_num_threads()}
            (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


class SignalAt(pl.Callback):
    """Sends this process `signal` (a name: SIGTERM, SIGINT, SIGKILL; and `then`, right after) once step `step` is done,
    as a scheduler or a user would from outside; with `job`, only in that sweep job; with
    `during_validation`, as the first view of step `step`'s validation starts rendering instead."""

    def __init__(
        self, step: int, signal: str = "SIGTERM", job: int | None = None, during_validation: bool = False, then: str | None = None
    ) -> None:
        self.step, self.signal, self.job, self.during_validation = step, signal, job, during_validation
        self.then = then  # a second signal right after the first (SLURM pre-empts with SIGTERM, then SIGUSR2)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if not self.during_validation:
            self._send(trainer)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int, *args) -> None:
        if self.during_validation and batch_idx == 0 and not trainer.sanity_checking:
            self._send(trainer)

    def _send(self, trainer: pl.Trainer) -> None:
        import os
        import signal

        if self.job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job:
                return
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))
            if self.then is not None:
                os.kill(os.getpid(), getattr(signal, self.then))
