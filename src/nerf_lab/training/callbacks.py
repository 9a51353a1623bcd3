"""Lightning callbacks and plugins that training needs beyond Lightning's own."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import LearningRateMonitor, TQDMProgressBar

from nerf_lab.data.files import remove_stale_partials


class ValidateOnLastStep(pl.Callback):
    """Validate after the last training step too, not only every `val_check_interval` steps,
    so every run (even one of a few steps) ends with a `val/psnr` and a best checkpoint.

    Lightning validates when `trainer.should_stop` is set; this sets it at `max_steps`.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


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
        return metrics


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file and rename it into place: a run killed while
    saving keeps its previous `last.ckpt` whole, so it can always be resumed. The temporary
    file such a kill leaves behind is removed at the folder's next save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path.parent)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
        except OSError as error:  # name the file (Lightning's write through fsspec names none)
            partial.unlink(missing_ok=True)
            if error.filename is None and error.errno is not None:
                raise OSError(error.errno, error.strerror, str(path)) from error
            raise
        os.replace(partial, path)
