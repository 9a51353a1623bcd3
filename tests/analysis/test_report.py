"""The report's statistics and its two renderings, without a sweep: Welch's t-test against
closed forms and scipy's own test on samples, verdicts, and report.md against report.json."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from nerf_lab.analysis.curves import EARLY_KEY
from nerf_lab.analysis.report import render_markdown
from nerf_lab.analysis.stats import Arm, MeanStd, compare, group_into_arms, welch
from nerf_lab.analysis.summary import COLUMNS, TIME_TO_PSNR_KEYS, from_json, summarise, to_json
from nerf_lab.runs.records import JobResult


def test_welch_on_the_docstring_example_matches_the_closed_form():
    # best 1, 2, 3 (mean 2, s² 1), other 3, 5, 7 (mean 5, s² 4): SE² = 1/3 + 4/3 = 5/3.
    test = welch(MeanStd.of([1.0, 2.0, 3.0]), MeanStd.of([3.0, 5.0, 7.0]))
    assert test.difference == 3.0
    assert test.standard_error == pytest.approx(math.sqrt(5 / 3))
    assert test.t == pytest.approx(3 / math.sqrt(5 / 3))
    # Welch–Satterthwaite: (5/3)² / ((1/3)²/2 + (4/3)²/2) = 50/17.
    assert test.df == pytest.approx(50 / 17)
    assert test.p_value == pytest.approx(0.1045, abs=5e-4)
    assert not test.significant  # 3 > 2 standard errors (2.58), yet not real at 95 %


@pytest.mark.parametrize(
    ("other", "df", "p_of_t"),
    [
        # One arm without spread: ν = n_other − 1. For ν = 1 the t distribution is Cauchy's,
        # P(|T| > t) = 1 − (2/π) atan t; for ν = 2, P(|T| > t) = 1 − t / √(2 + t²).
        ([1.0, 3.0], 1, lambda t: 1 - 2 / math.pi * math.atan(t)),
        ([1.0, 2.0, 3.0], 2, lambda t: 1 - t / math.sqrt(2 + t * t)),
    ],
)
def test_welch_p_values_match_the_t_distributions_closed_forms(other, df, p_of_t):
    test = welch(MeanStd.of([4.0, 4.0, 4.0]), MeanStd.of(other))
    assert test.df == pytest.approx(df)
    assert test.t == pytest.approx((np.mean(other) - 4) / (np.std(other, ddof=1) / math.sqrt(len(other))))
    assert test.p_value == pytest.approx(p_of_t(abs(test.t)))


def test_welch_with_equal_spreads_and_sizes_has_students_degrees_of_freedom():
    test = welch(MeanStd(10.0, 0.5, 3), MeanStd(9.0, 0.5, 3))
    assert test.df == pytest.approx(4)  # 2 (n − 1)


def test_welch_agrees_with_scipys_test_on_samples():
    rng = np.random.default_rng(0)
    for n_best, n_other in [(3, 3), (2, 5), (6, 4)]:
        best, other = rng.normal(25, 0.3, n_best), rng.normal(24.6, 1.2, n_other)
        expected = scipy_stats.ttest_ind(other, best, equal_var=False)
        test = welch(MeanStd.of(best.tolist()), MeanStd.of(other.tolist()))
        assert (test.t, test.p_value, test.df) == pytest.approx((expected.statistic, expected.pvalue, expected.df))
        interval = expected.confidence_interval(0.95)
        assert (test.low, test.high) == pytest.approx((interval.low, interval.high))


def arm(name, values, background=None):
    jobs = []
    for seed, value in enumerate(values):
        metrics = {"test/psnr": value, EARLY_KEY: value - 3}
        if background is not None:
            metrics["test/psnr_blank_image"] = background
        jobs.append(JobResult(Path(f"{name}_{seed}"), [f"x={name}", f"seed={seed}"], "completed", metrics))
    return Arm(f"x={name}", jobs)


def test_two_standard_errors_with_three_seeds_is_not_called_real():
    # The same spread in both arms, means 2.5 standard errors apart: 4 degrees of freedom,
    # p = 0.067. A rule of "beyond 2 standard errors" (taken as about 95 %) would call this real.
    best = arm("a", [10.0, 11.0, 12.0])
    other = arm("b", [11.0 - 2.5 * math.sqrt(2 / 3) + d for d in (-1.0, 0.0, 1.0)])
    comparison = compare(best, other)
    assert comparison.all_runs.p_value == pytest.approx(2 * scipy_stats.t.sf(2.5, 4))
    assert comparison.verdict.startswith("no clear difference at 95 % confidence: -2.04 dB")
    assert "4.0 degrees of freedom, p = 0.067" in comparison.verdict


def test_a_clear_difference_names_the_winner_with_its_interval():
    comparison = compare(arm("a", [25.0, 25.1, 24.9]), arm("b", [23.0, 23.2, 22.8]))
    test = comparison.all_runs
    assert test.significant and test.difference == pytest.approx(-2.0)
    assert comparison.verdict.startswith("x=a is better by 2.00 dB at 95 % confidence (Welch's t-test: t = -15.49")
    assert f"95 % interval {-test.high:.2f} to {-test.low:.2f} dB" in comparison.verdict
    assert comparison.trained is None


def test_a_stuck_seed_is_named_and_the_runs_that_trained_are_compared_apart():
    best = arm("a", [25.0, 25.1, 24.9], background=9.0)
    other = arm("b", [23.0, 23.2, 9.5], background=9.0)  # the third run predicts empty space
    comparison = compare(best, other)
    assert comparison.white_minimum == ["1 of 3 runs of x=b fell into the white minimum"]
    assert not comparison.all_runs.significant
    assert comparison.trained.n_other == 2 and comparison.trained.significant
    assert "All runs: no clear difference" in comparison.verdict
    assert "Runs that trained: x=a is better by 1.90 dB" in comparison.verdict


def test_one_seed_an_arm_cannot_be_tested():
    comparison = compare(arm("a", [25.0]), arm("b", [24.0, 24.5]))
    assert comparison.all_runs.p_value is None
    assert comparison.verdict.startswith("one seed an arm")


def sweep_summary():
    jobs = [
        *arm("a", [25.0, 25.1, 24.9], background=9.0).jobs,
        *arm("b", [23.0, 23.2, 9.5], background=9.0).jobs,
        *arm("c", [24.8, 25.2], background=9.0).jobs,
        JobResult(Path("c_2"), ["x=c", "seed=2"], "failed", error="ConfigError: x=c is not allowed"),
    ]
    for number, job in enumerate(jobs):
        if job.status == "completed":
            job.metrics.update({"val/psnr_best": 20.0 + number / 7, "steps": 100, "parameters": 1234})
    arms, shared = group_into_arms(jobs)
    return summarise(arms, shared, 50, title="toy", sweep="sweep", figures=["curves.png"])


def test_the_report_json_holds_everything_the_markdown_says():
    summary = sweep_summary()
    markdown = render_markdown(summary)
    data = json.loads(json.dumps(to_json(summary)))
    # Read back from JSON text, the tree is the same and renders the same report, byte for byte.
    assert from_json(data) == summary
    assert render_markdown(from_json(data)) == markdown


def test_the_markdown_shows_the_jsons_numbers_and_verdicts():
    summary = sweep_summary()
    markdown, data = render_markdown(summary), to_json(summary)
    assert data["best_arm"] == "x=a" and "best arm: x=a" in markdown
    for comparison in data["comparisons"] + data["early"]["comparisons"]:
        assert f"- **{comparison['arm']}**: {comparison['verdict']}" in markdown
        assert "degrees of freedom" in comparison["verdict"] and comparison["all_runs"]["df"] > 0
    for arm_data in data["arms"]:
        test_psnr = arm_data["stats"]["test/psnr"]
        cell = f"{test_psnr['mean']:.2f}" + ("" if test_psnr["std"] is None else f" ± {test_psnr['std']:.2f}")
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {arm_data['name']} "))
        assert [c.strip() for c in row.split("|")[1:-1]][3] == cell  # arm, seeds done, best val, test PSNR
    run_rows = [line for line in markdown.split("## Runs")[1].splitlines() if line.startswith("| x=")]
    assert len(run_rows) == len(data["runs"]) == 9
    for row, run in zip(run_rows, data["runs"]):
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[0] == run["arm"] and cells[5] == run["state"]  # arm, seed, 3 scores, state
        assert cells[3] == (f"{run['metrics']['test/psnr']:.2f}" if "test/psnr" in run["metrics"] else "–")
    failed = [run for run in data["runs"] if run["state"] == "failed"]
    assert len(failed) == 1 and f"`c_2` (x=c seed=2): failed — {failed[0]['error']}" in markdown
    assert re.search(r"\| x=c +\| 2/3 ", markdown)
    assert set(data["arms"][0]["stats"]) == {key for key, _, _ in COLUMNS} | set(TIME_TO_PSNR_KEYS)


def test_a_reference_arm_is_what_every_arm_is_compared_with():
    """`--reference table2=complete`: the complete model is the arm every row is tested against,
    even where a row scores higher; a name that is no arm is refused, naming the arms."""
    from nerf_lab.errors import NerfLabError

    complete, better, worse = arm("complete", [10.0, 11.0, 12.0]), arm("more", [14.0, 15.0, 16.0]), arm("less", [7.0, 8.0, 9.0])
    summary = summarise([complete, better, worse], [], None, title="t", sweep="s", figures=[], reference="x=complete")
    assert summary.best_arm == "x=complete" and summary.reference == "x=complete"
    by_arm = {c.arm: c for c in summary.comparisons}
    assert set(by_arm) == {"x=more", "x=less"}
    # differences, other − reference: +4 and −3 dB, both with s² = 1 a side: SE = √(2/3)
    assert by_arm["x=more"].all_runs.difference == pytest.approx(4.0)
    assert by_arm["x=less"].all_runs.difference == pytest.approx(-3.0)
    assert by_arm["x=more"].verdict.startswith("x=more is better by 4.00 dB")
    assert by_arm["x=less"].verdict.startswith("x=complete is better by 3.00 dB")
    markdown = render_markdown(summary)
    assert "## Verdicts (test PSNR, against the reference arm: x=complete)" in markdown
    assert from_json(json.loads(json.dumps(to_json(summary)))) == summary
    assert summarise([complete, better], [], None, title="t", sweep="s", figures=[]).best_arm == "x=more"
    with pytest.raises(NerfLabError, match=r"--reference x=full: no arm of that name .* x=complete, x=more"):
        summarise([complete, better], [], None, title="t", sweep="s", figures=[], reference="x=full")


def test_lpips_stands_beside_psnr_and_ssim_where_the_runs_have_it():
    without = arm("a", [10.0, 11.0, 12.0])
    assert "LPIPS" not in render_markdown(summarise([without], [], None, title="t", sweep="s", figures=[]))
    scored = arm("b", [10.0, 11.0, 12.0])
    for job, value in zip(scored.jobs, [0.1, 0.2, 0.3]):
        job.metrics["test/lpips"] = value
    markdown = render_markdown(summarise([scored, without], [], None, title="t", sweep="s", figures=[]))
    header = next(line for line in markdown.splitlines() if line.startswith("| arm ") and "seeds done" in line)
    assert header.index("test SSIM") < header.index("test LPIPS (VGG)") < header.index("steps")
    row = next(line for line in markdown.splitlines() if line.startswith("| x=b ") and "3/3" in line)
    assert "0.200 ± 0.100" in row  # mean and standard deviation of 0.1, 0.2, 0.3


def test_time_to_a_psnr_is_the_first_validation_at_or_above_it():
    from nerf_lab.analysis.curves import time_to_psnr

    # the docstring's example: (step, seconds, val PSNR)
    curve = np.array([[100, 40.0, 19.1], [200, 80.0, 24.0], [300, 120.0, 26.2], [400, 160.0, 25.0]])
    assert time_to_psnr(curve) == {20.0: 80.0, 25.0: 120.0, 28.0: None, 30.0: None}
    assert time_to_psnr(curve, [19.1, 24.0]) == {19.1: 40.0, 24.0: 80.0}  # "reaches" includes equal
    assert time_to_psnr(np.zeros((0, 3)), [20.0]) == {20.0: None}


def test_the_report_tables_time_to_a_psnr_for_every_arm():
    from nerf_lab.analysis.summary import TIME_TO_PSNR_KEYS

    jobs = arm("a", [25.0, 25.1, 24.9]).jobs + arm("b", [23.0, 23.2, 23.1]).jobs
    # arm a: 20 dB at 30, 50 and 70 s (mean 50 ± 20), 25 dB by one seed at 90 s; arm b: never 20 dB
    for job, seconds in zip(jobs[:3], (30.0, 50.0, 70.0)):
        job.metrics[TIME_TO_PSNR_KEYS[0]] = seconds
    jobs[0].metrics[TIME_TO_PSNR_KEYS[1]] = 90.0
    arms, shared = group_into_arms(jobs)
    markdown = render_markdown(summarise(arms, shared, None, title="t", sweep="s", figures=[]))
    table = markdown.split("## Time to a PSNR")[1]
    row_a = next(line for line in table.splitlines() if line.startswith("| x=a "))
    assert [c.strip() for c in row_a.split("|")[1:-1]] == ["x=a", "50 ± 20 s (3/3)", "90 s (1/3)", "–", "–"]
    row_b = next(line for line in table.splitlines() if line.startswith("| x=b "))
    assert [c.strip() for c in row_b.split("|")[1:-1]] == ["x=b", "–", "–", "–", "–"]


def test_a_single_validation_is_drawn_as_a_point(tmp_path):
    """A job with one validation: its val/psnr panel shows a point in the arm's colour (a line
    of one point draws nothing)."""
    import imageio.v3 as iio

    from nerf_lab.analysis.figures import plot_curves

    job = JobResult(Path("0_x=a"), ["x=a"], "completed", {"val/psnr": 12.0})
    curves = {job.path: {"val/psnr": np.array([[20.0, 3.0, 12.0]])}}  # (step, wall s, value)
    plot_curves([Arm("x=a", [job])], curves, tmp_path / "curves.png", tags=("val/psnr",))
    image = iio.imread(tmp_path / "curves.png")[..., :3].astype(int)
    image = image[:, image.shape[1] // 2 :]  # the panel against wall time: no legend there
    blue = np.array([0x1F, 0x77, 0xB4])  # matplotlib's first colour, the arm's
    assert (np.abs(image - blue).sum(-1) < 30).sum() > 20


def test_the_orbit_is_labelled_and_large_enough_to_see(trained_run, tmp_path):
    import imageio.v3 as iio

    from nerf_lab.analysis.figures import orbit_gif
    from nerf_lab.visuals.panels import LABEL_HEIGHT, MIN_TILE

    job = JobResult(trained_run, ["model.depth=4"], "completed", {"val/psnr": 10.0})
    assert orbit_gif([Arm("model.depth=4", [job]), Arm("model.depth=2", [job])], tmp_path / "orbit.gif", frames=2) == ["model.depth=4", "model.depth=2"]
    frames = iio.imread(tmp_path / "orbit.gif", index=None)
    # 32 px renders shown at MIN_TILE px (nearest), side by side, each under its name
    assert frames.shape[:3] == (2, LABEL_HEIGHT + MIN_TILE + 1, 2 * MIN_TILE + 4 + 2)
    assert (frames[0, :LABEL_HEIGHT, :MIN_TILE] < 100).any() and (frames[0, :LABEL_HEIGHT, MIN_TILE + 4 :] < 100).any()
