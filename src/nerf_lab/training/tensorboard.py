"""TensorBoard's HPARAMS tab: one entry a run, with the run's final metrics beside its settings."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

# Config groups whose values are a run's hyper-parameters.
HPARAM_GROUPS = ("model", "encoding", "sampling", "optim", "data", "trainer")
# Keys that locate things rather than describe the experiment.
NOT_HPARAMS = ("_target_", "_partial_", "cache_dir", "default_root_dir", "scene_dir")
HPARAM_METRICS = ("val/psnr_best", "val/psnr", "val/ssim", "test/psnr", "test/ssim", "steps_per_s")


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """`model.depth: 4`, … as TensorBoard accepts them (lists become strings)."""
    flat: dict[str, Any] = {"seed": cfg.seed}
    for group in HPARAM_GROUPS:
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            if key in NOT_HPARAMS:
                continue
            flat[f"{group}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    if "scene_dir" in cfg.data and cfg.data.scene_dir:
        flat["data.scene"] = str(cfg.data.scene_dir).rstrip("/").rsplit("/", 1)[-1]
    return flat


def log_hparams(logger: Any, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Write the run's hyper-parameters and final metrics as one HPARAMS entry.

    Written once, at the end, and with metric tags of their own (`hparams/test_psnr`, …): the
    tab shows a metric only if the hparams summary declares its tag and the same run folder
    holds scalars under it; declaring the curves' own tags (`val/psnr`) would pair every
    run's settings with its last point only by luck. Lightning's automatic hparams logging
    is off (`save_hyperparameters(logger=False)`), so there is no second, metric-less entry.
    """
    if not isinstance(logger, TensorBoardLogger):
        return
    values = {
        f"hparams/{key.replace('/', '_')}": float(metrics[key])
        for key in HPARAM_METRICS
        if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])
    }
    hparams = flat_hparams(cfg)
    # What the run used, not what was asked for (trainer.precision=auto).
    for key in ("precision", "device"):
        if key in metrics:
            hparams[f"trainer.{key}"] = str(metrics[key])
    logger.log_hyperparams(hparams, metrics=values)
    logger.finalize("success")
