"""Hydra callbacks: check a run's config before its folder is made; summarise a sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nerf_lab.errors import USAGE_ERROR_EXIT_CODE, NerfLabError
from nerf_lab.training.runs import read_sweep, sweep_table, write_json_atomically

log = logging.getLogger("nerf_lab")


class CheckConfigBeforeRun(Callback):
    """A bad value (`model.depth=0`) or a missing scene ends a single run with one line naming
    the key, before the run folder exists and before any image is decoded."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nerf_lab.training.config import validate_config  # keeps `--help` fast

        if config.get("task_name") != "train":
            return
        try:
            validate_config(config, check_files=True)
        except NerfLabError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(USAGE_ERROR_EXIT_CODE) from None


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
