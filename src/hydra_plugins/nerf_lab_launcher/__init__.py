"""`hydra/launcher=parallel`: Hydra's joblib launcher, with each job in a process of its own.

With the joblib launcher alone, a job whose process dies (killed by the out-of-memory killer,
`kill -9`, a crash in native code) breaks joblib's worker pool: every job still running or
waiting is lost, and the sweep ends in `TerminatedWorkerError` with no summary. Here each
joblib worker starts the job in a child Python process and waits for it; a job whose process dies is recorded in its folder's
`error.txt` ("killed by SIGKILL …") and counts as a failed job, while the other jobs run on and
the sweep ends with its summary (`nerf_lab.runs.hydra_callbacks.SweepSummary`).

Signals: SIGTERM or SIGINT sent to a job's process stop that job as they stop a run
(`nerf_lab.runs.stops`): `last.ckpt`, `error.txt` saying how to resume, the job counted
as interrupted; the sweep's other jobs go on.

Lives in `hydra_plugins` because Hydra instantiates launchers only from there. Kept light:
Hydra imports every module under `hydra_plugins` when it starts.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job, process_joblib_cfg
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)


class IsolatedJoblibLauncher(JoblibLauncher):
    """Hydra's `JoblibLauncher` (same settings: `n_jobs`, …), a job a child process."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = dict(self.joblib)
        joblib_cfg["backend"] = "loky"  # as Hydra's: its threading backend does not fit Hydra
        process_joblib_cfg(joblib_cfg)
        log.info("Launching %d jobs, %s at a time, each in its own process; sweep output dir: %s", len(job_overrides), joblib_cfg.get("n_jobs"), sweep_dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))
        singleton_state = Singleton.get_state()
        runs = Parallel(**joblib_cfg)(
            delayed(execute_job_in_child)(
                initial_job_idx + idx, overrides, self.hydra_context, self.config, self.task_function, singleton_state, str(sweep_dir)
            )
            for idx, overrides in enumerate(job_overrides)
        )
        return list(runs)


def execute_job_in_child(idx: int, overrides: Sequence[str], hydra_context: Any, config: Any, task_function: Any, singleton_state: Any, sweep_dir: str) -> JobReturn:
    """Hydra's `execute_job` in a child Python process (a new interpreter: it inherits none of
    the worker's threads or file descriptors); a child that dies is recorded."""
    import cloudpickle

    with tempfile.TemporaryDirectory(prefix=f"job{idx}-") as folder:
        payload, answer = Path(folder) / "job.pkl", Path(folder) / "result.pkl"
        payload.write_bytes(cloudpickle.dumps((idx, overrides, hydra_context, config, task_function, singleton_state)))
        code = f"from {__name__} import run_in_child; run_in_child({str(payload)!r}, {str(answer)!r})"
        exitcode = subprocess.run([sys.executable, "-c", code], check=False).returncode
        result = cloudpickle.loads(answer.read_bytes()) if answer.is_file() else None
    if isinstance(result, JobReturn):
        return result
    reason = _death(exitcode)
    _record_death(Path(sweep_dir), idx, reason)
    log.error("job %d failed: %s", idx, reason)
    # COMPLETED with no value, as nerf_lab.cli.run_task returns a failed job: Hydra's sweeper
    # would end the whole sweep on a FAILED one; the summary reads the job's error.txt.
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def run_in_child(payload: str, answer: str) -> None:
    """The child's side: run the job, write its `JobReturn` to `answer`. A job stopped by a
    signal (exit status 128 + signal) has recorded itself; it answers nothing."""
    import cloudpickle

    arguments = cloudpickle.loads(Path(payload).read_bytes())
    result = execute_job(*arguments)
    try:
        data = cloudpickle.dumps(result)
    except Exception:  # noqa: BLE001 (a return value that does not pickle: the job still ran)
        data = cloudpickle.dumps(JobReturn(overrides=list(arguments[1]), status=JobStatus.COMPLETED))
    Path(answer).write_bytes(data)


def _death(exitcode: int | None) -> str:
    if exitcode in (128 + signal.SIGTERM, 128 + signal.SIGINT):
        return f"stopped by {signal.Signals(exitcode - 128).name}"
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        return f"killed by {name}: the job's process ended without a word (out of memory, kill -9?); resume it from its checkpoints/last.ckpt"
    return f"the job's process ended with exit status {exitcode} without a result"


def _record_death(sweep_dir: Path, idx: int, reason: str) -> None:
    """error.txt in the job's folder (`<idx>_<overrides>`, as nerf_lab names it), where it exists."""
    from nerf_lab.runs.records import ERROR_FILE, METRICS_FILE

    folders = [p for p in sweep_dir.glob(f"{idx}_*") if (p / ".hydra").is_dir()] + [p for p in [sweep_dir / str(idx)] if p.is_dir()]
    for folder in folders[:1]:
        if not (folder / ERROR_FILE).is_file() and not (folder / METRICS_FILE).is_file():
            (folder / ERROR_FILE).write_text(f"JobKilled: {reason}\n")
