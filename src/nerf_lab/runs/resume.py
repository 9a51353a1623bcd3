"""Resuming a run (`ckpt_path=…`) with a config that says what the resumed run does.

The stored config (the checkpoint's) and the new one are compared key by key before the run
folder is made. Keys that fix what the weights mean (the model, encodings, sampling, the scene's
images and cameras, the seed, the optimizer's moments) cannot change mid-run: a change is
refused with the list of changed keys. The keys of `CHANGEABLE` can: steps and time limit, the
learning-rate schedule (`optim.lr`, `optim.lr_final`), validation and logging intervals, paths
(`data.scene_dir`, the cache), evaluation-only keys, device and precision. They are applied,
the new run's `.hydra/config.yaml` records them, and `ScheduleFromConfig` re-derives the
optimizer's rate from the new config at the resumed step, so a resumed run steps the same
rates as an uninterrupted run of the new config would.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nerf_lab.errors import ConfigError
from nerf_lab.config.compose import flatten
from nerf_lab.config.stored import CHOICES_KEY, INFERRED_GROUPS, infer_choices

log = logging.getLogger("nerf_lab")

# Keys (or key prefixes, ending in ".") that may differ between a checkpoint's run and its resumption.
CHANGEABLE = (
    "trainer.max_steps", "trainer.max_time", "trainer.val_check_interval", "trainer.log_every_n_steps",
    "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.accelerator", "trainer.devices",
    "trainer.strategy", "trainer.num_nodes", "trainer.precision", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.profiler", "trainer.default_root_dir",
    "optim.lr", "optim.lr_final", "optim.optimizer.lr", "optim.scheduler.lr_final",
    "data.scene_dir", "data.cache_dir", "data.val_views", "data.test_views", "sampling.chunk",
    "paths.", "callbacks.", "logger.", "ckpt_path", "test", "compile", "task_name", "resume_other_scene",
)

# Changed keys the log leaves out: the run folder's own paths, and copies of another key.
FOLLOWERS = (
    "paths.", "ckpt_path", "task_name", "resume_other_scene", "trainer.default_root_dir", "logger.save_dir", "callbacks.best_checkpoint.dirpath",
    "callbacks.last_checkpoint.dirpath", "optim.optimizer.lr", "optim.scheduler.lr_final",
)


def changeable(key: str) -> bool:
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in CHANGEABLE)


def _resolved(cfg: DictConfig) -> tuple[dict[str, Any], tuple[str, ...]]:
    """`cfg` as plain values, Hydra's own node left out (a key that cannot be resolved yet, the
    run folder before it exists, is kept as its text); and the prefixes of its derived wiring:
    the LightningModule's node and references to whole nodes (`model.position_encoding:
    ${encoding.position}`), whose sources are compared in their own places."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    out: dict[str, Any] = {}
    derived: list[str] = ["module."]
    for key, raw in flatten(plain):
        try:
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException:
            value = raw
        if isinstance(value, DictConfig):
            derived.append(key + ".")
        else:
            out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out, tuple(derived)


def check_resume_changes(cfg: DictConfig, checkpoint: dict[str, Any]) -> list[str]:
    """Refuse (`ConfigError`, one line) a resumption that changes a key outside `CHANGEABLE`
    (the list of changed keys, both values), or whose `trainer.max_steps` leaves nothing to
    train; return the changed keys that are applied, as `key: old → new`."""
    step = int(checkpoint.get("global_step", 0))
    if cfg.trainer.max_steps <= step:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is at step {step} and trainer.max_steps={cfg.trainer.max_steps}: nothing left to train; "
            f"expected trainer.max_steps > {step} (or nerf_lab.eval ckpt_path=… to score the checkpoint)",
            key="trainer.max_steps",
        )
    new, derived = _resolved(cfg)
    new = _with_derived_geometry(cfg, new)
    stored = {key: value for key, value in flatten(checkpoint["hyper_parameters"]["config"]) if not key.startswith(derived)}
    new = {key: value for key, value in new.items() if not key.startswith(derived)}
    changed = [key for key in sorted(stored.keys() | new.keys()) if stored.get(key, "absent") != new.get(key, "absent")]
    refused = [key for key in changed if not changeable(key)]
    if refused:
        listed = "; ".join(f"{key}: {stored.get(key, 'absent')!r} → {new.get(key, 'absent')!r}" for key in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} cannot be resumed with {len(refused)} changed key(s) that fix the run's model, "
            f"sampling or data ({listed}{more}): resume with the run's own values{_run_options(cfg, checkpoint, refused)}, "
            "or start a new run"
        )
    return [f"{key}: {stored.get(key, 'absent')} → {new.get(key, 'absent')}" for key in changed if not key.startswith(FOLLOWERS)]


def _run_options(cfg: DictConfig, checkpoint: dict[str, Any], refused: list[str]) -> str:
    """The options the checkpoint's run trained with, of the groups whose keys `refused`
    names and whose option the command did not pick, as overrides to resume with
    (` (sampling=coarse)`), or "" where there are none."""
    hyper = checkpoint["hyper_parameters"]
    groups = [group for group in INFERRED_GROUPS if any(key.startswith(group.replace("/", ".") + ".") for key in refused)]
    try:
        options = infer_choices(hyper["config"], f"ckpt_path={cfg.ckpt_path}", hyper.get(CHOICES_KEY) or {})
    except ConfigError:
        return ""
    named = [f"{group}={options[group]}" for group in groups if group in options and options[group] != _chosen(cfg).get(group)]
    return f" ({' '.join(named)})" if named else ""


def _chosen(cfg: DictConfig) -> dict[str, str]:
    """The group options the command composed (Hydra's runtime choices), where known."""
    from hydra.core.hydra_config import HydraConfig

    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None and HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    return {} if choices is None else {str(group): str(option) for group, option in choices.items()}


def _with_derived_geometry(cfg: DictConfig, new: dict[str, Any]) -> dict[str, Any]:
    """`new` (flat keys) with the near, far, box and scene transform that `cfg`'s data module
    derives (`data.normalize=true`, no recorded transform), as the training run recorded its
    own (`nerf_lab.train.record_scene_geometry`): a resumed normalised run is compared with
    what it would use, not with the configured values it replaces."""
    data = cfg.get("data")
    if data is None or not data.get("normalize") or data.get("scene_transform") is not None:
        return new
    from nerf_lab.config.build import build_datamodule

    geometry = build_datamodule(cfg).scene_geometry()
    recorded = {"near": geometry["near"], "far": geometry["far"], "scene_box": geometry["scene_box"]}
    if geometry["scene_transform"] is not None:
        recorded["scene_transform"] = geometry["scene_transform"].to_config()
    out = {key: value for key, value in new.items() if key != "data.scene_transform"}
    out.update(flatten(recorded, "data"))
    return out


class ScheduleFromConfig(pl.Callback):
    """On a resumed run, after Lightning restored the optimizer and schedule: re-derive them
    from this run's config. A fresh optimizer and schedule (`configure_optimizers`, the config's
    `optim.lr`, `lr_final` and `trainer.max_steps`) are stepped to the resumed step exactly as an
    uninterrupted run steps them, and their hyper-parameters and schedule state replace the
    restored ones; the optimizer's moments (Adam's averages) stay the checkpoint's."""

    def __init__(self, changes: list[str] | None = None) -> None:
        self.changes = changes or []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.changes:
            log.info("resumed at step %d with: %s", trainer.global_step, "; ".join(self.changes))
        fresh = pl_module.configure_optimizers()
        optimizer, scheduler = fresh["optimizer"], fresh["lr_scheduler"]["scheduler"]
        with warnings.catch_warnings():  # stepping a schedule without optimizer steps, on purpose
            warnings.simplefilter("ignore")
            for _ in range(trainer.global_step):
                scheduler.step()
        restored = trainer.optimizers[0]
        if len(restored.param_groups) != len(optimizer.param_groups):
            raise ConfigError("ckpt_path: its optimizer has another number of parameter groups than this config's")
        for old, new in zip(restored.param_groups, optimizer.param_groups):
            old.update({key: value for key, value in new.items() if key != "params"})
        config = trainer.lr_scheduler_configs[0]
        if type(config.scheduler) is not type(scheduler):
            raise ConfigError(f"ckpt_path: its schedule is a {type(config.scheduler).__name__}, this config's a {type(scheduler).__name__}")
        config.scheduler.load_state_dict(scheduler.state_dict())
