"""Images for TensorBoard: each rendered view as a labelled panel."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from nerf_lab.nerf.metrics import image_psnr
from nerf_lab.visuals.panels import view_panel


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
        prediction, target = outputs["rgb"].float().clamp(0, 1), batch["rgb"].float()
        psnr = image_psnr(prediction, target)
        near, far = trainer.lightning_module.renderer.near, trainer.lightning_module.renderer.far
        panel = view_panel(target, prediction, outputs["depth"], outputs["opacity"], near, far, f"prediction, {psnr:.2f} dB")
        writer.add_image(f"{split}/view_{int(batch['view'])}", panel, trainer.global_step, dataformats="HWC")
