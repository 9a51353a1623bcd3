"""One folder, one run: default folder names claimed atomically, and a run refused in a folder
that holds another run's files.

Default folders (`conf/hydra/default.yaml`) are `${nerf_lab.fresh_dir:outputs/<date>/<time>}`:
the resolver creates the folder with `mkdir` (which fails if it exists, atomically, also between
processes) and takes `<time>_2`, `<time>_3`, … where it is taken, so two runs started in the
same second get two folders. Hydra caches the value (`use_cache`), so each run resolves it once
and a sweep's jobs (in this process or joblib's workers, which get the sweep's config with its
cache) all see the sweep's one folder.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from nerf_lab.errors import ConfigError

# What a run leaves in its folder (nerf_lab.runs.records): a folder with any of them holds a run.
RUN_FILES = (".hydra", "checkpoints", "tensorboard", "metrics.json", "error.txt")
# What a sweep leaves in its folder before any job runs.
SWEEP_FILES = ("multirun.yaml", "summary.json", "summary.md")


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


def run_files(folder: Path) -> list[str]:
    """The names in `folder` that a run (or a sweep) leaves there; [] for a new or empty folder."""
    if not folder.is_dir():
        return []
    return sorted(name for name in (*RUN_FILES, *SWEEP_FILES) if (folder / name).exists())


def secondary_rank() -> bool:
    """Whether this process is a rank other than 0 of a data-parallel run: Lightning's DDP
    launcher starts ranks 1… by running the same command again (with LOCAL_RANK, NODE_RANK or
    RANK set), into the folder rank 0 has already made its own."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def check_run_folder(run_dir: str | Path, ckpt_path: str | None) -> None:
    """`ConfigError` (one line) if `run_dir` holds another run's files. The exceptions: the
    run is resumed into its own folder, i.e. `ckpt_path` lies inside `run_dir`; and the other
    ranks of a data-parallel run, which share rank 0's folder (`secondary_rank`)."""
    if secondary_rank():
        return
    folder = Path(run_dir)
    found = run_files(folder)
    if not found:
        _check_writable(folder)
        return
    if ckpt_path and Path(ckpt_path).resolve().is_relative_to(folder.resolve()):
        return
    raise ConfigError(
        f"hydra.run.dir={folder} already holds a run ({', '.join(found)}): expected a new or empty folder "
        f"(leave hydra.run.dir out for a fresh one), or, to resume that run into it, ckpt_path={folder / 'checkpoints' / 'last.ckpt'}",
        key="hydra.run.dir",
    )


def _check_writable(folder: Path) -> None:
    """Make `folder` and write a small file in it: an OSError (read-only, forbidden, a file in
    the way, no space) now, before the run, rather than from deep inside it."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".nerf_lab-write-check"
    probe.write_bytes(b"ok")
    probe.unlink()


def check_sweep_folder(sweep_dir: str | Path) -> None:
    """`ConfigError` (one line) if `sweep_dir` holds another sweep's or run's files."""
    folder = Path(sweep_dir)
    found = run_files(folder) + sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) if folder.is_dir() else []
    if found:
        shown = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
        raise ConfigError(
            f"hydra.sweep.dir={folder} already holds a sweep ({shown}): expected a new or empty folder "
            "(leave hydra.sweep.dir out for a fresh one)",
            key="hydra.sweep.dir",
        )
