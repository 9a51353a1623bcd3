"""The LightningModule: a NeRF, its loss, optimiser, schedule and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MaxMetric
from torchmetrics.image import PeakSignalNoiseRatio

from nerf_lab.errors import TrainingDiverged
from nerf_lab.nerf.metrics import psnr_from_mse
from nerf_lab.nerf.marching import RenderOutputs, render_in_chunks
from nerf_lab.nerf.renderer import NeRFRenderer
from nerf_lab.nerf.rays import RayBundle
from nerf_lab.data.batches import RayBatch, ViewBatch
from nerf_lab.training.views import (
    LPIPS_NETWORK,
    MaskedSSIM,
    counted_pixels,
    filled_outside,
    perceptual_metric,
    test_protocol,
)
from nerf_lab.training.hardware import render_chunk

OptimizerFactory = Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]
log = logging.getLogger(__name__)


def _to_image_batch(rgb: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) → (1, 3, H, W) float32 for torchmetrics."""
    return rgb.float().permute(2, 0, 1)[None]


def full_precision(device: torch.device) -> torch.autocast:
    """A context that turns autocast off: metrics must be computed in float32. (SSIM's Gaussian
    window is a convolution, which bf16-mixed autocast runs in bfloat16: on Lego it read 0.864
    for images whose float32 SSIM is 0.904.)"""
    return torch.autocast(device_type=device.type, enabled=False)


# Where the renderer's weights sit in a checkpoint, and the names checkpoints of earlier
# versions of nerf_lab gave them: the renderer under `model.`, and the occupancy grid outside
# its sampler. They are read under today's names.
RENDERER_PREFIX = "renderer."
GRID_PREFIX = "renderer.sampler.grid."
OLD_PREFIXES = {"model.occupancy.": GRID_PREFIX, "model.": RENDERER_PREFIX}


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights under today's names (`OLD_PREFIXES`: `model.coarse_field.…` is
    `renderer.coarse_field.…`, `model.occupancy.density` is `renderer.sampler.grid.density`)."""
    def today(name: str) -> str:
        for old, new in OLD_PREFIXES.items():
            if name.startswith(old):
                return new + name.removeprefix(old)
        return name

    return {today(name): value for name, value in state.items()}


class NeRFLitModule(pl.LightningModule):
    """Trains the `NeRFRenderer` it is given (held as `self.renderer`), with the optimizer and
    schedule it is given.

    `optimizer` is called with the renderer's parameters (a `_partial_` optimizer from config),
    `scheduler` with that optimizer and the trainer's `max_steps` (`optim.scheduler`: the
    exponential decay from `optim.lr` to `optim.lr_final`). Both are built from the run's config
    by `nerf_lab.config.build.build_module`, which also hands over the whole run `config`:
    kept in the hyper-parameters, so that a checkpoint alone rebuilds the module
    (`nerf_lab.runs.checkpoints.load_trained`). The module reads no config itself: steps and
    the logging interval come from its trainer.

    Loss: MSE of the fine pass's colour, plus the coarse pass's when there is a fine pass (the
    paper). Metrics: `train/loss`, `train/psnr` every `trainer.log_every_n_steps`; `val/psnr`,
    `val/ssim` (mean over views of each view's value), `val/psnr_best`; the same for `test/`,
    and `test/psnr_blank_image`. Validation and test steps return the rendered
    view, for the callbacks that show it.
    """

    def __init__(
        self,
        renderer: NeRFRenderer,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory,
        chunk: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # logger=False: the run logs its hyper-parameters itself, once, with its final metrics.
        # Only plain values are kept (chunk, config); the objects are rebuilt from the config.
        self.save_hyperparameters(logger=False, ignore=["renderer", "optimizer", "scheduler"])
        self.renderer = renderer  # its weights: `renderer.coarse_field.…` in the state dict
        self.make_optimizer = optimizer
        self.make_scheduler = scheduler
        self.chunk = chunk  # rays a chunk when rendering whole views; None: sized for the device
        self.initial_lr: float | None = None  # known once the optimizer is made

        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.val_ssim = MaskedSSIM(data_range=1.0)
        self.val_psnr_best = MaxMetric()
        self.val_psnr_best.persistent(True)  # kept in checkpoints: a resumed run remembers its best
        self.test_psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        self.test_ssim = MaskedSSIM(data_range=1.0)
        self.test_psnr_blank_image = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
        # The test's per-view record and how it was measured (nerf_lab.training.views).
        self.test_views: list[dict[str, Any]] = []
        self.test_protocol: dict[str, Any] = {}
        # LPIPS, when its weights are on the machine: kept in a dict, not as a submodule, so that
        # its network never enters the state dict (checkpoints).
        self._perceptual: dict[str, Any] = {}
        # True on the device once any step's loss was NaN or infinite; read (a device sync)
        # only at the logging interval and when training ends.
        self.loss_was_not_finite: torch.Tensor | None = None

    @property
    def chunk(self) -> int:
        """Rays a chunk when rendering whole views: `sampling.chunk`, or when that is null the
        device's size (`nerf_lab.training.hardware.render_chunk`), chosen once, at first use."""
        if self._chunk is None:
            self._chunk = render_chunk(self.device, self.renderer.activation_bytes_per_ray())
        return self._chunk

    @chunk.setter
    def chunk(self, value: int | None) -> None:
        self._chunk = value
        self.last_field_evals_per_ray: torch.Tensor | None = None

    @property
    def config(self) -> DictConfig:
        return OmegaConf.create(self.hparams["config"])

    def forward(self, rays: RayBundle) -> RenderOutputs:
        return self.renderer(rays)

    def render_view(self, batch: ViewBatch) -> RenderOutputs:
        """A whole view, `sampling.chunk` rays at a time."""
        return render_in_chunks(self.renderer, batch.rays, self.chunk)

    # --- training ---

    def update_sampler(self) -> None:
        """The sampler's per-step bookkeeping (the occupancy grid's schedule, which the grid
        owns); say so in the log when a collapsed grid was re-opened."""
        if self.renderer.update(self.global_step):
            log.warning(
                "step %d: the occupancy grid held too few occupied cells (a field in the white "
                "minimum?): every cell re-opened", self.global_step,
            )

    def training_step(self, batch: RayBatch, batch_idx: int) -> torch.Tensor:
        self.update_sampler()
        outputs = self.renderer(batch.rays)
        mse = F.mse_loss(outputs.rgb, batch.rgb)
        loss = mse if outputs.rgb_coarse is None else mse + F.mse_loss(outputs.rgb_coarse, batch.rgb)
        # Logged tensors are only read (a device sync) when the logger or the bar writes them.
        # sync_dist: with data-parallel ranks the logged values are means over all of them.
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/psnr", psnr_from_mse(mse.detach()), prog_bar=True, sync_dist=True)
        not_finite = ~torch.isfinite(loss.detach())
        flag = self.loss_was_not_finite
        self.loss_was_not_finite = not_finite if flag is None else flag | not_finite
        self.log("train/field_evals_per_ray", outputs.field_evals_per_ray.float(), sync_dist=True)
        self.last_field_evals_per_ray = outputs.field_evals_per_ray.detach()
        for name, value in self.renderer.sampler.statistics().items():
            self.log(f"train/{name}", value, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: RayBatch, batch_idx: int) -> None:
        # A diverged run stops with a clear error: every step's loss counts, but the flag is
        # read at the logging interval only (each read waits for the device) and at the end.
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self._stop_if_the_loss_was_not_finite()

    def on_train_end(self) -> None:
        self._stop_if_the_loss_was_not_finite()

    def _stop_if_the_loss_was_not_finite(self) -> None:
        if self.loss_was_not_finite is not None and bool(self.loss_was_not_finite):
            raise TrainingDiverged(
                f"the loss was NaN or infinite by step {self.global_step}: "
                f"expected a finite loss (try a lower optim.lr{'' if self.initial_lr is None else f', now {self.initial_lr}'})"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.make_optimizer(self.renderer.parameters())
        self.initial_lr = optimizer.param_groups[0]["lr"]
        scheduler = self.make_scheduler(optimizer, self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints: the random state travels with them, so a resumed run is the same run ---

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"])
        states = checkpoint.get("rng_states")
        if states is not None:
            torch.set_rng_state(states["torch"])
            if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states["cuda"])

    # --- validation and test: whole views ---

    def _render_for_scoring(self, batch: ViewBatch) -> tuple[RenderOutputs, torch.Tensor, torch.Tensor]:
        """A whole view, and (prediction, target) as float32 image batches for torchmetrics."""
        outputs = self.render_view(batch)
        return outputs, _to_image_batch(outputs.rgb.clamp(0, 1)), _to_image_batch(batch.rgb)

    def validation_step(self, batch: ViewBatch, batch_idx: int) -> RenderOutputs:
        outputs, prediction, target = self._render_for_scoring(batch)
        mask = batch.mask  # a view's pixels that count, where not all do
        with full_precision(self.device):
            self.val_psnr.update(counted_pixels(prediction, mask), counted_pixels(target, mask))
            self.val_ssim.update(prediction, target, mask=mask)
        return outputs  # for callbacks: the view images (training.callbacks.LogViewImages)

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
        if "metric" not in self._perceptual:
            metric, reason = perceptual_metric(self.device)
            self._perceptual.update(metric=metric, reason=reason)
            if metric is None:
                log.info("%s", reason)
        self.test_protocol = {}

    def test_step(self, batch: ViewBatch, batch_idx: int) -> RenderOutputs:
        outputs, prediction, target = self._render_for_scoring(batch)
        lpips = self._perceptual.get("metric")
        mask = batch.mask  # a view's pixels that count, where not all do
        with full_precision(self.device):
            # A metric's forward accumulates the view and returns its own score: one computation each.
            counted = counted_pixels(target, mask)
            psnr = self.test_psnr(counted_pixels(prediction, mask), counted)
            ssim = self.test_ssim(prediction, target, mask=mask)
            # An image of nothing but the background: the score of a model stuck in the white minimum.
            self.test_psnr_blank_image.update(self.renderer.background.view(1, 3, 1, 1).expand_as(counted), counted)
            perceptual = lpips(filled_outside(prediction, target, mask), target) if lpips is not None else None
        view = batch.view
        record: dict[str, Any] = {"view": view, "name": self._test_view_name(view), "psnr": float(psnr), "ssim": float(ssim)}
        if perceptual is not None:
            record["lpips"] = float(perceptual)
        if mask is not None:
            record["masked"] = True
        self.test_views.append(record)
        height, width = target.shape[-2:]
        self.test_protocol = test_protocol(
            self.renderer.background.tolist(), width, height, len(self.test_views), self.test_ssim,
            LPIPS_NETWORK if lpips is not None else self._perceptual.get("reason"),
            masked_views=sum(bool(view.get("masked")) for view in self.test_views),
        )
        return outputs

    def _test_view_name(self, view: int) -> str | None:
        """The test split's image of `view` (`r_0`), where the trainer has a data module that says."""
        try:
            return Path(self.trainer.datamodule.splits["test"].file_paths[view]).stem
        except (AttributeError, KeyError, IndexError, RuntimeError):
            return None

    def on_test_epoch_end(self) -> None:
        values = {
            "test/psnr": self.test_psnr.compute(),
            "test/ssim": self.test_ssim.compute(),
            "test/psnr_blank_image": self.test_psnr_blank_image.compute(),
        }
        lpips = self._perceptual.get("metric")
        if lpips is not None:
            values["test/lpips"] = lpips.compute()
            lpips.reset()
        self._log_at_global_step(values)
        for metric in (self.test_psnr, self.test_ssim, self.test_psnr_blank_image):
            metric.reset()
