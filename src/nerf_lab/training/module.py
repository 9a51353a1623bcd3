"""The LightningModule: a NeRF, its loss, optimiser, schedule and metrics."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MaxMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from nerf_lab.errors import TrainingDiverged
from nerf_lab.nerf.model import RenderOutputs, render_in_chunks
from nerf_lab.nerf.rays import RayBundle
from nerf_lab.training.config import build_nerf
from nerf_lab.training.panels import validation_panel

Batch = dict[str, torch.Tensor]
log = logging.getLogger(__name__)


def mse_to_psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR of images in [0, 1]: −10 log10(MSE)."""
    return -10.0 * torch.log10(mse)


def _to_image_batch(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) → (1, 3, H, W) float32 for torchmetrics."""
    return rgb.float().permute(2, 0, 1)[None]


def full_precision(device: torch.device) -> torch.autocast:
    """A context that turns autocast off: metrics must be computed in float32. (SSIM's Gaussian
    window is a convolution, which bf16-mixed autocast runs in bfloat16: on Lego it read 0.864
    for images whose float32 SSIM is 0.904.)"""
    return torch.autocast(device_type=device.type, enabled=False)


class NeRFLitModule(pl.LightningModule):
    """Trains a `NeRFModel` built from the run's config, which it keeps in its hyper-parameters:
    a checkpoint alone rebuilds the model (`NeRFLitModule.load_from_checkpoint(path)`).

    Loss: MSE of the fine pass's colour, plus the coarse pass's when there is a fine pass (the
    paper). Optimiser: Adam, with the rate decaying exponentially from `optim.lr` to
    `optim.lr_final` over `trainer.max_steps`. Metrics: `train/loss`, `train/psnr` each step;
    `val/psnr`, `val/ssim` (mean over views of each view's value), `val/psnr_best`; the same
    for `test/`; one validation view as ground truth | prediction | depth.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        # logger=False: the run logs its hyper-parameters itself, once, with its final metrics.
        self.save_hyperparameters(logger=False)
        cfg = OmegaConf.create(config)
        self.model = build_nerf(cfg)
        self.optim_cfg = cfg.optim
        self.max_steps = cfg.trainer.max_steps
        self.chunk = cfg.sampling.chunk
        self.check_every = max(1, cfg.trainer.log_every_n_steps)
        self.near, self.far = cfg.data.near, cfg.data.far

        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.val_psnr_best = MaxMetric()
        self.val_psnr_best.persistent(True)  # kept in checkpoints: a resumed run remembers its best
        self.test_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.test_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.test_psnr_background = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.test_views: list[dict[str, float]] = []
        self.last_field_evals_per_ray: torch.Tensor | None = None

    @property
    def config(self) -> DictConfig:
        return OmegaConf.create(self.hparams["config"])

    def forward(self, rays: RayBundle) -> RenderOutputs:
        return self.model(rays)

    def render_view(self, batch: Batch) -> RenderOutputs:
        """A whole view, `sampling.chunk` rays at a time."""
        return render_in_chunks(self.model, RayBundle(batch["origins"], batch["directions"]), self.chunk)

    # --- training ---

    def refresh_occupancy(self) -> None:
        """Every `update_every` steps, refresh the occupancy grid (if any) from the coarse
        field; say so in the log when it had collapsed and was re-opened."""
        grid = self.model.occupancy
        if grid is None or self.global_step % grid.update_every != 0:
            return
        if grid.update(self.model.density, self.global_step):
            log.warning(
                "step %d: the occupancy grid held fewer than %g of its cells (a field in the white "
                "minimum?): every cell re-opened", self.global_step, grid.min_occupied,
            )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.refresh_occupancy()
        outputs = self.model(RayBundle(batch["origins"], batch["directions"]))
        mse = F.mse_loss(outputs["rgb"], batch["rgb"])
        loss = mse + F.mse_loss(outputs["rgb_coarse"], batch["rgb"]) if "rgb_coarse" in outputs else mse
        # Logged tensors are only read (a device sync) when the logger or the bar writes them.
        # sync_dist: with data-parallel ranks the logged values are means over all of them.
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/psnr", mse_to_psnr(mse.detach()), prog_bar=True, sync_dist=True)
        self.log("train/field_evals_per_ray", outputs["field_evals_per_ray"].float(), sync_dist=True)
        self.last_field_evals_per_ray = outputs["field_evals_per_ray"].detach()
        if self.model.occupancy is not None:
            self.log("train/occupied_fraction", self.model.occupancy.occupied_fraction(), sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        # A diverged run is stopped with a clear error, checked at the logging interval only
        # (each check waits for the device).
        if self.global_step % self.check_every == 0:
            loss = outputs["loss"]
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {loss.item()} at step {self.global_step}: "
                    f"expected a finite loss (try a lower optim.lr, now {self.optim_cfg.lr})"
                )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.Adam(
            self.model.parameters(), lr=self.optim_cfg.lr, betas=tuple(self.optim_cfg.betas), eps=self.optim_cfg.eps
        )
        gamma = (self.optim_cfg.lr_final / self.optim_cfg.lr) ** (1.0 / self.max_steps)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints: the random state travels with them, so a resumed run is the same run ---

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states is not None:
            torch.set_rng_state(states["torch"])
            if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states["cuda"])

    # --- validation and test: whole views ---

    def _render_for_scoring(self, batch: Batch) -> tuple[RenderOutputs, torch.Tensor, torch.Tensor]:
        """A whole view, and (prediction, target) as float32 image batches for torchmetrics."""
        outputs = self.render_view(batch)
        return outputs, _to_image_batch(outputs["rgb"].clamp(0, 1)), _to_image_batch(batch["rgb"])

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        outputs, prediction, target = self._render_for_scoring(batch)
        with full_precision(self.device):
            self.val_psnr.update(prediction, target)
            self.val_ssim.update(prediction, target)
        if batch_idx == 0 and self.logger is not None and hasattr(self.logger.experiment, "add_image"):
            panel = validation_panel(batch["rgb"], outputs["rgb"], outputs["depth"], outputs["opacity"], self.near, self.far)
            self.logger.experiment.add_image("val/view", panel, self.global_step, dataformats="HWC")

    def _log_at_global_step(self, values: dict[str, torch.Tensor]) -> None:
        """Log whole-view metrics at the number of updates done (Lightning's own step for them
        is one less, the index of the batch just trained), and hand them to callbacks (the
        best-checkpoint monitor) through `self.log`. torchmetrics has already reduced them
        over data-parallel ranks."""
        self.log_dict(values, logger=False, sync_dist=True)  # the same value on every rank already
        if self.logger is not None:
            self.logger.log_metrics({key: float(value) for key, value in values.items()}, step=self.global_step)

    def on_validation_epoch_end(self) -> None:
        psnr = self.val_psnr.compute()
        self.val_psnr_best.update(psnr)
        self._log_at_global_step(
            {"val/psnr": psnr, "val/ssim": self.val_ssim.compute(), "val/psnr_best": self.val_psnr_best.compute()}
        )
        self.val_psnr.reset()
        self.val_ssim.reset()

    def on_test_epoch_start(self) -> None:
        self.test_views = []

    def test_step(self, batch: Batch, batch_idx: int) -> RenderOutputs:
        outputs, prediction, target = self._render_for_scoring(batch)
        with full_precision(self.device):
            # A metric's forward accumulates the view and returns its own score: one computation each.
            psnr, ssim = self.test_psnr(prediction, target), self.test_ssim(prediction, target)
            # An image of nothing but the background: the score of a model stuck in the white minimum.
            self.test_psnr_background.update(self.model.background.view(1, 3, 1, 1).expand_as(target), target)
        self.test_views.append({"view": int(batch["view"]), "psnr": float(psnr), "ssim": float(ssim)})
        return outputs

    def on_test_epoch_end(self) -> None:
        self._log_at_global_step(
            {
                "test/psnr": self.test_psnr.compute(),
                "test/ssim": self.test_ssim.compute(),
                "test/psnr_background": self.test_psnr_background.compute(),
            }
        )
        for metric in (self.test_psnr, self.test_ssim, self.test_psnr_background):
            metric.reset()
