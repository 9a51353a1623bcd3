"""From a composed Hydra config to objects, and the checks that make a bad value fail at once.

`validate_config` runs before a run folder is made and before any image is decoded; each
problem is reported as one line naming the key and what it accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nerf_lab.data.batches import RAY_SAMPLING
from nerf_lab.errors import ConfigError
from nerf_lab.nerf.field import DENSITY_ACTIVATIONS
from nerf_lab.nerf.model import NeRFModel
from nerf_lab.training.module import NeRFLitModule

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "transformer-engine")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# (key, check, what is expected). Checks see the resolved value.
CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("model.depth", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (layers in the trunk)"),
    ("model.width", lambda v: _is_int(v) and v >= 2, "an integer >= 2 (units a layer)"),
    ("model.skips", lambda v: isinstance(v, list) and all(_is_int(s) for s in v), "a list of layer indices, e.g. [4] or []"),
    ("model.view_dependent", lambda v: isinstance(v, bool), "true or false"),
    ("model.density_activation", lambda v: v in DENSITY_ACTIVATIONS, f"one of {', '.join(DENSITY_ACTIVATIONS)}"),
    ("encoding.position.n_freqs", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (frequency bands for positions)"),
    ("encoding.position.include_input", lambda v: isinstance(v, bool), "true or false"),
    ("encoding.direction.n_freqs", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (frequency bands for directions)"),
    ("encoding.direction.include_input", lambda v: isinstance(v, bool), "true or false"),
    ("sampling.n_c", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (coarse samples a ray)"),
    ("sampling.n_f", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (fine samples a ray; 0 = single pass)"),
    ("sampling.perturb", lambda v: isinstance(v, bool), "true or false"),
    ("sampling.chunk", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (rays a chunk when rendering views), or null for the device's size"),
    ("data.resolution", lambda v: _is_int(v) and v >= 1, "a positive integer (image width in pixels)"),
    ("data.batch_rays", lambda v: _is_int(v) and v >= 1, "a positive integer (rays a training batch)"),
    ("data.ray_sampling", lambda v: v in RAY_SAMPLING, f"one of {', '.join(RAY_SAMPLING)}"),
    ("data.near", lambda v: _is_number(v) and v >= 0, "a depth >= 0"),
    ("data.far", lambda v: _is_number(v) and v > 0, "a depth > data.near"),
    ("data.white_background", lambda v: isinstance(v, bool), "true or false"),
    ("data.precrop_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("data.precrop_frac", lambda v: _is_number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    ("data.val_views", lambda v: _is_int(v) and v >= 1, "a positive integer"),
    ("data.test_views", lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer, or null for the whole test split"),
    ("optim.lr", lambda v: _is_number(v) and v > 0, "a learning rate > 0"),
    ("optim.lr_final", lambda v: _is_number(v) and v > 0, "a learning rate > 0"),
    ("trainer.max_steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("trainer.val_check_interval", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (steps between validations)"),
    ("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    ("seed", lambda v: _is_int(v), "an integer"),
    ("compile", lambda v: isinstance(v, bool), "true or false"),
]


def validate_config(cfg: DictConfig, check_files: bool = False) -> None:
    """Raise `ConfigError` for the first value that does not fit, naming the key; with
    `check_files`, also `DataError` for a missing or malformed scene (no image is decoded)."""
    for key, check, expected in CHECKS:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as error:
            raise ConfigError(f"{key} could not be read: {error}".splitlines()[0]) from None
        if isinstance(value, (DictConfig, list)) or OmegaConf.is_list(value):
            value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if not check(value):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {expected}")

    depth, skips = cfg.model.depth, list(cfg.model.skips)
    if any(not 0 <= s <= depth - 2 for s in skips):
        raise ConfigError(f"model.skips={skips} is not allowed: expected layer indices in [0, {depth - 2}] for model.depth={depth}")
    for name in ("position", "direction"):
        encoding = cfg.encoding[name]
        if encoding.n_freqs == 0 and not encoding.include_input:
            raise ConfigError(
                f"encoding.{name}.n_freqs=0 with encoding.{name}.include_input=false encodes nothing: "
                "expected n_freqs >= 1 or include_input=true"
            )
    if cfg.data.far <= cfg.data.near:
        raise ConfigError(f"data.far={cfg.data.far} is not allowed: expected more than data.near={cfg.data.near}")
    if cfg.optim.lr_final > cfg.optim.lr:
        raise ConfigError(f"optim.lr_final={cfg.optim.lr_final} is not allowed: expected at most optim.lr={cfg.optim.lr} (the rate decays)")
    # Building the data module loads nothing; it checks what the table above cannot.
    datamodule = build_datamodule(cfg)
    if check_files:
        datamodule.check_scene()


def build_datamodule(cfg: DictConfig) -> Any:
    try:
        return instantiate(cfg.data)
    except ConfigError:
        raise
    except Exception as error:  # Hydra wraps the constructor's error; unwrap ours
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
        raise ConfigError(f"data ({cfg.data.get('_target_')}): {reason}".splitlines()[0]) from None


def background_colour(cfg: DictConfig) -> tuple[float, float, float]:
    return (1.0, 1.0, 1.0) if cfg.data.white_background else (0.0, 0.0, 0.0)


def build_nerf(cfg: DictConfig) -> NeRFModel:
    """The NeRF the config describes: its encodings (`encoding.position`, `encoding.direction`)
    and field (`model`, a `_partial_` NeRFField) instantiated, a coarse field and, when
    `sampling.n_f > 0`, a fine one, and the renderer's samples and depth range."""
    position, direction = instantiate(cfg.encoding.position), instantiate(cfg.encoding.direction)
    make_field = instantiate(cfg.model)  # a partial of NeRFField: the encodings are injected
    n_fine = cfg.sampling.n_f
    return NeRFModel(
        coarse_field=make_field(position_encoding=position, direction_encoding=direction),
        fine_field=make_field(position_encoding=position, direction_encoding=direction) if n_fine > 0 else None,
        n_coarse=cfg.sampling.n_c,
        n_fine=n_fine,
        near=cfg.data.near,
        far=cfg.data.far,
        background=background_colour(cfg),
        perturb=cfg.sampling.perturb,
    )


def build_module(cfg: DictConfig) -> NeRFLitModule:
    """The LightningModule of a run: the model, the `_partial_` optimizer (`optim.optimizer`)
    and the schedule (`optim.scheduler`) from config, and the whole config, resolved, to keep
    in its checkpoints (from which `load_trained` rebuilds it)."""
    return NeRFLitModule(
        model=build_nerf(cfg),
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler),
        chunk=cfg.sampling.chunk,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
