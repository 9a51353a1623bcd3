"""A run's files: how a run records that it finished or failed, and how sweeps are read back.

A run folder holds `.hydra/` (the composed config and overrides), `tensorboard/`,
`checkpoints/`, `curve.csv` (a row a validation, as it ends) and, once it completed, `metrics.json`; a run that failed has `error.txt`
instead. A folder with neither was killed (resume it from `checkpoints/last.ckpt`).
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"


def write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def record_failure(run_dir: Path, error: BaseException) -> str:
    """Write `error.txt` (the one-line reason, then the traceback); return the one line."""
    line = f"{type(error).__name__}: {error}".splitlines()[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    (run_dir / ERROR_FILE).write_text(f"{line}\n\n{details}")
    return line


@dataclass
class JobResult:
    """One job of a sweep (or one run), as read from its folder."""

    path: Path
    overrides: list[str]
    status: str  # completed | failed | incomplete
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def name(self) -> str:
        return " ".join(self.overrides) or self.path.name


def read_run(run_dir: Path) -> JobResult:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    metrics_file, error_file = run_dir / METRICS_FILE, run_dir / ERROR_FILE
    if metrics_file.is_file():
        return JobResult(run_dir, overrides or [], "completed", json.loads(metrics_file.read_text()))
    if error_file.is_file():
        return JobResult(run_dir, overrides or [], "failed", error=error_file.read_text().splitlines()[0])
    return JobResult(run_dir, overrides or [], "incomplete")


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
                job.status if job.status != "failed" else f"failed: {job.error}",
                number(m.get("val/psnr_best")),
                number(m.get("test/psnr")),
                number(m.get("test/ssim"), 3),
                str(m.get("steps", "–")),
                number(m.get("steps_per_s"), 1),
            ]
        )
    header = ["job", "overrides", "status", "best val/psnr", "test/psnr", "test/ssim", "steps", "steps/s"]
    return format_table(rows, header)
