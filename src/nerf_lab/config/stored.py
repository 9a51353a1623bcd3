"""A checkpoint's stored config, read as data: nothing stored in a checkpoint is ever called.

A run's checkpoint keeps its config (`hyper_parameters.config`, resolved values) and its group
choices (`hyper_parameters.choices`: `data=blender`, `sampling=occupancy`, …, Hydra's
`hydra.runtime.choices`). To rebuild the run, `config_from_checkpoint`

1. composes TODAY's config from `conf/` with those choices (Hydra's compose API); a checkpoint
   written before the choices were stored has them inferred from its values: each group's
   option is the one whose tree (its keys, and its `_target_` strings compared as text) the
   stored tree fits; so is a stored choice whose option's tree the stored values no longer
   fit (its file changed since);
2. overlays the stored values as plain data: only keys today's config has (or that the
   constructor of today's `_target_` there takes, such as `+trainer.overfit_batches`); never
   `_target_`, `_partial_`, `_args_`, `_convert_` or `_recursive_` (a stored one must equal
   today's, else the file is refused); leaves are None, booleans, numbers, strings without
   `${…}` and lists of them;
3. checks the result with the command line's own value checks (`validate_config`).

So only today's targets are instantiated. Anything that does not fit is a `ConfigError` of one
line naming the file and the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from nerf_lab.config.compose import GROUPS, SPECIAL_KEYS, compose, options, takes_key
from nerf_lab.errors import ConfigError, NerfLabError

# Groups a checkpoint of before the choices were stored has inferred (the others take today's default).
INFERRED_GROUPS = ("data", "model", "encoding/direction", "encoding", "sampling", "optim")
CHOICES_KEY = "choices"  # checkpoint["hyper_parameters"]["choices"]
# `_target_`s an earlier nerf_lab stored, under the names the classes have today: a stored
# target equal to its new name counts as today's (still compared as text, never called).
RENAMED_TARGETS = {
    "nerf_lab.records.stops.CheckpointOnStop": "nerf_lab.runs.stops.CheckpointOnStop",
    "nerf_lab.nerf.model.NeRFModel": "nerf_lab.nerf.renderer.NeRFRenderer",
    "nerf_lab.training.logging.LogViewImages": "nerf_lab.training.callbacks.LogViewImages",
    **{f"nerf_lab.nerf.samplers.{name}": f"nerf_lab.nerf.ray_samplers.{name}"
       for name in ("StratifiedSampler", "UniformSampler", "BoxClippedSampler", "OccupancyGridSampler")},
}
# Keys that checkpoints may hold but today's config lacks, with why: skipped when read, so those
# checkpoints still load.
RETIRED_KEYS = {
    "sampling.clip_to_box": "the occupancy grid's sampler always clips rays to data.scene_box",
}


def _stored_special(key: str, value: Any) -> Any:
    """A stored special key's value under today's names (`RENAMED_TARGETS`)."""
    return RENAMED_TARGETS.get(value, value) if key == "_target_" and isinstance(value, str) else value


def _derived(node: DictConfig, key: str, path: str) -> bool:
    """Whether today's `node.key` (at `path`) is wiring derived from other keys: the
    LightningModule's node (`module.renderer.near: ${data.near}`) and references to whole
    nodes (`model.position_encoding: ${encoding.position}`). Its sources are restored in their
    own places; the stored copy is not taken. (A value a user sets, even one whose default is
    an interpolation such as `data.scene_dir`, is restored.)"""
    child = node._get_node(key) if key in node else None
    if child is None or not child._is_interpolation():
        return False
    if path.split(".")[0] == "module":
        return True
    try:
        return OmegaConf.is_config(node[key])
    except Exception:  # noqa: BLE001 (a resolver that needs a running Hydra app: a value, not wiring)
        return False


def config_from_checkpoint(checkpoint: dict[str, Any], path: str | Path, key: str = "ckpt_path") -> DictConfig:
    """Today's training config for the run `checkpoint` (read by `read_checkpoint`) recorded,
    with its stored values overlaid as data and checked; `ConfigError` naming `key`, the file
    and the key path where the stored tree does not fit."""
    from nerf_lab.config.build import validate_config

    where = f"{key}={path}"
    hyper = checkpoint.get("hyper_parameters", {})
    stored = hyper.get("config")
    choices = hyper.get(CHOICES_KEY) or {}  # none: written before they were stored, or by train(cfg) outside Hydra
    cfg = compose("train", overrides=_choice_overrides(choices, where))
    if not isinstance(stored, dict) or not all(_fits(OmegaConf.select(cfg, path), _subtree(stored, path), f"{path}.") for path in _paths()):
        cfg = compose("train", overrides=_choice_overrides(infer_choices(stored, where, choices), where))
    with open_dict(cfg):
        cfg.pop("hydra", None)
        _overlay(cfg, stored, "", where)
    try:
        validate_config(cfg)
    except NerfLabError as error:
        raise ConfigError(f"{where}: its stored config is refused: {error}", key=key) from None
    return cfg


def _choice_overrides(choices: Any, where: str) -> list[str]:
    if not isinstance(choices, dict):
        raise ConfigError(f"{where}: hyper_parameters.{CHOICES_KEY} is not a mapping of group to option")
    overrides = []
    for group, option in choices.items():
        if group not in GROUPS:
            raise ConfigError(f"{where}: hyper_parameters.{CHOICES_KEY}.{group}: no such config group; expected one of {', '.join(GROUPS)}")
        if option not in options(group):
            raise ConfigError(
                f"{where}: hyper_parameters.{CHOICES_KEY}.{group}={option!r}: no such option in today's conf/{group}/; "
                f"expected one of: {', '.join(options(group))}"
            )
        overrides.append(f"{group}={option}")
    return overrides


def infer_choices(stored: Any, where: str, known: dict[str, str] | None = None) -> dict[str, str]:
    """The group choices that fit a checkpoint's stored config: for each of `INFERRED_GROUPS`,
    the option `known` names (the choices it stored) where the stored group fits it, else the
    first option (today's default first) whose tree the stored group's fits, `_target_`
    strings compared as text. So a checkpoint written before the choices were stored is
    rebuilt, and so is one whose option's file has changed since it was written (its values
    then fit another option). `ConfigError` where none fits and nothing was stored."""
    if not isinstance(stored, dict):
        raise ConfigError(f"{where}: hyper_parameters.config is not a mapping")
    known = known or {}
    choices: dict[str, str] = {group: option for group, option in known.items() if group not in INFERRED_GROUPS}
    for group in INFERRED_GROUPS:
        path = group.replace("/", ".")
        tree = _subtree(stored, path)
        chosen = [f"{g}={o}" for g, o in choices.items()]  # an option's tree holds its subgroups'
        candidates = [known[group]] if group in known else [None]  # None: today's default
        candidates += [option for option in options(group) if option not in candidates]
        for option in candidates:
            overrides = chosen if option is None else [*chosen, f"{group}={option}"]
            if _fits(OmegaConf.select(compose("train", overrides=overrides), path), tree, f"{path}."):
                if option is not None:
                    choices[group] = option
                break
        else:
            if group in known:  # the overlay says where it does not fit
                choices[group] = known[group]
                continue
            raise ConfigError(
                f"{where}: its config's {path} fits no option of today's conf/{group}/ "
                f"({', '.join(options(group))}): it cannot be rebuilt from today's config"
            )
    return choices


def _paths() -> list[str]:
    """The config nodes of `INFERRED_GROUPS` (encoding/direction is the node encoding.direction)."""
    return [group.replace("/", ".") for group in INFERRED_GROUPS]


def _subtree(stored: Any, path: str) -> Any:
    """The stored config's node at the dotted `path`, or None."""
    for key in path.split("."):
        stored = stored.get(key) if isinstance(stored, dict) else None
    return stored


def _fits(node: Any, tree: Any, prefix: str = "") -> bool:
    """Whether the stored `tree` has exactly the dict structure of today's `node`, with equal
    special keys (a missing key of today's counts as fitting: it is new since; derived and
    retired keys are not compared)."""
    if not isinstance(node, DictConfig) or not isinstance(tree, dict):
        return not isinstance(node, DictConfig) and not isinstance(tree, dict)
    for key, value in tree.items():
        if f"{prefix}{key}" in RETIRED_KEYS or _derived(node, key, f"{prefix}{key}"):
            continue
        if key in SPECIAL_KEYS:
            if key not in node or node[key] != _stored_special(key, value):
                return False
        elif key not in node and not takes_key(node, key):
            return False
        elif key in node and isinstance(node._get_node(key), DictConfig) != isinstance(value, dict):
            if value is not None and not (isinstance(value, dict) and _typed_null(node, key, f"{prefix}{key}")):
                return False
        elif key in node and isinstance(value, dict) and not _fits(node[key], value, f"{prefix}{key}."):
            return False
    return True


def _overlay(node: DictConfig, stored: Any, prefix: str, where: str) -> None:
    if not isinstance(stored, dict):
        raise ConfigError(f"{where}: hyper_parameters.config{'.' + prefix if prefix else ''} is not a mapping")
    for key, value in stored.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(key, str):
            raise ConfigError(f"{where}: hyper_parameters.config.{path}: a key that is not a string")
        if path in RETIRED_KEYS or _derived(node, key, path):
            continue
        if key in SPECIAL_KEYS:
            today = node._get_node(key)._value() if key in node else None
            if today != _stored_special(key, value):
                raise ConfigError(
                    f"{where}: its stored config has {path}={value!r} where today's config has "
                    f"{'nothing' if today is None else repr(today)}: a checkpoint's config is data, and what it names is never called"
                )
            continue
        if key not in node and not takes_key(node, key):
            near = ", ".join(_nearest(key, list(node.keys())))
            raise ConfigError(f"{where}: its stored config has {path}, a key today's config does not have{f' (nearest: {near})' if near else ''}")
        today_is_tree = key in node and isinstance(node._get_node(key), DictConfig)
        if isinstance(value, dict) and not today_is_tree and _typed_null(node, key, path):
            # A value a run derives and records (data.scene_transform of a normalised run), or a
            # user's mapping (trainer.max_time={minutes: 9}), where today's default is null:
            # taken as plain data, its type checked with the command line's (`CHECKS`).
            _check_plain(value, path, where, mappings=True)
            _check_typed(value, path, where)
            node[key] = value
        elif isinstance(value, dict):
            if not today_is_tree:
                raise ConfigError(f"{where}: its stored config has a mapping at {path}, where today's config has a value")
            _overlay(node[key], value, path, where)
        else:
            if today_is_tree and value is not None:
                raise ConfigError(f"{where}: its stored config has a value at {path}, where today's config has a mapping")
            typed = _typed_null(node, key, path)
            _check_plain(value, path, where, mappings=typed)
            if typed and isinstance(value, list):
                _check_typed(value, path, where)
            node[key] = value


def _typed_null(node: DictConfig, key: str, path: str) -> bool:
    """Whether today's `node.key` is a plain null (not an interpolation) whose value the
    command line's checks type (`nerf_lab.config.checks.checked_keys`): a stored mapping or
    list there is read back and checked."""
    from nerf_lab.config.checks import checked_keys

    child = node._get_node(key) if key in node else None
    if child is None or OmegaConf.is_config(child) or child._is_interpolation() or child._value() is not None:
        return False
    return path in checked_keys()


def _check_typed(value: Any, path: str, where: str) -> None:
    """A stored mapping or list where today's default is null, checked as the command line's
    value would be (`nerf_lab.config.checks.typed_checks`) before any object is built from it."""
    from nerf_lab.config.checks import typed_checks

    check, expected = typed_checks()[path]
    if not check(value):
        raise ConfigError(f"{where}: its stored {path}={value!r} is not allowed: expected {expected}")


def _check_plain(value: Any, path: str, where: str, mappings: bool = False) -> None:
    """A stored leaf is None, a boolean, a number, a string without `${…}`, or a list of them
    (and, with `mappings`, a mapping of them, string keys only)."""
    if isinstance(value, list):
        for item in value:
            _check_plain(item, path, where, mappings)
    elif isinstance(value, dict) and mappings:
        for name, item in value.items():
            if not isinstance(name, str):
                raise ConfigError(f"{where}: its stored config has {path} with a key that is not a string")
            _check_plain(item, f"{path}.{name}", where, mappings)
    elif isinstance(value, str):
        if "${" in value:
            raise ConfigError(f"{where}: its stored config has {path}={value!r}: expected a resolved value, not an interpolation")
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise ConfigError(f"{where}: its stored config has {path} of type {type(value).__name__}: expected a number, string, boolean or list")


def _nearest(key: str, candidates: list[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(key, [str(c) for c in candidates], n=3, cutoff=0.5)


