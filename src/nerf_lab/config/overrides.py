"""The command line's overrides, checked so that the record says what ran.

* `added_key_error`: a key added with `+` (or `++`) is kept only where a component takes it:
  its node's `_target_` names a constructor with that keyword (Adam's `weight_decay` as
  `+optim.optimizer.weight_decay`, a Trainer argument as `+trainer.overfit_batches`; the
  signature decides, `inspect.signature`). Anything else (`+foo=1`, `+model.dropout=0.1`,
  `+sampling.jitter=0.1`) is refused in one line naming the nearest keys, and a key that a
  child node takes (`+optim.weight_decay`) names the spelling that is applied.
* `preset_sweep_error`: `-m experiment=a,b` over presets that carry their own sweep
  (`hydra.sweeper.params`) would run one plain job a preset: refused.
* `composition_error`: Hydra's own multi-line composition errors (`model.detph=2`) as one line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nerf_lab.config.compose import SPECIAL_KEYS, compose, constructor_keys, flatten, takes_key


def _parse(arguments: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([a for a in arguments if not a.startswith("-")])


def node_keys(node: Any) -> list[str]:
    """What a config node accepts: its keys and, under a `_target_`, its constructor's."""
    if not isinstance(node, DictConfig):
        return []
    keys = [str(key) for key in node if key not in SPECIAL_KEYS]
    target = node.get("_target_")
    if isinstance(target, str):
        keys += [key for key in constructor_keys(target) if key not in keys and key != "**"]
    return keys


def added_key_error(cfg: DictConfig, overrides: list[str]) -> str | None:
    """The one-line refusal of the first `+key=value` of `overrides` that no component of `cfg`
    (the config they composed) takes, or None."""
    try:
        parsed = _parse(list(overrides))
    except Exception:  # noqa: BLE001 (Hydra reports a malformed override itself)
        return None
    for override in parsed:
        if not (override.is_add() or override.is_force_add()) or override.package is not None:
            continue
        key = override.key_or_group
        if key.startswith("hydra") or "/" in key:
            continue
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if override.is_force_add() and isinstance(parent, DictConfig) and name in _declared(parent_key, overrides):
            continue  # ++ on a key the config already had: an ordinary override
        if isinstance(parent, DictConfig) and takes_key(parent, name):
            continue
        if _new_callback(key, overrides):
            continue
        written = override.input_line or f"+{key}"
        where = parent_key or "the config's top level"
        for child_name in (parent.keys() if isinstance(parent, DictConfig) else []):
            child = parent._get_node(child_name)
            if isinstance(child, DictConfig) and takes_key(child, name, explicit=True):
                return (
                    f"{written}: {where} has no key {name} and nothing reads it; "
                    f"{child.get('_target_')} takes it as {parent_key + '.' if parent_key else ''}{child_name}.{name} "
                    f"(+{parent_key + '.' if parent_key else ''}{child_name}.{name}={override.value()})"
                )
        accepted = [k for k in node_keys(parent) if k != name]
        near = difflib.get_close_matches(name, accepted, n=3, cutoff=0.4) or accepted[:6]
        listed = ", ".join(f"{parent_key}.{k}" if parent_key else k for k in near)
        return f"{written}: no component takes {key} ({where} has no such key, nor a constructor taking it); nearest keys: {listed}"
    return None


def _new_callback(key: str, overrides: list[str]) -> bool:
    """Whether `key` lies in a callback the command line adds whole (`+callbacks.<name>._target_=…`
    with its arguments): the train command instantiates every entry of `callbacks`."""
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "callbacks":
        return False
    target = f"+callbacks.{parts[1]}._target_="
    return any(o.lstrip("+").startswith(target.lstrip("+")) and o.startswith("+") for o in overrides)


def _declared(parent_key: str, overrides: list[str]) -> list[str]:
    """The keys of `parent_key` in the config composed without any `+` or `++` key."""
    plain = [o for o in overrides if not o.startswith("+")]
    try:
        base = compose("train", overrides=plain)
    except Exception:  # noqa: BLE001
        return []
    node = OmegaConf.select(base, parent_key) if parent_key else base
    return [str(k) for k in node] if isinstance(node, DictConfig) else []


def preset_sweep_error(arguments: list[str], conf_dir: Path) -> str | None:
    """One line refusing a sweep over experiment presets that each carry a sweep of their own,
    or None."""
    try:
        parsed = _parse(arguments)
    except Exception:  # noqa: BLE001
        return None
    for override in parsed:
        if override.key_or_group != "experiment" or not override.is_sweep_override():
            continue
        presets = list(override.sweep_string_iterator())
        swept = {p: _preset_sweep(conf_dir / "experiment" / f"{p}.yaml") for p in presets}
        carrying = [p for p, params in swept.items() if params]
        if len(presets) > 1 and carrying:
            described = "; ".join(f"{p}: {', '.join(swept[p])}" for p in carrying)
            return (
                f"experiment={','.join(presets)}: study presets carry their own sweeps (hydra.sweeper.params: {described}), "
                f"which a sweep over presets would drop; run one study per command, e.g. -m experiment={carrying[0]}"
            )
    return None


def _preset_sweep(path: Path) -> list[str]:
    """The keys a preset file (or one it builds on) sweeps in `hydra.sweeper.params`."""
    if not path.is_file():
        return []
    preset = OmegaConf.load(path)
    params = OmegaConf.select(preset, "hydra.sweeper.params")
    if params:
        return [str(key) for key in params]
    for parent in preset.get("defaults", []) or []:
        if isinstance(parent, str) and "/" not in parent and parent != "_self_":
            found = _preset_sweep(path.parent / f"{parent}.yaml")
            if found:
                return found
    return []


def unquoted_text_error(arguments: list[str]) -> str | None:
    """The one line for an override whose unquoted value holds a character Hydra's grammar
    does not read (anything beyond ASCII: `data.scene_dir=/data/légo`), naming the key, the
    character and the fix (quote the value); None if there is none."""
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        key, value = argument.split("=", 1)
        if value[:1] in ("'", '"'):
            continue
        odd = next((character for character in value if ord(character) > 127), None)
        if odd is not None:
            return (
                f"{argument}: Hydra reads unquoted values as ASCII only and stops at {odd!r}; "
                f"quote the value: \"{key}='{value}'\""
            )
    return None


def _first_of_sweep(override: Any) -> str | None:
    """A plain override's own line; a sweep's key with its first value (None where the sweep
    cannot be listed, such as a glob over a group's options)."""
    if not override.is_sweep_override():
        return override.input_line
    try:
        first = next(iter(override.sweep_string_iterator()))
    except Exception:  # noqa: BLE001
        return None
    return f"{override.get_key_element()}={first}"


def composition_error(config_name: str, arguments: list[str]) -> tuple[str | None, DictConfig | None]:
    """Hydra's error composing `config_name` with the command line's plain overrides (sweeps
    left out), as one line naming the key and the nearest keys, or (None, the config)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        parsed = _parse(arguments)
    except Exception as error:  # noqa: BLE001 (a malformed override)
        return unquoted_text_error(arguments) or " ".join(str(error).split()), None
    # A sweep's override is composed with its first value: a key it names must exist as in a
    # single run (`-m model.detph=2,4` is refused as `model.detph=2` is).
    lines = {id(o): _first_of_sweep(o) for o in parsed if o.input_line and not o.key_or_group.startswith("hydra")}
    plain = [line for line in lines.values() if line is not None]
    try:
        return None, compose(config_name, overrides=plain)
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error)
        for override in parsed:
            key = override.key_or_group
            if f"'{key}'" in message and "Could not override" in message:
                parent_key, _, name = key.rpartition(".")
                try:
                    base = compose(config_name, overrides=[line for line in plain if line != lines.get(id(override))])
                    parent = OmegaConf.select(base, parent_key) if parent_key else base
                except Exception:  # noqa: BLE001
                    base = parent = None
                if isinstance(parent, DictConfig):
                    accepted = node_keys(parent)
                    near = difflib.get_close_matches(name, accepted, n=3, cutoff=0.4) or accepted[:6]
                    listed = ", ".join(f"{parent_key}.{k}" if parent_key else k for k in near)
                    what = f"{parent_key or 'the config'} has no key {name}"
                else:  # no such node at all (data.scene_dir given to eval): the whole config's keys
                    keys = [k for k, _ in flatten(OmegaConf.to_container(base, resolve=False))] if base is not None else []
                    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.4)
                    near += [k for k in keys if k.rpartition(".")[2] == name and k not in near]
                    listed = ", ".join(near[:3]) or "none"
                    what = f"{config_name}'s config has no {parent_key}"
                return f"{override.input_line}: {what}; nearest keys: {listed}", None
        return " ".join(message.split()), None
