"""From a composed Hydra config to objects, and the checks that make a bad value fail at once.

`validate_config` runs before a run folder is made and before any image is decoded; each
problem is reported as one line naming the key and what it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

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
    """A finite int or float (not a bool): inf and NaN reach no key as a meaningful value."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive_int_or_none(value: Any) -> bool:
    return value is None or (_is_int(value) and value >= 1)


# Most frequency bands an encoding may have. Band k computes sin(2^k·p) in float32: p carries a
# 24-bit mantissa, so for |p| ≈ 1 the phase 2^k·p is known to about 2^(k-23) rad, and from
# k = 24 the band is rounding noise (its error against float64 averages 0.4 there and 0.8,
# that of unrelated values, from k = 26; see tests/test_bad_input.py); from k = 127, 2^k·p
# overflows to inf and sin gives NaN.
MAX_FREQUENCY_BANDS = 24


def _bands_check(what: str) -> tuple[Callable[[Any], bool], str]:
    expected = (
        f"an integer in [0, {MAX_FREQUENCY_BANDS}] (frequency bands for {what}; in float32, "
        f"sin(2^k·p) for k >= {MAX_FREQUENCY_BANDS} is rounding noise and from k = 127 NaN)"
    )
    return (lambda v: _is_int(v) and 0 <= v <= MAX_FREQUENCY_BANDS), expected


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 2
        and all(isinstance(c, list) and len(c) == 3 and all(_is_number(x) for x in c) for c in value)
        and all(lo < hi for lo, hi in zip(*value))
    )


# (key, check, what is expected). Checks see the resolved value.
CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("model.depth", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (layers in the trunk)"),
    ("model.width", lambda v: _is_int(v) and v >= 2, "an integer >= 2 (units a layer)"),
    ("model.skips", lambda v: isinstance(v, list) and all(_is_int(s) for s in v), "a list of layer indices, e.g. [4] or []"),
    ("model.view_dependent", lambda v: isinstance(v, bool), "true or false"),
    ("model.density_activation", lambda v: v in DENSITY_ACTIVATIONS, f"one of {', '.join(DENSITY_ACTIVATIONS)}"),
    ("encoding.position.n_freqs", *_bands_check("positions")),
    ("encoding.position.include_input", lambda v: isinstance(v, bool), "true or false"),
    ("encoding.direction.n_freqs", *_bands_check("directions")),
    ("encoding.direction.include_input", lambda v: isinstance(v, bool), "true or false"),
    ("sampling.n_c", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (coarse samples a ray)"),
    ("sampling.n_f", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (fine samples a ray; 0 = single pass)"),
    ("sampling.perturb", lambda v: isinstance(v, bool), "true or false"),
    ("sampling.chunk", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (rays a chunk when rendering views), or null for the device's size"),
    # Empty-space skipping (sampling=occupancy); absent keys (None) mean off.
    ("sampling.clip_to_box", lambda v: v is None or isinstance(v, bool), "true or false"),
    ("sampling.grid.resolution", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (cells along each axis)"),
    ("sampling.grid.update_every", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (steps between grid refreshes)"),
    ("sampling.grid.threshold", lambda v: v is None or (_is_number(v) and 0 < v < 1), "an opacity in (0, 1) of one sample step"),
    ("sampling.grid.ema_decay", lambda v: v is None or (_is_number(v) and 0 <= v <= 1), "a decay in [0, 1]"),
    ("sampling.grid.warmup_steps", lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0 (steps with every cell open)"),
    ("sampling.grid.min_occupied", lambda v: v is None or (_is_number(v) and 0 <= v < 1), "a fraction in [0, 1) of cells"),
    ("data.scene_box", lambda v: v is None or _is_box(v), "[[x, y, z]_min, [x, y, z]_max] with min < max, or null"),
    # SSIM's Gaussian window (torchmetrics: 11 pixels, σ 1.5, as Wang et al. 2004) must fit in a view.
    ("data.resolution", lambda v: _is_int(v) and v >= 11, "a positive integer of at least 11 (image width in pixels: SSIM's 11-pixel window must fit)"),
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
    (
        "optim.optimizer.betas",
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1), e.g. [0.9, 0.999]",
    ),
    ("optim.optimizer.eps", lambda v: _is_number(v) and v > 0, "a small number > 0, e.g. 1e-7"),
    ("trainer.max_steps", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("trainer.val_check_interval", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (steps between validations)"),
    ("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    ("seed", lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2^32)"),
    ("compile", lambda v: isinstance(v, bool), "true or false"),
]


# The commands that start from a checkpoint: their own keys (the model's come from the checkpoint).
EVAL_CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("ckpt_path", lambda v: isinstance(v, str) and v != "", "a checkpoint, e.g. ckpt_path=<run>/checkpoints/best.ckpt"),
    ("views", _is_positive_int_or_none, "a positive integer (the first views of the test split), or null for all"),
    ("chunk", _is_positive_int_or_none, "a positive integer (rays a chunk), or null for the training run's"),
]
RENDER_CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("ckpt_path", lambda v: isinstance(v, str) and v != "", "a checkpoint, e.g. ckpt_path=<run>/checkpoints/best.ckpt"),
    ("frames", lambda v: _is_int(v) and v >= 1, "a positive integer (frames in the orbit)"),
    ("fps", lambda v: _is_int(v) and v >= 1, "a positive integer (frames a second)"),
    ("resolution", _is_positive_int_or_none, "a positive integer (image width in pixels), or null for the training resolution"),
    ("elevation_deg", lambda v: v is None or (_is_number(v) and -90 < v < 90), "degrees in (-90, 90), or null for the test cameras' mean"),
    ("chunk", _is_positive_int_or_none, "a positive integer (rays a chunk), or null for the training run's"),
    ("depth", lambda v: isinstance(v, bool), "true or false"),
]
COMMAND_CHECKS = {"train": CHECKS, "eval": EVAL_CHECKS, "render": RENDER_CHECKS}


def check_values(cfg: DictConfig, checks: list[tuple[str, Callable[[Any], bool], str]]) -> None:
    """Raise `ConfigError` naming the key for the first value that does not fit `checks`, or
    for any number anywhere in `cfg` that is infinite or NaN."""
    for key, check, expected in checks:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise ConfigError(f"{key} is not set: expected {expected}", key=key) from None
        except OmegaConfBaseException as error:
            raise ConfigError(f"{key} could not be read: {error}".splitlines()[0], key=key) from None
        if isinstance(value, (DictConfig, list)) or OmegaConf.is_list(value):
            value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not allowed: expected a finite number, {expected}", key=key)
        if not check(value):
            raise ConfigError(f"{key}={value!r} is not allowed: expected {expected}", key=key)
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not allowed: expected a finite number", key=key)


def _numbers(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float in the config, Hydra's own settings excepted (and
    values that cannot be resolved yet, such as the run folder before it is chosen)."""
    found: list[tuple[str, float]] = []
    names = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    for name in names:
        key = f"{prefix}{name}" if isinstance(node, DictConfig) else f"{prefix.removesuffix('.')}[{name}]"
        if key == "hydra":
            continue
        try:
            value = node[name]
        except OmegaConfBaseException:
            continue
        if OmegaConf.is_config(value):
            found += _numbers(value, key + ".")
        elif isinstance(value, float):
            found.append((key, value))
    return found


def validate_config(cfg: DictConfig, check_files: bool = False) -> None:
    """Raise `ConfigError` for the first value that does not fit, naming the key; with
    `check_files`, also `DataError` for a missing or malformed scene (no image is decoded)."""
    check_values(cfg, CHECKS)

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
    if (cfg.sampling.get("clip_to_box") or cfg.sampling.get("grid")) and cfg.data.get("scene_box") is None:
        raise ConfigError("data.scene_box is null: expected the scene's box, which sampling.clip_to_box and sampling.grid need")
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
    # Empty-space skipping (sampling=occupancy): optional keys, absent in the other samplers.
    grid_cfg, box_cfg = cfg.sampling.get("grid"), cfg.data.get("scene_box")
    scene_box = None if box_cfg is None else [[float(x) for x in corner] for corner in box_cfg]
    grid = None
    if grid_cfg is not None:  # a partial OccupancyGrid: the box and step come from data/sampling
        step_size = (cfg.data.far - cfg.data.near) / cfg.sampling.n_c  # one coarse sample step
        grid = instantiate(grid_cfg)(scene_box, step_size=float(step_size))
    return NeRFModel(
        coarse_field=make_field(position_encoding=position, direction_encoding=direction),
        fine_field=make_field(position_encoding=position, direction_encoding=direction) if n_fine > 0 else None,
        n_coarse=cfg.sampling.n_c,
        n_fine=n_fine,
        near=cfg.data.near,
        far=cfg.data.far,
        background=background_colour(cfg),
        perturb=cfg.sampling.perturb,
        occupancy=grid,
        clip_to_box=bool(cfg.sampling.get("clip_to_box", False)),
        scene_box=scene_box,
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
