"""Curves from a sweep's TensorBoard event files: read once a report, a resumed run spliced
into one curve, and each arm's val/psnr at the first validation all runs reached."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nerf_lab.runs.records import JobResult

# The scalars a report plots, and {job folder: {tag: curve}} as read once for a whole report.
CURVE_TAGS = ("val/psnr", "train/psnr")
Curves = dict[Path, dict[str, np.ndarray]]
# val/psnr at the first validation step that every run reached: how fast the arms start.
EARLY_KEY = "val/psnr_early"


def read_all_curves(jobs: list[JobResult], tags: Sequence[str] = CURVE_TAGS) -> Curves:
    """Every completed job's curves, read from its event files once."""
    return {job.path: read_curves(job, tags) for job in jobs if job.status == "completed"}


def read_curves(job: JobResult, tags: Sequence[str]) -> dict[str, np.ndarray]:
    """{tag: array of (step, training seconds since the run's first event, value)} from a job's
    events; a run resumed from a checkpoint is spliced into one curve (see `splice_resumed`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(job.path / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    available = set(accumulator.Tags().get("scalars", []))
    raw = {
        tag: np.array(sorted((e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)))[:, [1, 0, 2]]
        for tag in tags
        if tag in available
    }
    if not raw:
        return {}
    # The resumes and the time lost to each, from the densest curve (train/* is logged every few steps).
    densest = max(raw.values(), key=len)
    _, gaps = splice_resumed(densest)
    curves = {}
    for tag, points in raw.items():
        curves[tag] = remove_gaps(splice_resumed(points)[0], gaps)
    start = min(curve[0, 1] for curve in curves.values())
    for curve in curves.values():
        curve[:, 1] -= start
    return curves


def splice_resumed(points: np.ndarray) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """One curve from (step, wall time, value) rows in the order they were written, where a run
    killed and resumed from an earlier checkpoint logs some steps twice.

    The points of the steps that were redone are dropped from the first attempt, and the
    time between the kill and the resume is taken out: returns the kept rows and, per resume,
    (the wall time it resumed at, the seconds lost), the loss being the wall time of the first
    step logged after the resume minus that of the same step (interpolated) before the kill."""
    kept: list[np.ndarray] = []
    gaps = []
    for row in points:
        if kept and row[0] <= kept[-1][0]:
            before = np.array(kept)
            lost = row[1] - float(np.interp(row[0], before[:, 0], before[:, 1]))
            gaps.append((float(row[1]), lost))
            kept = [k for k in kept if k[0] < row[0]]
        kept.append(row.copy())
    return np.array(kept), gaps


def remove_gaps(points: np.ndarray, gaps: list[tuple[float, float]]) -> np.ndarray:
    """`points` with the time lost to each resume (from `splice_resumed`) taken out of the
    wall times logged after it."""
    shifted = points.copy()
    for resumed_at, lost in gaps:
        shifted[points[:, 1] >= resumed_at, 1] -= lost
    return shifted


def add_early_val_psnr(jobs: list[JobResult], curves: Curves) -> int | None:
    """Store in each completed job's metrics (as `EARLY_KEY`) its val/psnr at the first
    validation step that all of them logged, and return that step (None if they share none).

    Final scores say where the arms end; this says how fast they start, which is what claims
    such as "converges faster" are about."""
    val_curves = {path: of_job["val/psnr"] for path, of_job in curves.items() if "val/psnr" in of_job}
    if not val_curves:
        return None
    common = set.intersection(*({int(step) for step in curve[:, 0]} for curve in val_curves.values()))
    if not common:
        return None
    step = min(common)
    for job in jobs:
        if job.path in val_curves:
            curve = val_curves[job.path]
            job.metrics[EARLY_KEY] = float(curve[curve[:, 0] == step][0, 2])
    return step


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of the same length, the ends padded with the end values (zero
    padding would drag the first and last points towards 0)."""
    window = max(1, min(window, len(values)) // 2 * 2 + 1)  # odd, at most the length
    padded = np.pad(values, window // 2, mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid")


# The PSNRs (dB) whose first crossing a report and the bench give: "time to a PSNR".
PSNR_MILESTONES = (20.0, 25.0, 28.0, 30.0)


def time_to_psnr_key(milestone: float) -> str:
    """The metrics key of the seconds a run took to reach `milestone` dB: `time_to_psnr/25`."""
    return f"time_to_psnr/{milestone:g}"


def time_to_psnr(
    curve: np.ndarray, milestones: Sequence[float] = PSNR_MILESTONES
) -> dict[float, float | None]:
    """For each PSNR in `milestones`, the seconds (column 1 of `curve`, rows (step, seconds,
    val PSNR) in step order) of the first validation whose PSNR is at least that, or None if
    none is. No interpolation: the answer is known to one validation interval.

    E.g. rows (100, 40 s, 19.1), (200, 80 s, 24.0), (300, 120 s, 26.2) give
    {20: 80, 25: 120, 28: None, 30: None}."""
    result: dict[float, float | None] = {}
    for milestone in milestones:
        reached = curve[curve[:, 2] >= milestone] if len(curve) else curve
        result[milestone] = float(reached[0, 1]) if len(reached) else None
    return result


def read_curve_csv(path: Path) -> np.ndarray:
    """(step, wall_s, val_psnr) rows of a run's `curve.csv` (written by `ValidationCurveCSV`:
    seconds since the fit started, validations included), in the order written."""
    import csv

    with Path(path).open(newline="") as file:
        rows = [(float(r["step"]), float(r["wall_s"]), float(r["val_psnr"])) for r in csv.DictReader(file)]
    return np.array(rows, dtype=float).reshape(-1, 3)


def add_time_to_psnr(jobs: list[JobResult], curves: Curves, milestones: Sequence[float] = PSNR_MILESTONES) -> None:
    """Store in each completed job's metrics the seconds its `val/psnr` curve (seconds since
    the run's first event, as the report's curves against wall time) took to reach each of
    `milestones` (`time_to_psnr_key`); a milestone not reached is left out."""
    for job in jobs:
        curve = curves.get(job.path, {}).get("val/psnr")
        if curve is None:
            continue
        for milestone, seconds in time_to_psnr(curve, milestones).items():
            if seconds is not None:
                job.metrics[time_to_psnr_key(milestone)] = seconds
