"""A trained model and its scene, from a checkpoint: what evaluation and rendering start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from nerf_lab.errors import ConfigError
from nerf_lab.training.config import build_datamodule
from nerf_lab.training.module import NeRFLitModule


@dataclass
class Trained:
    module: NeRFLitModule
    run_config: DictConfig  # the training run's whole config, as stored in the checkpoint

    def datamodule(self, scene_dir: str | None = None, test_views: int | None = None):
        """The training run's data module, optionally reading the scene from elsewhere."""
        with open_dict(self.run_config):
            if scene_dir is not None:
                if self.run_config.data.get("scene_dir") is None:
                    raise ConfigError("scene_dir is set, but this model was trained on the built-in scene")
                self.run_config.data.scene_dir = scene_dir
            self.run_config.data.test_views = test_views
        return build_datamodule(self.run_config)


def load_trained(ckpt_path: str | Path, chunk: int | None = None) -> Trained:
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: expected a checkpoint such as <run>/checkpoints/last.ckpt")
    try:
        module = NeRFLitModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (RuntimeError, KeyError, TypeError, EOFError) as error:
        raise ConfigError(f"ckpt_path={path} is not a nerf_lab checkpoint: {error}".splitlines()[0]) from None
    if chunk is not None:
        if chunk < 1:
            raise ConfigError(f"chunk={chunk} is not allowed: expected a positive number of rays")
        module.chunk = chunk
    module.eval()
    return Trained(module, module.config)


def load_initial_weights(module: NeRFLitModule, path: str, key: str) -> None:
    """Start from a checkpoint's fields (and grid, where both have one), so that the timed
    steps are those of a trained field: a grid is only sparse once the field has learned
    where the scene is. The grid refreshes from the first step, as it would in that run."""
    if not Path(path).is_file():
        raise ConfigError(f"{key}={path} does not exist: expected a checkpoint such as <run>/checkpoints/last.ckpt")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    grid = module.model.occupancy
    if grid is None or not any(".occupancy." in name for name in state):
        state = {name: value for name, value in state.items() if ".occupancy." not in name}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or any(".occupancy." not in name for name in missing):
        raise ConfigError(f"{key}={path}: its model does not match this config's (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if grid is not None:
        grid.open_until.zero_()
