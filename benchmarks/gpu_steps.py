"""Running one step of a GPU part under a clock, and keeping its records in the out folder.

A step is a command run in its own process group: at its limit it gets SIGTERM (a training run
records itself as interrupted, with `last.ckpt` and `error.txt`), then SIGKILL after a grace
period. While it runs, and when it ends, the records of its run folders (`curve.csv`,
`metrics.json`, `error.txt`, the TensorBoard events, the composed config; never checkpoints)
are copied into the out folder, and the out folder is packed into `$OUT` when that is set, so
whatever kills the whole script, what was measured is already there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RECORD_FILES = ("curve.csv", "metrics.json", "test_views.csv", "error.txt", "train.log")
HYDRA_FILES = ("config.yaml", "overrides.yaml")
SHIP_LIMIT_BYTES = 15 * 2**20  # the device tool returns files of at most 16 MiB


@dataclass
class Part:
    """A part's clock and folders. `out` holds every record; `work` the run folders
    (checkpoints included) outside it; `ship_to` ($OUT) gets `<name>.tgz`, `<name>_summary.md`
    and `<name>_log.txt` after every copy."""

    name: str
    out: Path
    work: Path
    budget_s: float
    grace_s: float = 30.0
    ship_every_s: float = 15.0
    ship_to: Path | None = None
    started: float = field(default_factory=time.monotonic)
    runs: dict[str, Path] = field(default_factory=dict)  # record folder name → run folder
    steps: list[dict] = field(default_factory=list)
    events_left_out: bool = False

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_file = (self.out / "log.txt").open("a", buffering=1)

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    def say(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        print(f"[gpu {self.name} {stamp}] {line}", flush=True)
        self.log_file.write(f"[gpu {self.name} {stamp}] {line}\n")

    def note(self, line: str) -> None:
        """A line of summary.md (and the log)."""
        with (self.out / "summary.md").open("a") as summary:
            summary.write(line + "\n")
        self.say(line)

    def run_step(
        self, name: str, command: list[str], limit_s: float, output: Path | None = None, env: dict | None = None
    ) -> str:
        """Run `command` for at most `limit_s` seconds (SIGTERM, then SIGKILL after the grace);
        its output goes to `output` (else the log). Returns and records its status: done,
        failed (exit N), stopped at its limit, or skipped."""
        record = {"step": name, "limit_s": round(limit_s, 1), "command": " ".join(command)}
        if limit_s < 1:
            record.update(status="skipped", seconds=0)
            self.steps.append(record)
            self.note(f"- {name}: skipped (the part's clock left {max(limit_s, 0):.0f} s)")
            self.ship()
            return "skipped"
        self.say(f"{name} (limit {limit_s:.0f} s): {' '.join(command)}")
        self.log_file.flush()
        sink = output.open("w") if output else self.log_file
        started = time.monotonic()
        # Its own process group (not session): the group gets the signals at the limit, and
        # whatever ends this script's session (the device tool's timeout) ends the step too.
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, process_group=0, env=env)
        stopped = False
        try:
            while process.poll() is None:
                left = limit_s - (time.monotonic() - started)
                if left <= 0:
                    stopped = True
                    self._stop(process)
                    break
                try:
                    process.wait(timeout=min(self.ship_every_s, left))
                except subprocess.TimeoutExpired:
                    self.ship()
        except BaseException:  # this script stopped (SIGTERM, Ctrl-C): stop the step, keep its records
            self.say(f"{name}: this script was stopped; stopping the step and keeping what it wrote")
            self._stop(process)
            self.ship()
            raise
        if output:
            sink.close()
        seconds = time.monotonic() - started
        code = process.returncode
        status = "stopped at its limit" if stopped else "done" if code == 0 else f"failed (exit {code})"
        record.update(status=status, seconds=round(seconds, 1), exit_code=code)
        self.steps.append(record)
        if status != "done":
            self.note(f"- {name}: {status} after {seconds:.0f} s (limit {limit_s:.0f} s)")
        else:
            self.say(f"{name} done in {seconds:.0f} s")
        self.ship()
        return status

    def _stop(self, process: subprocess.Popen) -> None:
        self.say(f"time is up: SIGTERM to process group {process.pid}")
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            self.say(f"still running {self.grace_s:.0f} s later: SIGKILL")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()
        try:  # what the step left behind in its group (worker processes)
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def ship(self) -> None:
        """Copy the runs' records into the out folder, write steps.json, and pack it all into
        `ship_to` (atomically: a kill mid-pack leaves the previous archive)."""
        for name, run in self.runs.items():
            copy_records(run, self.out / name)
        (self.out / "steps.json").write_text(json.dumps(self.steps, indent=2) + "\n")
        self.log_file.flush()
        if self.ship_to is None or self.ship_to.resolve() == self.out.resolve():
            return
        self.ship_to.mkdir(parents=True, exist_ok=True)
        partial = self.ship_to / f".{self.name}.tgz.partial"
        with tarfile.open(partial, "w:gz") as archive:
            archive.add(self.out, arcname=self.out.name)
        if partial.stat().st_size > SHIP_LIMIT_BYTES:  # the device returns no file over 16 MiB: the events go
            with tarfile.open(partial, "w:gz") as archive:
                archive.add(self.out, arcname=self.out.name, filter=without_events)
            if not self.events_left_out:
                self.events_left_out = True
                self.note(f"- {self.name}.tgz: over {SHIP_LIMIT_BYTES >> 20} MiB with the TensorBoard events; "
                          "packed without them")
        os.replace(partial, self.ship_to / f"{self.name}.tgz")
        for file, shipped in (("summary.md", "summary.md"), ("log.txt", "log.txt")):
            if (self.out / file).is_file():
                shutil.copyfile(self.out / file, self.ship_to / f"{self.name}_{shipped}")


def without_events(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "/tensorboard" in info.name else info


def copy_records(run: Path, to: Path) -> None:
    """A run folder's records (no checkpoints) into `to`: RECORD_FILES, the TensorBoard event
    files under `tensorboard/`, and `.hydra`'s config and overrides."""
    if not run.is_dir():
        return
    to.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (run / name).is_file():
            shutil.copyfile(run / name, to / name)
    for name in HYDRA_FILES:
        if (run / ".hydra" / name).is_file():
            shutil.copyfile(run / ".hydra" / name, to / name)
    for events in (run / "tensorboard").rglob("events.out.tfevents.*") if (run / "tensorboard").is_dir() else []:
        target = to / "tensorboard" / events.relative_to(run / "tensorboard")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(events, target)


def python_command(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", module, *arguments]
