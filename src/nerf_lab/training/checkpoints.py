"""A trained model and its scene, from a checkpoint: what evaluation and rendering start from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from nerf_lab.errors import ConfigError
from nerf_lab.training.config import build_datamodule, build_module
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
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        # The module is rebuilt from the run config it kept, then given the trained weights.
        module = build_module(OmegaConf.create(checkpoint["hyper_parameters"]["config"]))
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, EOFError, OmegaConfBaseException) as error:
        raise ConfigError(f"ckpt_path={path} is not a nerf_lab checkpoint: {error}".splitlines()[0]) from None
    if chunk is not None:
        if chunk < 1:
            raise ConfigError(f"chunk={chunk} is not allowed: expected a positive number of rays")
        module.chunk = chunk
    module.eval()
    return Trained(module, module.config)
