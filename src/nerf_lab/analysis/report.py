"""Report on a sweep: `python -m nerf_lab.report <sweep folder> [--out DIR]`.

Jobs are grouped into arms by their overrides, the seed set aside (and overrides every job
shares). For each arm: mean ± standard deviation over seeds of the best `val/psnr`, the test
PSNR and SSIM, steps, time, speed and size. Each arm is compared with the best arm: the
difference of means with its standard error, and a verdict computed from them. Figures: the
`val/psnr` and `train/psnr` curves (mean and spread over seeds) against step and wall time,
one test view rendered by every arm beside the ground truth, with a depth row, and an orbit
GIF of the arms side by side.

Failed or unfinished jobs are listed as such and left out of the statistics.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nerf_lab.errors import USAGE_ERROR_EXIT_CODE, NerfLabError
from nerf_lab.training.runs import JobResult, format_table, read_sweep, write_json_atomically

SEED_KEY = "seed"
# (metrics.json key, column title, decimals)
COLUMNS = [
    ("val/psnr_best", "best val PSNR (dB)", 2),
    ("test/psnr", "test PSNR (dB)", 2),
    ("test/ssim", "test SSIM", 3),
    ("steps", "steps", 0),
    ("train_time_s", "train time (s)", 0),
    ("steps_per_s", "steps/s", 2),
    ("parameters", "parameters", 0),
]
# val/psnr at the first validation step that every run reached: how fast the arms start.
EARLY_KEY = "val/psnr_early"
# A difference counts as real when it exceeds this many standard errors (about 95 %).
NOISE_FACTOR = 2.0
# A run is stuck in the white minimum when it scores within this much (dB) of an image of
# nothing but the background.
WHITE_MINIMUM_MARGIN = 1.0


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
            if "test/psnr_blank_image" in job.metrics
            and job.metrics.get("test/psnr", math.inf) <= job.metrics["test/psnr_blank_image"] + WHITE_MINIMUM_MARGIN
        ]

    @property
    def trained(self) -> list[JobResult]:
        return [job for job in self.completed if job not in self.stuck]

    def mean_std(self, key: str) -> tuple[float, float, int]:
        values = self.values(key)
        if not values:
            return math.nan, math.nan, 0
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), spread, len(values)


# Overrides that change how a run is run, not what it learns: not part of an arm's name.
RUN_ONLY_KEYS = ("ckpt_path", "hydra", "trainer.enable_progress_bar", "trainer.enable_model_summary")


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


def _difference(best: list[float], other: list[float], best_name: str, unit: str) -> tuple[float, float, str]:
    """(mean difference other − best, its standard error, a verdict) from two samples."""
    difference = statistics.fmean(other) - statistics.fmean(best)
    if len(best) < 2 or len(other) < 2:
        return difference, math.nan, "one seed an arm: the spread is unknown, so the difference cannot be told from noise"
    error = math.sqrt(statistics.variance(best) / len(best) + statistics.variance(other) / len(other))
    if abs(difference) > NOISE_FACTOR * error:
        return difference, error, f"{best_name} is better by {-difference:.2f} {unit}, more than {NOISE_FACTOR:g}× the noise (±{error:.2f})"
    return difference, error, f"no clear difference: {difference:+.2f} {unit} is within {NOISE_FACTOR:g}× the noise (±{error:.2f})"


def compare(best: Arm, other: Arm, key: str = "test/psnr", unit: str = "dB") -> dict[str, Any]:
    """Difference of `other` from `best` in `key`, with its standard error and a verdict.

    Runs stuck in the white minimum are named, and the arms are compared a second time on the
    runs that trained: a stuck seed is a finding in itself, and its spread would otherwise hide
    any other difference."""
    difference, error, verdict = _difference(best.values(key), other.values(key), best.name, unit)
    stuck = [f"{len(arm.stuck)} of {len(arm.completed)} runs of {arm.name} fell into the white minimum" for arm in (other, best) if arm.stuck]
    if stuck:
        trained_best, trained_other = best.values(key, best.trained), other.values(key, other.trained)
        if trained_best and trained_other:
            _, _, among = _difference(trained_best, trained_other, best.name, unit)
            verdict = f"{'; '.join(stuck)}. All runs: {verdict}. Runs that trained: {among}"
        else:
            verdict = f"{'; '.join(stuck)}. All runs: {verdict}"
    return {"arm": other.name, "against": best.name, "metric": key, "difference": difference, "standard_error": error, "verdict": verdict}


def _format(mean: float, std: float, decimals: int) -> str:
    if math.isnan(mean):
        return "–"
    if decimals == 0:
        text = f"{mean:,.0f}"
        return text if math.isnan(std) else f"{text} ± {std:,.0f}"
    return f"{mean:.{decimals}f}" if math.isnan(std) else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def arm_table(arms: list[Arm]) -> str:
    rows = []
    for arm in arms:
        row = [arm.name, f"{len(arm.completed)}/{len(arm.jobs)}"]
        row += [_format(*arm.mean_std(key)[:2], decimals) for key, _, decimals in COLUMNS]
        row.append(f"{len(arm.stuck)}/{len(arm.completed)}")
        rows.append(row)
    return format_table(rows, ["arm", "seeds done", *[title for _, title, _ in COLUMNS], "white minimum"])


def run_table(arms: list[Arm], seed_key: str = SEED_KEY) -> str:
    """One row a run: its arm, seed, scores, and whether it fell into the white minimum."""
    rows = []
    for arm in arms:
        for job in arm.jobs:
            seed = next((o.split("=", 1)[1] for o in job.overrides if o.split("=", 1)[0] == seed_key), "–")
            m = job.metrics
            scores = [_format(float(m[k]), math.nan, d) if isinstance(m.get(k), (int, float)) else "–" for k, _, d in COLUMNS[:3]]
            state = "white minimum" if job in arm.stuck else job.status
            rows.append([arm.name, seed, *scores, state, job.path.name.split("_", 1)[0]])
    return format_table(rows, ["arm", "seed", *[title for _, title, _ in COLUMNS[:3]], "state", "job"])


# --- curves from the event files ---


# The scalars a report plots, and {job folder: {tag: curve}} as read once for a whole report.
CURVE_TAGS = ("val/psnr", "train/psnr")
Curves = dict[Path, dict[str, np.ndarray]]


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


def plot_curves(arms: list[Arm], curves: Curves, path: Path, tags: Sequence[str] = CURVE_TAGS) -> None:
    """`tags` against step and wall time, one curve an arm (see `read_all_curves`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(tags), 2, figsize=(11, 3.6 * len(tags)), squeeze=False)
    any_stuck = False
    for colour, arm in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4, arms):
        # A run in the white minimum would drag the mean and widen the band into noise: the
        # mean and band are over the runs that trained, each stuck run is its own dashed line.
        trained = arm.trained or arm.completed
        stuck = [job for job in arm.stuck if job not in trained]
        any_stuck = any_stuck or bool(stuck)
        for row, tag in enumerate(tags):
            groups = [(trained, "-"), *[([job], "--") for job in stuck]]
            for index, (jobs, style) in enumerate(groups):
                series = [curves[job.path][tag] for job in jobs if tag in curves.get(job.path, {})]
                if not series:
                    continue
                length = min(len(s) for s in series)
                stacked = np.stack([s[:length] for s in series])
                if tag == "train/psnr":  # noisy per step: a moving average over 9 logged points
                    stacked[..., 2] = np.stack([moving_average(s[:, 2], 9) for s in stacked])
                mean, spread = stacked[..., 2].mean(0), stacked[..., 2].std(0)
                label = f"{arm.name} (n={len(series)})" if index == 0 else (f"{arm.name}: white minimum" if index == 1 else None)
                for column, x in enumerate((stacked[..., 0].mean(0), stacked[..., 1].mean(0))):
                    axis = axes[row, column]
                    axis.plot(x, mean, style, color=colour, linewidth=1.5 if style == "-" else 1.0, label=label)
                    if len(series) > 1:
                        axis.fill_between(x, mean - spread, mean + spread, color=colour, alpha=0.2)
                    axis.set_xlabel("step" if column == 0 else "wall time (s)")
                    axis.set_ylabel(f"{tag} (dB)")
                    axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    title = "mean over seeds, band: ± one standard deviation"
    figure.suptitle(title + ("; dashed: a run in the white minimum, outside the mean" if any_stuck else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


# --- one test view from every arm ---


def render_grid(arms: list[Arm], path: Path, view: int = 0) -> list[str]:
    """Test view `view` rendered by every arm (its first completed seed's best checkpoint)
    beside the ground truth: colour above, depth below, each column titled. Returns the arms
    it could render."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from nerf_lab.data.datamodule import ViewDataset
    from nerf_lab.nerf.model import render_in_chunks
    from nerf_lab.nerf.rays import RayBundle
    from nerf_lab.training.checkpoints import load_trained
    from nerf_lab.training.panels import colourise_depth

    columns: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for arm in arms:
        checkpoint = _checkpoint(arm)
        if checkpoint is None:
            continue
        trained = load_trained(checkpoint)
        datamodule = trained.datamodule(test_views=view + 1)
        datamodule.setup("test")
        item = ViewDataset(datamodule.splits["test"], [view])[0]
        with torch.no_grad():
            out = render_in_chunks(trained.module.model, RayBundle(item["origins"], item["directions"]), trained.module.chunk)
        near, far = trained.run_config.data.near, trained.run_config.data.far
        if not columns:
            columns.append(("ground truth", item["rgb"].numpy(), None))
        depth = colourise_depth(out["depth"], out["opacity"], near, far).numpy()
        columns.append((arm.name, out["rgb"].clamp(0, 1).numpy(), depth))
    if not columns:
        return []

    figure, axes = plt.subplots(2, len(columns), figsize=(2.2 * len(columns), 4.6), squeeze=False)
    for column, (name, colour, depth) in enumerate(columns):
        axes[0, column].imshow(colour, interpolation="nearest")
        axes[0, column].set_title(name, fontsize=8)
        if depth is not None:
            axes[1, column].imshow(depth, interpolation="nearest")
        for axis in axes[:, column]:
            axis.axis("off")
    axes[1, 0].text(0.5, 0.5, f"test view {view}\ncolour above,\ndepth below\n(near blue, far red)", ha="center", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [name for name, _, _ in columns[1:]]


def orbit_gif(arms: list[Arm], path: Path, frames: int = 24, fps: int = 8) -> list[str]:
    """An orbit around the scene, every arm side by side (first completed seed's best
    checkpoint), as a GIF at the runs' resolution."""
    from nerf_lab.render import orbit_frames, write_gif
    from nerf_lab.training.checkpoints import load_trained

    names, orbits = [], []
    for arm in arms:
        checkpoint = _checkpoint(arm)
        if checkpoint is not None:
            orbits.append(orbit_frames(load_trained(checkpoint), frames).frames)
            names.append(arm.name)
    if orbits:
        gap = np.full((orbits[0][0].shape[0], 2, 3), 255, dtype=np.uint8)
        write_gif(path, [np.concatenate([part for orbit in orbits for part in (orbit[i], gap)][:-1], axis=1) for i in range(frames)], fps)
    return names


def _checkpoint(arm: Arm) -> Path | None:
    """The best (else last) checkpoint of the arm's first completed seed."""
    if not arm.completed:
        return None
    checkpoints = arm.completed[0].path / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        if (checkpoints / name).is_file():
            return checkpoints / name
    return None


# --- the report ---


def build_report(sweep_dir: Path, out_dir: Path, title: str | None = None, render: bool = True) -> dict[str, Any]:
    jobs = read_sweep(sweep_dir)
    if not jobs:
        raise NerfLabError(f"{sweep_dir} holds no job folders (folders with .hydra/): expected a sweep's folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    arms, shared = group_into_arms(jobs)
    scored = [arm for arm in arms if arm.completed]
    best = max(scored, key=lambda arm: arm.mean_std("test/psnr")[0]) if scored else None
    comparisons = [compare(best, arm) for arm in scored if arm is not best] if best else []
    curves = read_all_curves(jobs)
    early_step = add_early_val_psnr(jobs, curves)
    early_scored = [arm for arm in scored if arm.values(EARLY_KEY)] if early_step is not None else []
    early_best = max(early_scored, key=lambda arm: arm.mean_std(EARLY_KEY)[0]) if early_scored else None
    early_comparisons = [compare(early_best, arm, EARLY_KEY) for arm in early_scored if arm is not early_best] if early_best else []

    figures = []
    if scored:
        plot_curves(scored, curves, out_dir / "curves.png")
        figures.append("curves.png")
        if render and render_grid(scored, out_dir / "test_view.png"):
            figures.append("test_view.png")
        if render and orbit_gif(scored, out_dir / "orbit.gif"):
            figures.append("orbit.gif")

    failed = [job for job in jobs if job.status != "completed"]
    lines = [f"# {title or sweep_dir.name}", ""]
    lines += [f"Sweep: `{sweep_dir}` — {len(jobs)} jobs, {len(jobs) - len(failed)} completed.", ""]
    if shared:
        lines += ["Settings shared by every job: " + ", ".join(f"`{o}`" for o in shared), ""]
    lines += ["## Arms (mean ± standard deviation over seeds)", "", arm_table(arms), ""]
    lines += [
        f"*white minimum*: runs whose test PSNR is within {WHITE_MINIMUM_MARGIN:g} dB of an image of "
        "nothing but the background (the model predicts empty space).",
        "",
    ]
    lines += ["## Runs", "", run_table(arms), ""]
    if best is not None:
        lines += [f"## Verdicts (test PSNR, against the best arm: {best.name})", ""]
        lines += [f"- **{c['arm']}**: {c['verdict']}." for c in comparisons] or ["- only one arm: nothing to compare."]
        lines += [""]
    if early_best is not None and early_comparisons:
        lines += [f"## Early convergence (val PSNR at step {early_step}, the first validation; best arm: {early_best.name})", ""]
        lines += [
            f"- **{c['arm']}**: {c['verdict']}; {early_best.name} {_format(*early_best.mean_std(EARLY_KEY)[:2], 2)} dB, "
            f"{c['arm']} {_format(*next(a for a in early_scored if a.name == c['arm']).mean_std(EARLY_KEY)[:2], 2)} dB."
            for c in early_comparisons
        ]
        lines += [""]
    if failed:
        lines += ["## Jobs that did not complete", ""]
        lines += [f"- `{job.path.name}` ({job.name}): {job.status}" + (f" — {job.error}" if job.error else "") for job in failed]
        lines += [""]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    (out_dir / "report.md").write_text("\n".join(lines))

    summary = {
        "sweep": str(sweep_dir),
        "shared_overrides": shared,
        "arms": [
            {
                "name": arm.name,
                "jobs": [job.path.name for job in arm.jobs],
                "completed": len(arm.completed),
                "white_minimum": [job.path.name for job in arm.stuck],
                **{key: dict(zip(("mean", "std", "n"), arm.mean_std(key))) for key, _, _ in COLUMNS},
            }
            for arm in arms
        ],
        "best_arm": best.name if best else None,
        "comparisons": comparisons,
        "early": {
            "step": early_step,
            "best_arm": early_best.name if early_best else None,
            "arms": {arm.name: dict(zip(("mean", "std", "n"), arm.mean_std(EARLY_KEY))) for arm in early_scored},
            "comparisons": early_comparisons,
        },
        "failed": [{"job": job.path.name, "status": job.status, "error": job.error} for job in failed],
        "figures": figures,
    }
    write_json_atomically(out_dir / "report.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nerf_lab.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep's folder, e.g. outputs/multirun/<date>/<time>")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: <sweep>/report)")
    parser.add_argument("--title", default=None, help="the report's heading")
    parser.add_argument("--no-render", action="store_true", help="skip the test-view grid and orbit (no checkpoints needed)")
    args = parser.parse_args(argv)
    try:
        if not args.sweep_dir.is_dir():
            raise NerfLabError(f"sweep folder {args.sweep_dir} does not exist")
        out_dir = args.out or args.sweep_dir / "report"
        summary = build_report(args.sweep_dir, out_dir, args.title, render=not args.no_render)
    except NerfLabError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR_EXIT_CODE) from None
    print((out_dir / "report.md").read_text())
    print(f"report in {out_dir} ({', '.join(['report.md', 'report.json', *summary['figures']])})")


if __name__ == "__main__":
    main()
