"""Checkpoints, read without running code; and a trained model with its scene, rebuilt from one.

A nerf_lab checkpoint holds only tensors, numbers, strings and plain containers (the run's
config is stored as a plain dict), so every read here uses `torch.load(weights_only=True)`:
a pickle that names any other global (`os.system`, a class of ours) is refused, never called.
Resuming (`Trainer.fit(ckpt_path=..., weights_only=True)`), `nerf_lab.eval`, `nerf_lab.render`
and the report's figures all come through here, after `read_checkpoint` checked the file.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from nerf_lab.errors import ConfigError
from nerf_lab.training.config import build_datamodule, build_module, build_nerf
from nerf_lab.training.module import NeRFLitModule


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, loaded with `weights_only=True` on the CPU; `ConfigError`
    (one line naming `key` and the file) if it is missing, damaged, not a checkpoint, or holds
    anything but tensors and plain containers (whose loading could run code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist: expected a checkpoint such as <run>/checkpoints/last.ckpt", key=key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types for a file that is not a checkpoint)
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if unsafe:
            raise ConfigError(
                f"{key}={path} refused: it names {unsafe.group(1)}, and loading it could run code; "
                "a nerf_lab checkpoint holds only tensors and plain containers",
                key=key,
            ) from None
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(f"{key}={path} is damaged or not a checkpoint ({reason}): expected a .ckpt written by nerf_lab.train", key=key) from None
    config = checkpoint.get("hyper_parameters", {}).get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{key}={path} is not a nerf_lab checkpoint: expected a run's config and model weights in it", key=key)
    return checkpoint


def check_resumable(cfg: DictConfig) -> None:
    """For training with `ckpt_path`: the file is a safe nerf_lab checkpoint of a model of the
    shape this config builds (checked before the run folder is made)."""
    checkpoint = read_checkpoint(cfg.ckpt_path)
    expected = {f"model.{name}": tensor.shape for name, tensor in build_nerf(cfg).state_dict().items()}
    stored = {name: tensor.shape for name, tensor in checkpoint["state_dict"].items() if name.startswith("model.")}
    for name in sorted(expected.keys() | stored.keys()):
        if expected.get(name) != stored.get(name):
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path} holds a model of another shape ({name}: "
                f"{_shape(stored.get(name))} in the checkpoint, {_shape(expected.get(name))} for this config): "
                "expected the checkpoint of a run with the same model, encoding and sampling settings"
            )


def _shape(shape: torch.Size | None) -> str:
    return "absent" if shape is None else "×".join(map(str, shape)) or "scalar"


@dataclass
class Trained:
    module: NeRFLitModule
    run_config: DictConfig  # the training run's whole config, as stored in the checkpoint

    def datamodule(self, scene_dir: str | None = None, test_views: int | None = None, resolution: int | None = None):
        """The training run's data module, optionally reading the scene from elsewhere, or at
        another `resolution` (image width in pixels)."""
        with open_dict(self.run_config):
            if resolution is not None:
                self.run_config.data.resolution = resolution
            if scene_dir is not None:
                if self.run_config.data.get("scene_dir") is None:
                    raise ConfigError("scene_dir is set, but this model was trained on the built-in scene")
                self.run_config.data.scene_dir = scene_dir
            self.run_config.data.test_views = test_views
        return build_datamodule(self.run_config)


def load_trained(ckpt_path: str | Path, chunk: int | None = None) -> Trained:
    """The one way nerf_lab loads a trained model: read by `read_checkpoint` (`weights_only=True`),
    rebuilt from the run config it kept, then given the trained weights."""
    checkpoint = read_checkpoint(ckpt_path)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ConfigError(f"chunk={chunk!r} is not allowed: expected a positive integer (rays a chunk), or null")
    try:
        module = build_module(OmegaConf.create(checkpoint["hyper_parameters"]["config"]))
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError, OmegaConfBaseException) as error:
        raise ConfigError(f"ckpt_path={ckpt_path} could not be rebuilt as a nerf_lab model: {error}".splitlines()[0]) from None
    if chunk is not None:
        module.chunk = chunk
    module.eval()
    return Trained(module, module.config)


def load_initial_weights(module: NeRFLitModule, path: str, key: str) -> None:
    """Start from a checkpoint's fields (and grid, where both have one), so that the timed
    steps are those of a trained field: a grid is only sparse once the field has learned
    where the scene is. The grid refreshes from the first step, as it would in that run."""
    state = read_checkpoint(path, key)["state_dict"]
    grid = module.model.occupancy
    if grid is None or not any(".occupancy." in name for name in state):
        state = {name: value for name, value in state.items() if ".occupancy." not in name}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or any(".occupancy." not in name for name in missing):
        raise ConfigError(f"{key}={path}: its model does not match this config's (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if grid is not None:
        grid.open_until.zero_()
