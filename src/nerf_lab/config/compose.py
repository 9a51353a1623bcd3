"""Today's config from `conf/`: composing it, its groups and their options, and the keyword
parameters of the constructors its `_target_`s name.

The command line's checks (`nerf_lab.config.overrides`) and the reading of a checkpoint's stored
config (`nerf_lab.config.stored`) both compare a tree against today's; this is what they share.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.utils import get_class, get_method
from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the config tree, beside src/
# Hydra's instantiation keys: the stored ones are never taken.
SPECIAL_KEYS = frozenset({"_target_", "_partial_", "_args_", "_convert_", "_recursive_"})
# The groups a run's choices are stored for (Hydra's own, `hydra/...`, are not).
GROUPS = (
    "data", "encoding", "encoding/direction", "model", "sampling", "optim", "trainer", "logger", "callbacks", "paths", "experiment",
)


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """`conf/<config_name>.yaml` composed with `overrides` by Hydra's compose API, also from
    inside a running Hydra app (whose global state is put back afterwards)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    from nerf_lab.config import resolvers  # noqa: F401 (the config's resolvers, registered)

    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=overrides)
    finally:
        restore_gh_from_backup(backup)


def run_choices(cfg: DictConfig | None = None) -> dict[str, str]:
    """The group choices of the running Hydra job (or of `cfg.hydra`), for the checkpoint."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    elif cfg is not None and OmegaConf.select(cfg, "hydra.runtime.choices") is not None:
        choices = cfg.hydra.runtime.choices
    else:
        return {}
    return {group: str(choices[group]) for group in GROUPS if choices.get(group) is not None}


def options(group: str) -> list[str]:
    """The options of today's `conf/<group>/`, by name."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def takes_key(node: Any, key: str, explicit: bool = False) -> bool:
    """Whether the constructor that `node`'s `_target_` names (today's config, never a
    checkpoint's) takes a keyword `key`: its own parameter or, unless `explicit`, any through
    `**kwargs`."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not isinstance(target, str):
        return False
    keys = constructor_keys(target)
    return key in keys or (not explicit and "**" in keys)


def constructor_keys(target: str) -> list[str]:
    """The keyword parameters of `target` (a function, or a class's `__init__` followed up its
    bases while it passes `**kwargs` on); `**` when it takes any keyword."""
    try:
        thing = get_class(target)
    except Exception:  # noqa: BLE001 (a function, not a class)
        try:
            thing = get_method(target)
        except Exception:  # noqa: BLE001
            return []
    chain = [cls.__dict__["__init__"] for cls in thing.__mro__ if "__init__" in cls.__dict__] if isinstance(thing, type) else [thing]
    keys: list[str] = []
    for function in chain:
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return keys
        keys += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return keys
        if function is object.__init__:
            break
    return [*keys, "**"]


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) of a plain nested dict."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, tree
