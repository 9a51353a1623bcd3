"""Arm statistics: jobs grouped into arms by their overrides, each arm's mean and spread over
seeds, and Welch's t-test between two arms with the verdict it supports.

An *arm* is one setting of a sweep run over several seeds. Arms are compared by Welch's
t-test because seeds of different settings need not spread alike, and with three seeds an
arm the normal approximation ("beyond two standard errors, about 95 %") is far too generous:
with 4 degrees of freedom a difference of 2 standard errors is real only at about 88 %.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from scipy import stats as scipy_stats

from nerf_lab.runs.records import JobResult

SEED_KEY = "seed"
# A difference is called real when Welch's test rejects "no difference" at this confidence.
CONFIDENCE = 0.95
# A run is stuck in the white minimum when it scores within this much (dB) of an image of
# nothing but the background.
WHITE_MINIMUM_MARGIN = 1.0
# Overrides that change how a run is run, not what it learns: not part of an arm's name.
RUN_ONLY_KEYS = ("ckpt_path", "hydra", "trainer.enable_progress_bar", "trainer.enable_model_summary")


def blank_image_psnr(job: JobResult) -> float | None:
    """The test PSNR of an image of nothing but the background (the white-minimum floor):
    `test/psnr_blank_image`, or `test/psnr_background`, the name some stored runs' records use."""
    for key in ("test/psnr_blank_image", "test/psnr_background"):
        if isinstance(job.metrics.get(key), (int, float)):
            return float(job.metrics[key])
    return None


@dataclass
class MeanStd:
    """Mean and sample standard deviation (n − 1) of `n` values; None where undefined."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStd:
        if not values:
            return cls(None, None, 0)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclass
class Arm:
    name: str
    jobs: list[JobResult] = field(default_factory=list)

    @property
    def completed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status == "completed"]

    def values(self, key: str, jobs: list[JobResult] | None = None) -> list[float]:
        """The completed runs' values of `key` (or those of `jobs`)."""
        jobs = self.completed if jobs is None else jobs
        return [float(job.metrics[key]) for job in jobs if isinstance(job.metrics.get(key), (int, float))]

    @property
    def stuck(self) -> list[JobResult]:
        """Completed runs no better than the background alone: the white local minimum."""
        return [
            job
            for job in self.completed
            if (blank := blank_image_psnr(job)) is not None
            and job.metrics.get("test/psnr", math.inf) <= blank + WHITE_MINIMUM_MARGIN
        ]

    @property
    def trained(self) -> list[JobResult]:
        return [job for job in self.completed if job not in self.stuck]

    def mean_std(self, key: str) -> MeanStd:
        return MeanStd.of(self.values(key))


def canonical_overrides(job: JobResult, seed_key: str = SEED_KEY) -> list[str]:
    """A job's overrides that define what it trains, seed excluded, each as `key=value` with
    the value as Hydra parses it (so `x=False` and `x=false` are one arm). A run resumed in
    its own folder records the resume's command line; its `ckpt_path` and `hydra.*` do not
    make it another arm."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    canonical = []
    for override in OverridesParser.create().parse_overrides(job.overrides):
        key = override.key_or_group
        if key == seed_key or any(key == k or key.startswith(k + ".") for k in RUN_ONLY_KEYS):
            continue
        value = override.value()
        text = str(value).lower() if isinstance(value, bool) else str(value)
        canonical.append(f"{override.get_key_element()}={text}")
    return sorted(canonical)


def group_into_arms(jobs: list[JobResult], seed_key: str = SEED_KEY) -> tuple[list[Arm], list[str]]:
    """Arms keyed by each job's overrides without the seed, minus overrides shared by all."""
    overrides = {job.path: canonical_overrides(job, seed_key) for job in jobs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if jobs else set()
    arms: dict[str, Arm] = {}
    for job in jobs:
        name = " ".join(o for o in overrides[job.path] if o not in shared) or "(all jobs)"
        arms.setdefault(name, Arm(name)).jobs.append(job)
    return list(arms.values()), sorted(shared)


@dataclass
class TTest:
    """Welch's t-test of `difference` = mean(other) − mean(best); the test's fields are None
    where it cannot be made (an arm with one value, or no spread in either arm)."""

    difference: float
    n_best: int
    n_other: int
    standard_error: float | None = None
    t: float | None = None
    df: float | None = None
    p_value: float | None = None
    confidence: float = CONFIDENCE
    low: float | None = None  # the confidence interval of `difference`
    high: float | None = None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < 1 - self.confidence


def welch(best: MeanStd, other: MeanStd, confidence: float = CONFIDENCE) -> TTest:
    """Welch's unequal-variances t-test of other − best from each arm's mean, std and n.

        SE² = s_b²/n_b + s_o²/n_o,   t = (x̄_o − x̄_b) / SE,
        ν = SE⁴ / ((s_b²/n_b)²/(n_b − 1) + (s_o²/n_o)²/(n_o − 1))   (Welch–Satterthwaite),
        p = 2 P(T_ν > |t|),   interval: x̄_o − x̄_b ± t_ν,(1+c)/2 · SE.

    Example: best 1, 2, 3 (x̄ 2, s² 1) and other 3, 5, 7 (x̄ 5, s² 4): SE² = 1/3 + 4/3 = 5/3,
    t = 3/√(5/3) = 2.324, ν = (25/9) / ((1/9)/2 + (16/9)/2) = 50/17 = 2.94, p = 0.104 (so
    not real at 95 %, though 3 > 2 SE). t and p come from scipy's `ttest_ind_from_stats`.
    """
    assert best.mean is not None and other.mean is not None, "an arm without values"
    result = TTest(other.mean - best.mean, best.n, other.n, confidence=confidence)
    if best.std is None or other.std is None:
        return result
    share_best, share_other = best.std**2 / best.n, other.std**2 / other.n
    error = math.sqrt(share_best + share_other)
    if error == 0:  # every run of both arms scored alike: nothing to test against
        return result
    t, p = scipy_stats.ttest_ind_from_stats(other.mean, other.std, other.n, best.mean, best.std, best.n, equal_var=False)
    df = error**4 / (share_best**2 / (best.n - 1) + share_other**2 / (other.n - 1))
    half_width = float(scipy_stats.t.ppf((1 + confidence) / 2, df)) * error
    result.standard_error, result.t, result.df, result.p_value = error, float(t), df, float(p)
    result.low, result.high = result.difference - half_width, result.difference + half_width
    return result


def describe(test: TTest, best_name: str, other_name: str, unit: str) -> str:
    """The verdict a test supports, with the confidence it gives."""
    if test.p_value is None:
        if min(test.n_best, test.n_other) < 2:
            return "one seed an arm: the spread is unknown, so the difference cannot be told from noise"
        return f"{test.difference:+.2f} {unit}, and every run of both arms scored alike: no spread to test against"
    level = f"{test.confidence * 100:g} %"
    p = "p < 0.001" if test.p_value < 0.001 else f"p = {test.p_value:.3f}"
    numbers = f"Welch's t-test: t = {test.t:.2f}, {test.df:.1f} degrees of freedom, {p}"
    if test.significant:
        winner, gap, low, high = (best_name, -test.difference, -test.high, -test.low)
        if test.difference > 0:
            winner, gap, low, high = other_name, test.difference, test.low, test.high
        return f"{winner} is better by {gap:.2f} {unit} at {level} confidence ({numbers}; {level} interval {low:.2f} to {high:.2f} {unit})"
    return (
        f"no clear difference at {level} confidence: {test.difference:+.2f} {unit}, "
        f"{level} interval {test.low:+.2f} to {test.high:+.2f} {unit} ({numbers})"
    )


@dataclass
class Comparison:
    """An arm against the best arm in `metric`: the test on all completed runs and, where a
    run fell into the white minimum, again on the runs that trained; `verdict` says both."""

    arm: str
    against: str
    metric: str
    all_runs: TTest
    trained: TTest | None
    white_minimum: list[str]
    verdict: str


def compare(best: Arm, other: Arm, key: str = "test/psnr", unit: str = "dB", confidence: float = CONFIDENCE) -> Comparison:
    """Welch's test of `other` against `best` in `key`, and the verdict it supports.

    Runs stuck in the white minimum are named, and the arms are compared a second time on the
    runs that trained: a stuck seed is a finding in itself, and its spread would otherwise hide
    any other difference."""
    all_runs = welch(best.mean_std(key), other.mean_std(key), confidence)
    verdict = describe(all_runs, best.name, other.name, unit)
    stuck = [f"{len(arm.stuck)} of {len(arm.completed)} runs of {arm.name} fell into the white minimum" for arm in (other, best) if arm.stuck]
    trained = None
    if stuck:
        trained_best, trained_other = MeanStd.of(best.values(key, best.trained)), MeanStd.of(other.values(key, other.trained))
        if trained_best.n and trained_other.n:
            trained = welch(trained_best, trained_other, confidence)
            verdict = f"{'; '.join(stuck)}. All runs: {verdict}. Runs that trained: {describe(trained, best.name, other.name, unit)}"
        else:
            verdict = f"{'; '.join(stuck)}. All runs: {verdict}"
    return Comparison(other.name, best.name, key, all_runs, trained, stuck, verdict)
