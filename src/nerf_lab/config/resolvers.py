"""The resolvers nerf_lab's config uses, registered with OmegaConf in one place: every command
imports this module before Hydra composes its config (and `compose`, rebuilding a run from a
checkpoint, does too).

* `${nerf_lab.companion:sampling,${model},coarse}` (in train.yaml's defaults list): the option
  of a group named like the model (sampling/original.yaml for model=original), else the
  default given, so that a new model is one file in conf/model/;
* `${nerf_lab.background:${data.white_background},${data.background_color}}`: the renderer's background colour;
* `${nerf_lab.fresh_dir:outputs/<date>/<time>}`: a run's or sweep's default folder, claimed once;
* `${nerf_lab.job_dir_name:${hydra.job.num},${hydra.job.override_dirname},${hydra.sweep.dir}}`:
  a sweep job's folder name.

Default folders (`conf/hydra/default.yaml`) are `${nerf_lab.fresh_dir:outputs/<date>/<time>}`:
the resolver creates the folder with `mkdir` (which fails if it exists, atomically, also between
processes) and takes `<time>_2`, `<time>_3`, … where it is taken, so two runs started in the
same second get two folders. Hydra caches the value (`use_cache`), so each run resolves it once
and a sweep's jobs (in this process or joblib's workers, which get the sweep's config with its
cache) all see the sweep's one folder.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nerf_lab.data.backgrounds import background_colour
from nerf_lab.training.tensorboard import swept_keys


def companion(group: str, model: str, default: str) -> str:
    """`model` where `group` has an option of that name (in the config search path of the
    Hydra app composing, else conf/), else `default`."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    else:
        from nerf_lab.config.compose import options as conf_options

        options = conf_options(group)
    return model if model in options else default


def background(white: bool, colour: Any = None) -> list[float]:
    """The renderer's background colour, as the data module composites (`background_colour`)."""
    return list(background_colour(white, colour))


# Folders this process claimed, with the parents each claim made. OmegaConf also resolves a
# value while Hydra composes the config, wherever a later config overrides it (an experiment's
# hydra.sweep.dir, eval's hydra.run.dir): those claims are spurious and left empty;
# `release_claims` removes them.
_CLAIMS: list[tuple[Path, list[Path]]] = []


def fresh_dir(path: str) -> str:
    """`path`, or `path_2`, `path_3`, …: the first of them that this call could create."""
    base = Path(path)
    made = [parent for parent in reversed(base.parents) if not parent.exists()]
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in itertools.count(1):
        candidate = base if number == 1 else base.with_name(f"{base.name}_{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        _CLAIMS.append((candidate, made))
        return str(candidate)
    raise AssertionError("unreachable")


def release_claims(keep: str | Path | None = None) -> None:
    """Remove the folders this process claimed that are still empty (and the parents their
    claim made, where empty), except `keep`: `rmdir` removes nothing that holds a file."""
    kept = Path(keep).resolve() if keep is not None else None
    for folder, parents in reversed(list(_CLAIMS)):  # latest first: an earlier claim made the parents
        if folder.resolve() == kept:
            continue
        for empty in [folder, *reversed(parents)]:
            try:
                empty.rmdir()
            except OSError:
                break
        _CLAIMS.remove((folder, parents))


# Longest job folder name: file systems refuse names over 255 bytes.
MAX_JOB_NAME = 120


def job_dir_name(number: int, overrides: str, sweep_dir: str | None = None) -> str:
    """A sweep job's folder name: its number and overrides (TensorBoard shows it as the run's
    name), with '/' replaced and, when long, cut short and made unique by a hash. The keys the
    sweep varies come first (`3_model.depth=4,sampling.n_c=32,data.resolution=64`), so that a
    name cut short, here or in TensorBoard's run list, still tells the jobs apart."""
    overrides = swept_first(overrides, sweep_dir) if sweep_dir else overrides
    name = f"{number}_{overrides}".replace("/", "_") if overrides else str(number)
    if len(name) <= MAX_JOB_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_JOB_NAME - 9]}-{digest}"


def swept_first(override_dirname: str, sweep_dir: str) -> str:
    """Hydra's `override_dirname` (`a=1,b=2`, keys sorted) with the keys the sweep's command
    line sweeps moved to the front; unchanged where the sweep's record is not there."""
    record = Path(sweep_dir) / "multirun.yaml"  # written by the sweeper before any job starts
    if not override_dirname or not record.is_file():
        return override_dirname
    task = list(OmegaConf.load(record).hydra.overrides.task)
    keys = sorted({line.split("=", 1)[0] for line in task}, key=len, reverse=True)
    # Split where a known key starts: values may hold commas themselves ([4,5]).
    items = re.split(r",(?=(?:%s)=)" % "|".join(map(re.escape, keys)), override_dirname)
    swept = set(swept_keys(task))
    return ",".join(sorted(items, key=lambda item: item.split("=", 1)[0].lstrip("+~") not in swept))


def register() -> None:
    """Register (again: `replace`) every resolver above with OmegaConf."""
    OmegaConf.register_new_resolver("nerf_lab.companion", companion, replace=True)
    OmegaConf.register_new_resolver("nerf_lab.background", background, replace=True)
    # Sweep workers (joblib, submitit) import the command's module to run the task, and with it
    # this one: they resolve the job's folder name there.
    OmegaConf.register_new_resolver("nerf_lab.job_dir_name", job_dir_name, replace=True)
    # Cached: every later read of a run's or sweep's folder sees the one claimed.
    OmegaConf.register_new_resolver("nerf_lab.fresh_dir", fresh_dir, replace=True, use_cache=True)


register()
