"""Stops: a run told to stop (SIGTERM, SIGINT) ends after the step under way with `last.ckpt`
at that step, the reason in `error.txt`, and exit status 128 + the signal's number.

Who owns which signal:

* SIGTERM (a scheduler's stop, `timeout`, `kill`): Lightning owns it while `Trainer.fit` and
  `Trainer.test` run. Its `_SignalConnector` sets `trainer.received_sigterm`, and the loops raise
  `SIGTERMException` at the end of the batch under way (the step is whole: its optimiser step,
  schedule step and, at a validation step, its validation are done). Its handler also calls the
  handler that was there before it, ours, which only notes which signal came.
* SIGINT (Ctrl+C): Lightning has no handler of its own for it (Python raises KeyboardInterrupt
  wherever the program is, mid-step), so ours sets the same flag and Lightning stops the same
  way, at the end of the step. A second Ctrl+C raises KeyboardInterrupt at once.
* Outside the Trainer's loops (loading the scene, between fit and test), our handler raises
  `RunInterrupted` at once: there is no step to finish.
* A stop during a validation of training waits for its last view (Lightning's evaluation loop
  would raise after the view under way, and a run resumed from there skips the rest of that
  validation): `CheckpointOnStop` holds the flag back until the validation ends, so the stop
  comes after the whole step, as at any other step.
* `CheckpointOnStop` (Lightning's `OnExceptionCheckpoint`, for stops only) writes `last.ckpt`
  when the loops raise `SIGTERMException`; `nerf_lab.train` turns the stop into `RunInterrupted`,
  which `nerf_lab.cli.run_task` records.
* In a job of the submitit launcher (SLURM, or `submitit_local`): submitit installs its
  handlers when the job starts: it ignores SIGTERM, and on pre-emption's or time-out's signal
  (SIGUSR2 unless `SUBMITIT_PREEMPT_SIGNAL` says otherwise) it requeues the job with its
  first arguments and exits, mid-step if nothing else handles the signal. While a run trains,
  ours replace them: SIGTERM, SIGINT and that signal stop the run as above, recorded as
  interrupted with the command that resumes it. After SIGTERM or SIGINT alone the job then ends
  (not requeued) and the sweep's summary lists it. Where the pre-emption signal came (alone,
  or after SIGTERM, as SLURM pre-empts), the stop is handed to submitit's handler once the
  run's record is written (`requeue_if_preempted`), which requeues the job; the requeued job
  finds its folder's earlier try and resumes it from its `last.ckpt` (`preempted_checkpoint`),
  into the same folder, as a resume by hand would.
* SIGKILL (`kill -9`, out of memory) cannot be caught: the run keeps the `last.ckpt` written
  last (every `callbacks.last_checkpoint.every_n_train_steps` steps, every
  `callbacks.timed_checkpoint.train_time_interval`, and at each validation).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nerf_lab.runs.records import read_run

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):
    """A run stopped by a signal: recorded in `error.txt`, the process exits 128 + `signum`."""

    def __init__(self, signum: int, step: int, resume: str, received: tuple[int, ...] = ()) -> None:
        self.signum, self.step, self.resume = signum, step, resume
        self.received = received or (signum,)  # every stop signal that came, first to last
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; resume with: {resume}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # as shells report a process ended by a signal


class CheckpointOnStop(pl.Callback):
    """`last.ckpt` at the step reached when the loops raise `SIGTERMException` (after SIGTERM or
    SIGINT), as Lightning's `OnExceptionCheckpoint` writes it, but for stops only (a run that
    failed, e.g. with a diverged loss, keeps the `last.ckpt` written before) and without that
    callback's other effect: with it, `Trainer.fit(ckpt_path=None)` resumes from the newest
    `last.ckpt` it finds, where a run must resume only when asked."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._held = False  # a stop that came during a validation, held back until it ends

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: object, **kwargs: object) -> None:
        connector = trainer._signal_connector  # the flag Lightning's loops read (see the module's docstring)
        if trainer.state.fn == "fit" and not trainer.sanity_checking and connector.received_sigterm:
            connector.received_sigterm, self._held = False, True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._held:
            trainer._signal_connector.received_sigterm, self._held = True, False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: resumable


class StopSignals:
    """Notes the first stop signal, and every one that came; see the module's docstring for
    who acts on them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received: list[int] = []
        self.trainer: pl.Trainer | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        self.received.append(signum)
        if first:
            self.signum = signum
        elif signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl+C twice: stop now
        trainer = self.trainer
        if trainer is not None and trainer.state.status == TrainerStatus.RUNNING:
            # The flag Lightning's own SIGTERM handler sets: the loops stop after this batch.
            trainer._signal_connector.received_sigterm = True
        elif first:
            raise RunInterrupted(signum, 0 if trainer is None else trainer.global_step, "")


def preemption_signal() -> int | None:
    """submitit's pre-emption and time-out signal in a submitit job (`SUBMITIT_EXECUTOR` set):
    SIGUSR2 unless `SUBMITIT_PREEMPT_SIGNAL` names another; None outside such a job, or where
    that signal is one of the stop signals."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    preempt = getattr(signal, name, None)
    return None if preempt is None or preempt in STOP_SIGNALS else int(preempt)


def _signals_to_handle() -> tuple[int, ...]:
    """SIGTERM and SIGINT; in a submitit job also its pre-emption signal."""
    preempt = preemption_signal()
    return STOP_SIGNALS if preempt is None else (*STOP_SIGNALS, preempt)


def requeue_if_preempted(stop: RunInterrupted) -> None:
    """After a run stopped in a submitit job has written its record: if submitit's pre-emption
    signal was among the signals that stopped it (SLURM pre-empts with SIGTERM, then that
    signal), call the handler submitit installed for it (back in place once `stop_signals` has
    ended), which requeues the job with its first arguments and exits the process. Returns
    (doing nothing) for any other stop, outside a submitit job, where no handler of submitit's
    is installed, and where submitit declines to requeue (a job out of time more often than
    `max_num_timeout`): the job then ends interrupted, as after SIGTERM alone."""
    preempt = preemption_signal()
    if preempt is None or preempt not in stop.received:
        return
    handler = signal.getsignal(preempt)
    if not (callable(handler) and getattr(handler, "__name__", "") == "checkpoint_and_try_requeue"):
        return
    try:
        handler(preempt, None)
    except Exception as error:  # noqa: BLE001 (submitit's "not requeued" is an exception; the stop is recorded)
        print(f"not requeued: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)


def preempted_checkpoint(run_dir: Path) -> Path | None:
    """In a submitit job, the `last.ckpt` to resume from when `run_dir` holds an earlier try of
    this job: a run with a `last.ckpt` that was interrupted (its `error.txt` says so) or ended
    without a record (pre-empted before it wrote one, or killed). The job was requeued and
    starts again with its first arguments. None outside a submitit job, for a new folder, a
    finished or failed run, or one without `last.ckpt`."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not os.environ.get("SUBMITIT_EXECUTOR") or not last.is_file() or not (run_dir / ".hydra").is_dir():
        return None
    return last if read_run(run_dir).status in ("interrupted", "incomplete") else None


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Handle SIGTERM and SIGINT (and submitit's pre-emption signal) as stops while the block runs (main thread only: elsewhere
    Python cannot install handlers, and the process's owner handles them); the previous
    handlers come back after."""
    stops = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    handled = _signals_to_handle()
    previous = {signum: signal.getsignal(signum) for signum in handled}
    for signum in handled:
        signal.signal(signum, stops.handle)
    try:
        yield stops
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def resume_command(run_dir: Path, overrides: list[str]) -> str:
    """The command that resumes the run in `run_dir` into its own folder: its overrides, less
    any `ckpt_path` and `hydra.run.dir`, then those two naming the run's `last.ckpt` and folder."""
    kept = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~") in ("ckpt_path", "hydra.run.dir")]
    last = run_dir / "checkpoints" / "last.ckpt"
    words = ["python", "-m", "nerf_lab.train", *kept, f"ckpt_path={last}", f"hydra.run.dir={run_dir}"]
    return " ".join(shlex.quote(word) for word in words)


def interrupted(stops: StopSignals, step: int, run_dir: Path, overrides: list[str]) -> RunInterrupted:
    """The `RunInterrupted` for a run stopped by a signal (SIGTERM where no handler of ours
    noted one: another handler of the process set Lightning's flag), with the command that
    resumes it, or what to do where it has no `last.ckpt` yet."""
    signum = stops.signum if stops.signum is not None else signal.SIGTERM
    received = tuple(stops.received)
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        return RunInterrupted(signum, step, resume_command(run_dir.resolve(), overrides), received)
    return RunInterrupted(signum, step, "nothing (no checkpoint yet): run the command again", received)


def command_overrides() -> list[str]:
    """The overrides the command was given (Hydra's record; for a sweep job, the job's)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return [argument for argument in sys.argv[1:] if "=" in argument and not argument.startswith("-")]
