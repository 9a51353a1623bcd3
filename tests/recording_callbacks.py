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
            torch.save(batch["directions"].cpu(), self.folder / f"rays_rank{trainer.global_rank}.pt")
            record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "threads": torch.get_num_threads()}
            (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
