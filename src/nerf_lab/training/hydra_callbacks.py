"""Hydra callbacks: check a run's config before its folder is made; summarise a sweep."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nerf_lab.errors import NerfLabError, environment_fault, user_error_exit
from nerf_lab.training.folders import check_run_folder, check_sweep_folder, release_claims
from nerf_lab.training.runs import read_sweep, sweep_table, write_json_atomically

log = logging.getLogger("nerf_lab")


class CheckConfigBeforeRun(Callback):
    """Bad input ends a single run with one line naming the key or file, before the run folder
    exists and before any image is decoded: a bad value (`model.depth=0`, `optim.lr=inf`), a
    missing or malformed scene, or a checkpoint that is missing, unsafe, not ours or (to resume
    from) of another model's shape; and a run or sweep folder that already holds another run
    (`nerf_lab.training.folders`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = None
        try:
            check_before_run(config)
            if config.get("task_name") in RUN_TASKS:
                # After the checks: resolving a default hydra.run.dir claims (creates) it.
                run_dir = config.hydra.run.dir
                check_run_folder(run_dir, config.get("ckpt_path"))
        except NerfLabError as error:
            run_dir = None
            raise user_error_exit(error) from None
        except Exception as error:  # noqa: BLE001 (a folder that cannot be made: a fault of the machine, else re-raised)
            run_dir = None
            raise _fault_exit(error) from None
        finally:
            release_claims(keep=run_dir)  # folders claimed while Hydra composed the config

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = None
        try:
            sweep_dir = config.hydra.sweep.dir
            check_sweep_folder(sweep_dir)
        except NerfLabError as error:
            sweep_dir = None
            raise user_error_exit(error) from None
        except Exception as error:  # noqa: BLE001 (re-raised unless a fault of the machine)
            sweep_dir = None
            raise _fault_exit(error) from None
        finally:
            release_claims(keep=sweep_dir)


def _fault_exit(error: Exception) -> BaseException:
    fault = environment_fault(error)
    return error if fault is None else user_error_exit(fault)


# The commands whose folder holds a run's record (checkpoints, metrics.json): one run a folder.
RUN_TASKS = ("train", "bench")


def check_before_run(config: DictConfig) -> None:
    """Every check a command's config gets before anything is written."""
    # Imported here: keeps `--help` fast.
    from nerf_lab.training.checkpoints import check_resumable, read_checkpoint
    from nerf_lab.training.config import COMMAND_CHECKS, check_values, validate_config

    task = config.get("task_name")
    if task == "train":
        validate_config(config, check_files=True)
        if config.get("ckpt_path"):
            check_resumable(config)
    elif task in COMMAND_CHECKS:
        check_values(config, COMMAND_CHECKS[task])
        read_checkpoint(config.ckpt_path)


class SweepSummary(Callback):
    """After a sweep: a table of its jobs and their metrics, printed and written to
    `summary.md` / `summary.json` in the sweep folder; exit status 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        release_claims(keep=sweep_dir)  # Hydra's sweeper composed each job's config here too
        if sweep_dir.is_dir() and write_summary(sweep_dir):
            raise SystemExit(1)


def write_summary(sweep_dir: Path) -> bool:
    """Print the sweep's table and write `summary.md` and `summary.json`; True if any of its
    jobs did not complete. (Also called by a sweep stopped by a signal, before it exits.)"""
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
    return bool(failed)
