"""From a composed Hydra config to the run's objects: one build of a run.

`build_run` turns a training config into its data module and LightningModule (train, bench and
the check before a run call it once); `instantiate_checked` builds a node and turns a
constructor's `ParameterError` into the config key the user wrote, following the config's
interpolations (`module.renderer.field.depth` → `model.depth`, `data.resolution`), so every
constructor's check runs, before a run folder is made and before any image is decoded, as one
line naming the key. The checks of values no constructor of ours takes: `nerf_lab.config.checks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from nerf_lab.config.checks import check_run_values
from nerf_lab.errors import ConfigError
from nerf_lab.nerf.parameters import ParameterError
from nerf_lab.training.module import NeRFLitModule



@dataclass
class Run:
    """A training run's objects, built once from its composed config by `build_run`."""

    datamodule: Any  # the LightningDataModule (`data`): nothing read yet but the scene's index
    module: NeRFLitModule  # the LightningModule, its renderer's weights drawn from `seed`
    config: dict[str, Any]  # the run's config as plain data: resolved, with absolute scene paths and the geometry used


def build_run(cfg: DictConfig, check_files: bool = False) -> Run:
    """The one build of a training run (train, bench and the check before a run): its values
    checked, `seed` set, the data module built (with `check_files`, its scene checked: JSON
    and PNG headers, nothing decoded), the scene's near, far, box and transform recorded into
    the run's config, and the LightningModule built from that config (which it keeps, so
    checkpoints carry it). `ConfigError` or `DataError` of one line naming the key or file."""
    import pytorch_lightning as pl

    check_run_values(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    if check_files:
        datamodule.check_scene(splits_read(cfg))
    config = run_config(cfg)
    record_scene_geometry(config["data"], datamodule.scene_geometry())
    # Built from `cfg` itself (its interpolations tell a bad value's key: model.depth, not
    # module.renderer.field.depth), with the scene's values as the data module uses them.
    wiring = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(wiring):
        wiring.pop("hydra", None)
        for key in ("near", "far", "scene_box", "scene_transform"):
            if key in config["data"]:
                wiring.data[key] = config["data"][key]
    module = build_module(wiring, config=config)
    return Run(datamodule, module, config)


def run_config(cfg: DictConfig, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's config as plain data, as checkpoints carry it: resolved, Hydra's node left
    out, the scene's paths absolute (evaluation and rendering find the scene from any working
    directory); with `data`, that `data` node (a built run's, with its scene geometry)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    if data is not None:
        config["data"] = data
    for key in ("scene_dir", "cache_dir"):
        if config["data"].get(key):
            config["data"][key] = str(Path(config["data"][key]).resolve())
    return config


def record_scene_geometry(data: dict[str, Any], geometry: dict[str, Any]) -> None:
    """Write the near, far, box and scene transform the data module uses (derived, with
    data.normalize) into the run's `data` config, before the model is built from it: the
    checkpoint's config then holds the values used, and eval, render and a resume use them."""
    data["near"], data["far"], data["scene_box"] = geometry["near"], geometry["far"], geometry["scene_box"]
    transform = geometry["scene_transform"]
    if transform is not None:
        data["scene_transform"] = transform.to_config()


def validate_config(cfg: DictConfig, check_files: bool = False) -> None:
    """Raise `ConfigError` for the first value that does not fit, naming the key; with
    `check_files`, also `DataError` for a missing or malformed scene (no image is decoded).
    Builds the data module and the LightningModule (cheap: no image is read), so that every
    constructor's check runs before the run folder exists."""
    check_run_values(cfg)
    datamodule = build_datamodule(cfg)
    build_module(cfg)
    if check_files:
        datamodule.check_scene(splits_read(cfg))


def splits_read(cfg: DictConfig) -> tuple[str, ...]:
    """The scene's splits a training run reads: the test split only when it tests (`test`)."""
    return ("train", "val", "test") if cfg.get("test", True) else ("train", "val")


def source_key(cfg: DictConfig, key: str) -> str:
    """The key a user sets for `key`, following interpolations: in the training config
    `module.renderer.sampler.n_coarse` is `${sampling.sampler}`'s `n_coarse`, which is
    `${..n_c}`, so `sampling.n_c`. A key that is not an interpolation is its own source."""
    parts = key.split(".")
    node: Any = cfg
    for index, part in enumerate(parts):
        child = node._get_node(part) if isinstance(node, DictConfig) else None
        if child is None:
            return key
        if child._is_interpolation():
            match = re.fullmatch(r"\$\{(\.*)([\w.]+)\}", str(child._value()))
            if match is None:  # a resolver, not a plain reference: the key itself is the source
                return ".".join(parts[: index + 1])
            dots, target = match.groups()
            base = parts[: index + 1 - len(dots)] if dots else []
            return source_key(cfg, ".".join([*base, target, *parts[index + 1 :]]))
        node = child
    return key


def instantiate_checked(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """`instantiate` the node at `key`, resolved first (Hydra would otherwise write resolved
    values into `cfg` itself); a constructor's `ParameterError` becomes the one-line
    `ConfigError` naming the user's key, and any other constructor error one line too."""
    node = OmegaConf.create(OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True))
    try:
        return instantiate(node, **kwargs)
    except ConfigError:
        raise
    except Exception as error:  # Hydra wraps the constructor's error; unwrap ours
        cause = error.__cause__ or error
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, ParameterError):
            where = re.search(r"full_key: (\S+)", str(error))
            path = ".".join(p for p in (key, where.group(1) if where else "", cause.parameter) if p)
            user_key = source_key(cfg, path)
            raise ConfigError(f"{user_key}={cause.value!r} is not allowed: expected {cause.expected}", key=user_key) from None
        reason = f"{type(cause).__name__}: {cause}"
        raise ConfigError(f"{key} ({OmegaConf.select(cfg, key + '._target_')}): {reason}".splitlines()[0]) from None


def build_datamodule(cfg: DictConfig) -> Any:
    """The run's LightningDataModule (`data`), given plain lists and dicts (its constructor
    checks them): nothing is read yet."""
    return instantiate_checked(cfg, "data", _convert_="all")


def build_module(cfg: DictConfig, config: dict[str, Any] | None = None) -> NeRFLitModule:
    """The run's LightningModule, `instantiate(cfg.module)`: the renderer with its field(s),
    encodings and sampler, the `_partial_` optimizer and schedule. `config`, the run's whole
    config as plain data, is kept in its hyper-parameters (and so in its checkpoints)."""
    make_module = instantiate_checked(cfg, "module", _partial_=True)
    return make_module(config=config)
