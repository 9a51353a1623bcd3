"""One folder, one run: a run refused in a folder that holds another run's files (default
folder names are claimed atomically by the `nerf_lab.fresh_dir` resolver,
`nerf_lab.config.resolvers`)."""

from __future__ import annotations

import os
from pathlib import Path

from nerf_lab.errors import ConfigError

# What a run leaves in its folder (nerf_lab.runs.records): a folder with any of them holds a run.
RUN_FILES = (".hydra", "checkpoints", "tensorboard", "metrics.json", "error.txt")
# What a sweep leaves in its folder before any job runs.
SWEEP_FILES = ("multirun.yaml", "summary.json", "summary.md")


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
