"""A sweep's report (`python -m nerf_lab.report <sweep folder> [--out DIR]`): tables, verdicts
and figures in `report.md`, the same content in `report.json`.

Jobs are grouped into arms by their overrides, the seed set aside (and overrides every job
shares). For each arm: mean ± standard deviation over seeds of the best `val/psnr`, the test
PSNR and SSIM, steps, time, speed and size. Each arm is compared with the best arm by Welch's
t-test, and the verdict states the confidence it gives. Figures: the `val/psnr` and
`train/psnr` curves (mean and spread over seeds) against step and wall time, one test view
rendered by every arm beside the ground truth, with a depth row, and an orbit GIF of the arms
side by side.

Failed or unfinished jobs are listed as such and left out of the statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nerf_lab.analysis.curves import PSNR_MILESTONES, add_early_val_psnr, add_time_to_psnr, read_all_curves, time_to_psnr_key
from nerf_lab.analysis.figures import orbit_gif, plot_curves, render_grid
from nerf_lab.analysis.stats import Arm, MeanStd, group_into_arms
from nerf_lab.analysis.summary import COLUMNS, OPTIONAL_COLUMNS, RUN_COLUMNS, Summary, summarise, to_json
from nerf_lab.errors import NerfLabError
from nerf_lab.runs.records import format_table, read_sweep, write_json_atomically


def build_report(
    sweep_dir: Path, out_dir: Path, title: str | None = None, render: bool = True, orbit: bool = True,
    reference: str | None = None,
) -> dict[str, Any]:
    """Write `report.md`, `report.json` and the figures for a sweep; return the JSON. Verdicts
    are against the `reference` arm when given (e.g. `table2=complete`), else the best arm."""
    jobs = read_sweep(sweep_dir)
    if not jobs:
        raise NerfLabError(f"{sweep_dir} holds no job folders (folders with .hydra/): expected a sweep's folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    arms, shared = group_into_arms(jobs)
    curves = read_all_curves(jobs)
    early_step = add_early_val_psnr(jobs, curves)
    add_time_to_psnr(jobs, curves)
    summarise(arms, shared, early_step, title="", sweep="", figures=[], reference=reference)  # a wrong --reference fails before any figure
    figures = draw_figures([arm for arm in arms if arm.completed], curves, out_dir, render, orbit)
    summary = summarise(
        arms, shared, early_step, title=title or sweep_dir.name, sweep=str(sweep_dir), figures=figures, reference=reference
    )
    (out_dir / "report.md").write_text(render_markdown(summary))
    data = to_json(summary)
    write_json_atomically(out_dir / "report.json", data)
    return data


def draw_figures(arms: list[Arm], curves: Any, out_dir: Path, render: bool, orbit: bool = True) -> list[str]:
    """The figures drawn for the arms with completed runs; returns their file names."""
    if not arms:
        return []
    plot_curves(arms, curves, out_dir / "curves.png")
    figures = ["curves.png"]
    if render and render_grid(arms, out_dir / "test_view.png"):
        figures.append("test_view.png")
    if render and orbit and orbit_gif(arms, out_dir / "orbit.gif"):
        figures.append("orbit.gif")
    return figures


def _format(stat: MeanStd, decimals: int) -> str:
    """`mean ± std` at `decimals` (thousands separated when 0), `–` where unknown."""
    if stat.mean is None:
        return "–"
    pattern = ",.0f" if decimals == 0 else f".{decimals}f"
    return f"{stat.mean:{pattern}}" if stat.std is None else f"{stat.mean:{pattern}} ± {stat.std:{pattern}}"


def _value(value: float | None, decimals: int) -> str:
    return _format(MeanStd(value, None, 1), decimals)


def time_to_psnr_table(summary: Summary) -> list[str]:
    """The report's lines "time to a PSNR": for each arm and milestone, the mean ± std of the
    seconds its runs took to first validate at that PSNR, and how many of them did."""
    rows = []
    for arm in summary.arms:
        cells = []
        for milestone in PSNR_MILESTONES:
            stat = arm.stats.get(time_to_psnr_key(milestone), MeanStd(None, None, 0))
            cells.append("–" if stat.mean is None else f"{_format(stat, 0)} s ({stat.n}/{arm.completed})")
        rows.append([arm.name, *cells])
    if not rows:
        return []
    return [
        "## Time to a PSNR (seconds of wall time to the first validation at that val PSNR)",
        "",
        "Mean ± standard deviation over the seeds that reached it (reached/completed); from the "
        "curves against wall time, validations included, known to one validation interval.",
        "",
        format_table(rows, ["arm", *[f"{m:g} dB" for m in PSNR_MILESTONES]]),
        "",
    ]


def render_markdown(summary: Summary) -> str:
    """`report.md`: every number and sentence in it is read from `summary`."""
    s = summary
    level = f"{s.confidence * 100:g} %"
    lines = [f"# {s.title}", ""]
    lines += [f"Sweep: `{s.sweep}` — {len(s.runs)} jobs, {len(s.runs) - len(s.not_completed)} completed.", ""]
    if s.shared_overrides:
        lines += ["Settings shared by every job: " + ", ".join(f"`{o}`" for o in s.shared_overrides), ""]
    unknown = MeanStd(None, None, 0)
    # A column no run has (LPIPS without its weights on the machine) is left out.
    columns = [c for c in COLUMNS if c[0] not in OPTIONAL_COLUMNS or any(arm.stats.get(c[0], unknown).mean is not None for arm in s.arms)]
    run_columns = [c for c in RUN_COLUMNS if c in columns]
    arm_rows = [
        [arm.name, f"{arm.completed}/{len(arm.jobs)}"]
        + [_format(arm.stats.get(key, unknown), decimals) for key, _, decimals in columns]
        + [f"{len(arm.white_minimum)}/{arm.completed}"]
        for arm in s.arms
    ]
    lines += ["## Arms (mean ± standard deviation over seeds)", ""]
    lines += [format_table(arm_rows, ["arm", "seeds done", *[title for _, title, _ in columns], "white minimum"]), ""]
    lines += [
        (
            f"*white minimum*: runs whose test PSNR is within {s.white_minimum_margin:g} dB of an image of "
            "nothing but the background (the model predicts empty space)."
        ),
        "",
    ]
    lines += time_to_psnr_table(s)
    run_rows = [
        [run.arm, run.seed or "–", *[_value(run.metrics.get(key), d) for key, _, d in run_columns], run.state, run.job.split("_", 1)[0]]
        for run in s.runs
    ]
    lines += ["## Runs", "", format_table(run_rows, ["arm", "seed", *[title for _, title, _ in run_columns], "state", "job"]), ""]
    against = "the reference arm" if s.reference is not None else "the best arm"
    if s.best_arm is not None:
        lines += [f"## Verdicts (test PSNR, against {against}: {s.best_arm})", ""]
        lines += [
            (
                f"Each arm against {'it' if s.reference is not None else 'the best'} by Welch's t-test (the arms' variances need not be equal); a "
                f"difference is called real when p < {1 - s.confidence:.2g}, that is at {level} confidence."
            ),
            "",
        ]
        lines += [f"- **{c.arm}**: {c.verdict}." for c in s.comparisons] or ["- only one arm: nothing to compare."]
        lines += [""]
    early = s.early
    if early.best_arm is not None and early.comparisons:
        early_against = "reference arm" if s.reference is not None and early.best_arm == s.reference else "best arm"
        lines += [f"## Early convergence (val PSNR at step {early.step}, the first validation; {early_against}: {early.best_arm})", ""]
        lines += [
            f"- **{c.arm}**: {c.verdict}; {early.best_arm} {_format(early.arms[early.best_arm], 2)} dB, "
            f"{c.arm} {_format(early.arms[c.arm], 2)} dB."
            for c in early.comparisons
        ]
        lines += [""]
    if s.not_completed:
        lines += ["## Jobs that did not complete", ""]
        lines += [f"- `{run.job}` ({run.overrides}): {run.state}" + (f" — {run.error}" if run.error else "") for run in s.not_completed]
        lines += [""]
    for figure in s.figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)
