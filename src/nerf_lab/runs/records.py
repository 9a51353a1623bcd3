"""A run's files: how a run records that it finished or failed, and how sweeps are read back.

A run folder holds one run: `.hydra/` (the composed config and overrides), `tensorboard/`,
`checkpoints/`, `curve.csv` (a row a validation, as it ends) and, once it completed,
`metrics.json`; a run that failed or was stopped has `error.txt` instead (never both), its
first line the reason. A folder with neither was killed with SIGKILL or is still running
(resume it from `checkpoints/last.ckpt`).
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nerf_lab.files import written_atomically

METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"
# A resumed run's earlier metrics, kept aside while it runs (a stop or failure from then on
# is not recorded beside a metrics.json), merged into its new metrics.json at the end.
EARLIER_METRICS_FILE = ".metrics.json.before-resume"


def write_json_atomically(path: Path, data: Any) -> None:
    """`data` as JSON in `path`, whole or not at all (`written_atomically`)."""
    with written_atomically(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def start_record(run_dir: Path) -> dict[str, Any]:
    """Before a run trains in `run_dir`: set aside the record of the run it resumes there
    (`metrics.json`, moved to `EARLIER_METRICS_FILE`; an `error.txt` removed) and return that
    run's metrics ({} for a fresh folder)."""
    earlier = run_dir / EARLIER_METRICS_FILE
    metrics_file = run_dir / METRICS_FILE
    if metrics_file.is_file():
        os.replace(metrics_file, earlier)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        metrics = json.loads(earlier.read_text()) if earlier.is_file() else {}
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def finish_record(run_dir: Path, metrics: dict[str, Any]) -> None:
    """The run completed: write `metrics.json`; the record set aside by `start_record` goes."""
    write_json_atomically(run_dir / METRICS_FILE, metrics)
    (run_dir / EARLIER_METRICS_FILE).unlink(missing_ok=True)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)


def record_failure(run_dir: Path, error: BaseException, line: str | None = None) -> str:
    """Write `error.txt`: the one-line reason first, written and flushed on its own (a few
    hundred bytes, so that it lands even where the disk is all but full), then the traceback
    where there is room. A `metrics.json` in the folder (a finished run resumed there) goes:
    the folder's record is the failure. Returns the one line. Never raises OSError: where even
    the line cannot be written, the caller still has it to print."""
    line = line or f"{type(error).__name__}: {error}".splitlines()[0]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        with open(run_dir / ERROR_FILE, "w") as file:
            file.write(f"{line}\n")
            file.flush()
            details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            try:
                file.write(f"\n{details}")
                file.flush()
            except OSError:
                pass
    except OSError:
        pass
    return line


@dataclass
class JobResult:
    """One job of a sweep (or one run), as read from its folder."""

    path: Path
    overrides: list[str]
    status: str  # completed | failed | interrupted | incomplete
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return " ".join(self.overrides) or self.path.name


def read_run(run_dir: Path) -> JobResult:
    """A run as its folder records it. A damaged record (an `overrides.yaml` or `metrics.json`
    that does not parse, an empty `error.txt`) is a failed job whose error names the file and
    what is wrong with it."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    metrics_file, error_file = run_dir / METRICS_FILE, run_dir / ERROR_FILE
    try:
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
        if overrides is not None and not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
            raise TypeError("expected a list of overrides")
    except (OSError, ValueError, TypeError, yaml.YAMLError) as error:
        return JobResult(run_dir, [], "failed", error=_damaged(overrides_file, error))
    overrides = overrides or []
    if error_file.is_file():
        try:
            lines = error_file.read_text(errors="replace").splitlines()
        except OSError as error:
            return JobResult(run_dir, overrides, "failed", error=_damaged(error_file, error))
        reason = lines[0] if lines and lines[0].strip() else f"{error_file} is empty: the run failed without a recorded reason (a full disk?)"
        status = "interrupted" if reason.startswith(f"{INTERRUPTED}:") else "failed"
        return JobResult(run_dir, overrides, status, error=reason)
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
            if not isinstance(metrics, dict):
                raise TypeError("expected a JSON object")
        except (OSError, ValueError, TypeError) as error:
            return JobResult(run_dir, overrides, "failed", error=_damaged(metrics_file, error))
        return JobResult(run_dir, overrides, "completed", metrics)
    return JobResult(run_dir, overrides, "incomplete")


# The first word of a stopped run's error.txt (the exception's name, as record_failure writes it).
INTERRUPTED = "RunInterrupted"


def _damaged(path: Path, error: BaseException) -> str:
    reason = f"{type(error).__name__}: {error}".splitlines()[0]
    return f"{path} is damaged ({reason})"


def read_sweep(sweep_dir: Path) -> list[JobResult]:
    """Every job folder of a sweep (a folder with `.hydra/`), in job order."""
    jobs = [path for path in Path(sweep_dir).iterdir() if (path / ".hydra").is_dir()]

    def job_number(path: Path) -> tuple[int, str]:
        prefix = path.name.split("_", 1)[0]
        return (int(prefix), path.name) if prefix.isdigit() else (1 << 30, path.name)

    return [read_run(path) for path in sorted(jobs, key=job_number)]


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def sweep_table(jobs: list[JobResult]) -> str:
    def number(value: Any, digits: int = 2) -> str:
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"

    rows = []
    for job in jobs:
        m = job.metrics
        rows.append(
            [
                job.path.name.split("_", 1)[0],
                job.name,
                job.status if job.status not in ("failed", "interrupted") else f"{job.status}: {job.error.split('; resume with:')[0]}",
                number(m.get("val/psnr_best")),
                number(m.get("test/psnr")),
                number(m.get("test/ssim"), 3),
                str(m.get("steps", "–")),
                number(m.get("steps_per_s"), 1),
            ]
        )
    header = ["job", "overrides", "status", "best val/psnr", "test/psnr", "test/ssim", "steps", "steps/s"]
    return format_table(rows, header)
