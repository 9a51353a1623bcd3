"""The checks that make a bad value fail at once, each a line naming the key and what it accepts.

Each constraint lives in one place. Our constructors, the data modules' included, check their
own parameters (`nerf_lab.nerf.parameters.require`), and `nerf_lab.config.build` reports their
errors under the user's key. The `CHECKS` table below holds only what no constructor of ours
checks: third-party arguments (Trainer, Adam), plain keys (seed, compile), the render chunk,
and the rules that span keys; `EVAL_CHECKS`, `RENDER_CHECKS` and `BENCH_CHECKS` hold those
commands' own keys. A stored config read back from a checkpoint is typed by the same tables
(`typed_checks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from nerf_lab.errors import ConfigError
from nerf_lab.nerf.parameters import is_int as _is_int
from nerf_lab.nerf.parameters import is_number as _is_number

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "transformer-engine")


def _is_positive_int_or_none(value: Any) -> bool:
    return value is None or (_is_int(value) and value >= 1)


# Lightning's max_time as nerf_lab's config gives it: null, or "DD:HH:MM:SS" above zero.
def _is_time_limit(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return all(_is_number(v) and v >= 0 for v in value.values()) and sum(value.values()) > 0
    parts = str(value).split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return False
    days, hours, minutes, seconds = map(int, parts)
    return days * 86400 + hours * 3600 + minutes * 60 + seconds > 0


def _is_limit(value: Any) -> bool:
    """Lightning's limit_*_batches: a fraction (float) in [0, 1] or a count (int) >= 0, or null."""
    if value is None:
        return True
    if _is_int(value):
        return value >= 0
    return _is_number(value) and 0 <= value <= 1


# (key, check, what is expected): what no constructor of ours checks. Checks see the resolved value.
CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("sampling.chunk", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (rays a chunk when rendering views), or null for the device's size"),
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
    # A run must train: none of these may leave it zero steps (or, for devices, none to run on).
    ("trainer.accumulate_grad_batches", lambda v: _is_int(v) and v >= 1, "an integer >= 1 (batches an optimiser step)"),
    ("trainer.max_time", _is_time_limit, "a wall-clock limit above zero, DD:HH:MM:SS (e.g. 00:00:09:00), or null"),
    (
        "trainer.devices",
        lambda v: v == "auto" or (_is_int(v) and (v >= 1 or v == -1)) or (isinstance(v, list) and len(v) >= 1 and all(_is_int(d) and d >= 0 for d in v)),
        "an integer >= 1 (devices), -1 or auto (all), or a non-empty list of device indices",
    ),
    # The Trainer's keys whose default is null: typed here, so that a run's recorded value (a
    # mapping or list where the default is null) is read back checked.
    ("trainer.check_val_every_n_epoch", _is_positive_int_or_none, "an integer >= 1 (epochs between validations), or null"),
    ("trainer.gradient_clip_val", lambda v: v is None or (_is_number(v) and v >= 0), "a number >= 0, or null for no clipping"),
    ("trainer.gradient_clip_algorithm", lambda v: v in (None, "norm", "value"), "norm or value, or null"),
    ("trainer.limit_val_batches", _is_limit, "a fraction in [0, 1] or a count of views >= 0, or null for all"),
    ("trainer.limit_test_batches", _is_limit, "a fraction in [0, 1] or a count of views >= 0, or null for all"),
    ("trainer.profiler", lambda v: v in (None, "simple", "advanced", "pytorch"), "simple, advanced or pytorch, or null"),
    ("data.scene_dir", lambda v: v is None or (isinstance(v, str) and v != ""), "a scene folder, or null for the built-in scene"),
    ("ckpt_path", lambda v: v is None or (isinstance(v, str) and v != ""), "a checkpoint to resume, or null"),
    ("seed", lambda v: _is_int(v) and 0 <= v < 2**32, "an integer in [0, 2^32)"),
    ("compile", lambda v: isinstance(v, bool), "true or false"),
    ("resume_other_scene", lambda v: isinstance(v, bool), "true or false"),
]


# The commands that start from a checkpoint: their own keys (the model's come from the checkpoint).
EVAL_CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("ckpt_path", lambda v: isinstance(v, str) and v != "", "a checkpoint, e.g. ckpt_path=<run>/checkpoints/best.ckpt"),
    ("views", _is_positive_int_or_none, "a positive integer (the first views of the test split), or null for all"),
    ("resolution", _is_positive_int_or_none, "a positive integer (image width in pixels, up to the source images'), or null for the training run's"),
    ("chunk", _is_positive_int_or_none, "a positive integer (rays a chunk), or null for the training run's"),
]
RENDER_CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("ckpt_path", lambda v: isinstance(v, str) and v != "", "a checkpoint, e.g. ckpt_path=<run>/checkpoints/best.ckpt"),
    ("poses", lambda v: v is None or (isinstance(v, str) and v != ""), "a transforms JSON whose cameras to render, or null for the orbit"),
    ("frames", lambda v: _is_int(v) and v >= 1, "a positive integer (frames in the orbit)"),
    ("fps", lambda v: _is_int(v) and v >= 1, "a positive integer (frames a second)"),
    ("resolution", _is_positive_int_or_none, "a positive integer (image width in pixels), or null for the training resolution"),
    ("elevation_deg", lambda v: v is None or (_is_number(v) and -90 < v < 90), "degrees in (-90, 90), or null for the test cameras' mean"),
    ("centre", lambda v: v is None or (isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v)), "[x, y, z], or null for the scene's centre"),
    ("radius", lambda v: v is None or (_is_number(v) and v > 0), "a distance > 0, or null for the cameras' mean distance"),
    ("chunk", _is_positive_int_or_none, "a positive integer (rays a chunk), or null for the training run's"),
    ("depth", lambda v: isinstance(v, bool), "true or false"),
]
# nerf_lab.bench's own keys (the training config's are `CHECKS`).
BENCH_CHECKS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("bench.warmup_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (untimed steps first)"),
    ("bench.steps", lambda v: _is_int(v) and v >= 1, "a positive integer (timed steps)"),
    ("bench.render_views", lambda v: _is_int(v) and v >= 1, "a positive integer (test views rendered to time rendering)"),
    ("bench.profile_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (profiled steps; 0: none)"),
    ("bench.init_from", lambda v: v is None or (isinstance(v, str) and v != ""), "a checkpoint to start from, or null"),
    ("bench.json_path", lambda v: v is None or (isinstance(v, str) and v != ""), "a file to write bench.json to as well, or null"),
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


def typed_checks() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """Every training key whose value a check types, with its check and what it expects: the
    `CHECKS` table's and the data module's own parameters (`data.<name>`, `PARAMETER_CHECKS`)."""
    from nerf_lab.data.datamodule import PARAMETER_CHECKS

    found = {key: (check, expected) for key, check, expected in CHECKS}
    found.update({f"data.{name}": (check, expected) for name, check, expected in PARAMETER_CHECKS})
    return found


def checked_keys() -> set[str]:
    """The keys of `typed_checks`."""
    return set(typed_checks())


def check_run_values(cfg: DictConfig) -> None:
    """The training config's values no constructor of ours checks (`CHECKS`), and the rules
    that span keys; `ConfigError` naming the key."""
    check_values(cfg, CHECKS)
    if cfg.optim.lr_final > cfg.optim.lr:
        raise ConfigError(f"optim.lr_final={cfg.optim.lr_final} is not allowed: expected at most optim.lr={cfg.optim.lr} (the rate decays)")
