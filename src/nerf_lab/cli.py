"""What every command shares: one-line errors for bad input, and runs that record failure."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig

from nerf_lab.errors import (
    ConfigError,
    NerfLabError,
    environment_fault,
    exit_on_user_error,
    user_error_exit,
)
from nerf_lab.config.compose import CONF_DIR
from nerf_lab.config.resolvers import release_claims
from nerf_lab.training.hardware import share_cpu_threads
from nerf_lab.runs.hydra_callbacks import command_keys, write_summary
from nerf_lab.runs.records import record_failure
from nerf_lab.runs.stops import RunInterrupted, requeue_if_preempted

log = logging.getLogger("nerf_lab")
T = TypeVar("T")

def unknown_option_error(arguments: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The one-line error for a `group=option` on the command line that names no config file
    of ours, or None. (Hydra's own message spans several lines and ends in a hint about
    HYDRA_FULL_ERROR.)"""
    overrides = [argument for argument in arguments if not argument.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a malformed override: Hydra reports it itself
        return None
    for override in parsed:
        group = override.key_or_group
        folder = conf_dir / group
        if group.startswith("hydra") or override.package is not None or not folder.is_dir():
            continue
        if override.is_delete() or override.value() is None:
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        for value in values:
            if value not in options and value != "null":
                return f"{group}={value}: no such option in conf/{group}/; expected one of: {', '.join(options)}"
    return None


def command_line_error(config_name: str, arguments: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One line for a command line Hydra would refuse in many lines (`model.detph=2`), for a
    `+key` no component takes (`+foo=1`), and for a sweep over study presets; None if none.
    (Checked before Hydra makes any folder.)"""
    from nerf_lab.config.overrides import added_key_error, composition_error, preset_sweep_error

    if not (conf_dir / f"{config_name}.yaml").is_file():
        return None
    problem = preset_sweep_error(arguments, conf_dir)
    if problem:
        return problem
    problem, cfg = composition_error(config_name, arguments)
    return problem or (added_key_error(cfg, arguments) if cfg is not None else None)


def quiet_expected_warnings() -> None:
    """Silence warnings about choices nerf_lab makes on purpose, so the ones left matter."""
    # Training batches are drawn on the device by the dataset itself: no workers, and a length
    # (the steps left) that is exact because there is only the main process.
    warnings.filterwarnings("ignore", message=r".*IterableDataset.* has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # A resumed run rebuilds its loader at the restored step, and the batch of step k is a
    # function of (seed, rank, k) alone, so resuming mid-"epoch" repeats nothing.
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    # Lightning's own use of a deprecated torch API, not ours.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def foreign_key_error(task: str, arguments: list[str]) -> str | None:
    """The one-line error for an override of a key that `nerf_lab.<task>` does not read
    (`data.resolution=64` to eval, with or without Hydra's `+`), or None: eval and render take
    the run's settings from its checkpoint, and Hydra would refuse in five lines or, with `+`,
    accept and ignore it."""
    own = command_keys(task)
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        key = argument.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] not in own:
            hint = " (the image width to evaluate at is resolution=<px>)" if task == "eval" and key == "data.resolution" else ""
            return (
                f"{key} is not read by nerf_lab.{task}: the run's own settings come from its checkpoint; "
                f"expected one of {', '.join(sorted(own - {'paths', 'hydra', 'task_name'}))}{hint}"
            )
    return None


def hydra_command(hydra_main: Callable[[], Any], own_keys_only: str | None = None) -> Callable[[], None]:
    """A `@hydra.main` function as a command that checks the config groups named on the
    command line first and, with `own_keys_only` (a task: eval, render), that every key
    overridden is one of that command's own."""

    module = sys.modules.get(hydra_main.__module__)
    spec = getattr(module, "__spec__", None)  # `python -m nerf_lab.train` runs it as __main__
    config_name = (spec.name if spec is not None else hydra_main.__module__).rsplit(".", 1)[-1]

    @exit_on_user_error
    def command() -> None:
        quiet_expected_warnings()
        arguments = sys.argv[1:]
        problem = unknown_option_error(arguments) or (own_keys_only and foreign_key_error(own_keys_only, arguments))
        if problem is None and not any(a in ("--help", "-h", "--hydra-help", "--info") or a.startswith("--cfg") for a in arguments):
            problem = command_line_error(config_name, arguments)
        if problem:
            release_claims()  # the default folders the check's own composition claimed
            raise ConfigError(problem)
        hydra_main()

    return command


def _in_the_sweeps_process(hydra_config: Any) -> bool:
    """Whether the sweep's jobs run one after another in the sweep's own process (Hydra's basic
    launcher), where a stop ends the sweep; other launchers run each job in a process of its own."""
    return "BasicLauncher" in str(hydra_config.launcher.get("_target_", ""))


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """Run a Hydra task and record its failure in the run folder (`error.txt`).

    A single run ends on bad input with a one-line error and exit status 2. A run stopped by
    SIGTERM or SIGINT (`RunInterrupted`) records where it stopped and how to resume it, and
    exits 128 + the signal (143 for SIGTERM, 130 for SIGINT); in a sequential sweep the sweep
    stops there, with its summary; where each job has a process of its own (joblib, submitit)
    only that job stops. A submitit job stopped by its pre-emption signal is requeued, and
    resumes (`nerf_lab.runs.stops.requeue_if_preempted`). A job of a sweep
    that fails (bad value, diverged loss, a bug) is reported and returns None, so the other
    jobs still run; the sweep's summary lists it as failed and the sweep exits non-zero.
    """
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    release_claims(keep=run_dir)  # a sweep job's worker composed the config again: claims left empty
    parallel_jobs = hydra_config.launcher.get("n_jobs")  # the joblib launcher runs jobs side by side
    if hydra_config.mode == RunMode.MULTIRUN and parallel_jobs is not None and parallel_jobs != 1:
        log.info("job %s: %d CPU threads", hydra_config.job.num, share_cpu_threads(parallel_jobs))
    try:
        return task(cfg)
    except RunInterrupted as stop:
        record_failure(run_dir, stop)
        print(f"stopped: {stop}", file=sys.stderr)
        requeue_if_preempted(stop)  # pre-empted in a submitit job: requeued to resume, and the process exits
        if hydra_config.mode == RunMode.MULTIRUN and not _in_the_sweeps_process(hydra_config):
            return None  # a job in a process of its own (joblib, submitit): recorded; the others go on
        if hydra_config.mode == RunMode.MULTIRUN:
            write_summary(Path(hydra_config.sweep.dir))
        raise SystemExit(stop.exit_status) from None
    except Exception as error:
        fault = environment_fault(error, where=str(run_dir))
        # error.txt: the fault's one line first, then the original error's traceback.
        line = record_failure(run_dir, error, line=None if fault is None else f"{type(fault).__name__}: {fault}")
        if fault is not None:
            error = fault
        if hydra_config.mode == RunMode.MULTIRUN:
            log.error("job %s failed: %s (details in %s)", hydra_config.job.num, line, run_dir / "error.txt")
            return None
        if isinstance(error, NerfLabError):
            raise user_error_exit(error) from None
        raise
