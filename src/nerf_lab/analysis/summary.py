"""What a report says, as one tree of dataclasses: the arms' statistics, every run, the
verdicts. `report.md` and `report.json` are both rendered from it (`render_markdown`,
`to_json`), and `from_json` reads a `report.json` back into the same tree, so a report can be
re-rendered from its JSON alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nerf_lab.analysis.curves import EARLY_KEY, PSNR_MILESTONES, time_to_psnr_key
from nerf_lab.errors import NerfLabError
from nerf_lab.analysis.stats import (
    CONFIDENCE,
    SEED_KEY,
    WHITE_MINIMUM_MARGIN,
    Arm,
    Comparison,
    MeanStd,
    TTest,
    compare,
)

# (metrics.json key, column title, decimals): the arm table; the run table shows the first three.
COLUMNS = [
    ("val/psnr_best", "best val PSNR (dB)", 2),
    ("test/psnr", "test PSNR (dB)", 2),
    ("test/ssim", "test SSIM", 3),
    ("test/lpips", "test LPIPS (VGG)", 3),  # shown only where a run has it (its weights were on the machine)
    ("steps", "steps", 0),
    ("train_time_s", "train time (s)", 0),
    ("steps_per_s", "steps/s", 2),
    ("parameters", "parameters", 0),
]
RUN_COLUMNS = COLUMNS[:4]
OPTIONAL_COLUMNS = ("test/lpips",)
# Seconds to each PSNR milestone (`add_time_to_psnr`): the report's "time to a PSNR" table.
TIME_TO_PSNR_KEYS = [time_to_psnr_key(milestone) for milestone in PSNR_MILESTONES]


@dataclass
class RunSummary:
    job: str  # the job's folder name
    arm: str
    seed: str | None
    overrides: str
    state: str  # completed | white minimum | failed | incomplete
    metrics: dict[str, float]  # the run's values of COLUMNS and EARLY_KEY that it has
    error: str = ""


@dataclass
class ArmSummary:
    name: str
    jobs: list[str]
    completed: int
    white_minimum: list[str]
    stats: dict[str, MeanStd]  # COLUMNS and TIME_TO_PSNR_KEYS key: over the completed runs (that reached it)


@dataclass
class EarlySummary:
    """val/psnr at the first validation step every run logged (`step`; None if none)."""

    step: int | None
    best_arm: str | None
    arms: dict[str, MeanStd]
    comparisons: list[Comparison]


@dataclass
class Summary:
    title: str
    sweep: str
    shared_overrides: list[str]
    arms: list[ArmSummary]
    runs: list[RunSummary]
    best_arm: str | None  # the arm every other is compared with: the reference, else the best mean test PSNR
    comparisons: list[Comparison]
    early: EarlySummary
    figures: list[str]
    confidence: float = CONFIDENCE
    white_minimum_margin: float = WHITE_MINIMUM_MARGIN
    reference: str | None = None  # the arm named by `--reference` (then best_arm is it), else None

    @property
    def not_completed(self) -> list[RunSummary]:
        return [run for run in self.runs if run.state in ("failed", "incomplete")]


def summarise(
    arms: list[Arm],
    shared: list[str],
    early_step: int | None,
    *,
    title: str,
    sweep: str,
    figures: list[str],
    seed_key: str = SEED_KEY,
    reference: str | None = None,
) -> Summary:
    """The report's content from the arms (their jobs' metrics, `EARLY_KEY` included where
    `add_early_val_psnr` stored it): statistics, runs and Welch verdicts of every arm against
    the `reference` arm (an ablation's complete model, e.g. `table2=complete`), or when None
    against the arm with the best mean test PSNR.

    Raises `NerfLabError` when `reference` names no arm with a test PSNR (the message lists them)."""
    scored = [arm for arm in arms if arm.values("test/psnr")]
    if reference is not None:
        named = [arm for arm in scored if arm.name == reference]
        if not named:
            raise NerfLabError(
                f"--reference {reference}: no arm of that name with a test PSNR; expected one of: "
                + (", ".join(arm.name for arm in scored) or "(none)")
            )
        best = early_reference = named[0]
    else:
        best = max(scored, key=lambda arm: arm.mean_std("test/psnr").mean) if scored else None
        early_reference = None
    early_scored = [arm for arm in scored if arm.values(EARLY_KEY)] if early_step is not None else []
    if early_reference is not None and early_reference in early_scored:
        early_best: Arm | None = early_reference
    else:
        early_best = max(early_scored, key=lambda arm: arm.mean_std(EARLY_KEY).mean) if early_scored else None
    return Summary(
        title=title,
        sweep=sweep,
        shared_overrides=shared,
        arms=[
            ArmSummary(
                arm.name,
                [job.path.name for job in arm.jobs],
                len(arm.completed),
                [job.path.name for job in arm.stuck],
                {key: arm.mean_std(key) for key in [*(key for key, _, _ in COLUMNS), *TIME_TO_PSNR_KEYS]},
            )
            for arm in arms
        ],
        runs=[_run(arm, job, seed_key) for arm in arms for job in arm.jobs],
        best_arm=best.name if best else None,
        comparisons=[compare(best, arm) for arm in scored if arm is not best] if best else [],
        early=EarlySummary(
            early_step,
            early_best.name if early_best else None,
            {arm.name: arm.mean_std(EARLY_KEY) for arm in early_scored},
            [compare(early_best, arm, EARLY_KEY) for arm in early_scored if arm is not early_best] if early_best else [],
        ),
        figures=figures,
        reference=reference,
    )


def _run(arm: Arm, job: Any, seed_key: str) -> RunSummary:
    seed = next((o.split("=", 1)[1] for o in job.overrides if o.split("=", 1)[0] == seed_key), None)
    keys = [key for key, _, _ in COLUMNS] + [EARLY_KEY] + TIME_TO_PSNR_KEYS
    metrics = {key: float(job.metrics[key]) for key in keys if isinstance(job.metrics.get(key), (int, float))}
    state = "white minimum" if job in arm.stuck else job.status
    return RunSummary(job.path.name, arm.name, seed, job.name, state, metrics, job.error)


def to_json(summary: Summary) -> dict[str, Any]:
    """The tree as JSON-ready dicts and lists, field for field (unknowns are null)."""
    return dataclasses.asdict(summary)


def from_json(data: dict[str, Any]) -> Summary:
    """The inverse of `to_json`: a `report.json` read back into the tree."""

    def test(d: dict[str, Any] | None) -> TTest | None:
        return None if d is None else TTest(**d)

    def comparison(d: dict[str, Any]) -> Comparison:
        return Comparison(**{**d, "all_runs": test(d["all_runs"]), "trained": test(d["trained"])})

    def stats(d: dict[str, Any]) -> dict[str, MeanStd]:
        return {key: MeanStd(**value) for key, value in d.items()}

    early = data["early"]
    return Summary(
        **{
            **data,
            "arms": [ArmSummary(**{**arm, "stats": stats(arm["stats"])}) for arm in data["arms"]],
            "runs": [RunSummary(**run) for run in data["runs"]],
            "comparisons": [comparison(c) for c in data["comparisons"]],
            "early": EarlySummary(early["step"], early["best_arm"], stats(early["arms"]), [comparison(c) for c in early["comparisons"]]),
        }
    )
