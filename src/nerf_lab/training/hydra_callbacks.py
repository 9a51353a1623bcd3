"""Hydra callbacks: check a run's config before its folder is made; summarise a sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nerf_lab.errors import NerfLabError, user_error_exit
from nerf_lab.training.runs import read_sweep, sweep_table, write_json_atomically

log = logging.getLogger("nerf_lab")


class CheckConfigBeforeRun(Callback):
    """Bad input ends a single run with one line naming the key or file, before the run folder
    exists and before any image is decoded: a bad value (`model.depth=0`, `optim.lr=inf`), a
    missing or malformed scene, or a checkpoint that is missing, unsafe, not ours or (to resume
    from) of another model's shape."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_before_run(config)
        except NerfLabError as error:
            raise user_error_exit(error) from None


def check_before_run(config: DictConfig) -> None:
    """Every check a command's config gets before anything is written."""
    # Imported here: keeps `--help` fast.
    from nerf_lab.training.checkpoints import check_resumable, load_trained
    from nerf_lab.training.config import COMMAND_CHECKS, check_values, validate_config

    task = config.get("task_name")
    if task == "train":
        validate_config(config, check_files=True)
        if config.get("ckpt_path"):
            check_resumable(config)
    elif task in COMMAND_CHECKS:
        check_values(config, COMMAND_CHECKS[task])
        # Rebuilt as the command will (today's config, the stored values as data, the tensors
        # checked, finite): a checkpoint that cannot be is refused before any folder exists.
        trained = load_trained(config.ckpt_path, config.get("chunk"))
        trained.check_scene(config.get("scene_dir"), ("test",) if task == "eval" else ("train", "test"))


class SweepSummary(Callback):
    """After a sweep: a table of its jobs and their metrics, printed and written to
    `summary.md` / `summary.json` in the sweep folder; exit status 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = read_sweep(sweep_dir)
        table = sweep_table(jobs)
        (sweep_dir / "summary.md").write_text(table + "\n")
        write_json_atomically(
            sweep_dir / "summary.json",
            [{"job": job.path.name, "overrides": job.overrides, "status": job.status, "error": job.error, **job.metrics} for job in jobs],
        )
        print(f"\nsweep {sweep_dir}: {len(jobs)} jobs\n{table}")
        failed = [job for job in jobs if job.status != "completed"]
        if failed:
            print(f"{len(failed)} of {len(jobs)} jobs did not complete: see error.txt in their folders", file=sys.stderr)
            raise SystemExit(1)
