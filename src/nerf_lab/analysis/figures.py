"""A report's figures: the curves of every arm, one test view rendered by every arm beside
the ground truth, and an orbit GIF of the arms side by side. Models come from each arm's
first completed seed, loaded only through `runs.checkpoints.load_trained`, the project's
one checkpoint loader (nothing here unpickles a checkpoint itself)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nerf_lab.analysis.curves import CURVE_TAGS, Curves, moving_average
from nerf_lab.analysis.stats import Arm

# The orbit GIF's width at most: an 800 px run's orbit would be 24 full renders an arm, and a
# GIF of tens of MB.
ORBIT_MAX_WIDTH = 200


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
                    # One validation (a short run) is a point: a line of one point draws nothing.
                    point = {"marker": "o", "markersize": 6} if length == 1 else {}
                    axis.plot(x, mean, style, color=colour, linewidth=1.5 if style == "-" else 1.0, label=label, **point)
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


def render_grid(arms: list[Arm], path: Path, view: int = 0) -> list[str]:
    """Test view `view` rendered by every arm (its first completed seed's best checkpoint)
    beside the ground truth: colour above, depth below, each column titled. Returns the arms
    it could render."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from nerf_lab.data.datamodule import ViewDataset
    from nerf_lab.nerf.marching import render_in_chunks
    from nerf_lab.nerf.rays import RayBundle
    from nerf_lab.runs.checkpoints import load_trained
    from nerf_lab.visuals.panels import colourise_depth

    device, bf16 = render_device()
    columns: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for arm in arms:
        checkpoint = _checkpoint(arm)
        if checkpoint is None:
            continue
        print(f"report: test view {view} of {arm.name}", file=sys.stderr, flush=True)  # renders take minutes on a CPU
        trained = load_trained(checkpoint)
        module = trained.module.to(device)
        datamodule = trained.datamodule(test_views=view + 1)
        datamodule.setup("test")
        item = ViewDataset(datamodule.splits["test"], [view])[0]
        rays = RayBundle(item.origins.to(device), item.directions.to(device))
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = render_in_chunks(module.renderer, rays, module.chunk).map(lambda t: t.float().cpu())
        near, far = trained.run_config.data.near, trained.run_config.data.far
        if not columns:
            columns.append(("ground truth", item.rgb.numpy(), None))
        depth = colourise_depth(out.depth, out.opacity, near, far).numpy()
        columns.append((arm.name, out.rgb.clamp(0, 1).numpy(), depth))
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


def render_device() -> tuple[Any, bool]:
    """Where the report renders, and whether in bf16: as `trainer.accelerator=auto
    trainer.precision=auto` would choose (`nerf_lab.training.hardware`)."""
    from nerf_lab.training.hardware import resolve_device, resolve_precision

    return resolve_device("auto"), resolve_precision("auto", "auto").startswith("bf16")


def orbit_gif(arms: list[Arm], path: Path, frames: int = 24, fps: int = 8, max_width: int = ORBIT_MAX_WIDTH) -> list[str]:
    """An orbit around the scene, every arm side by side under its name (first completed
    seed's best checkpoint), rendered at the runs' resolution, or `max_width` px when that is
    smaller, and shown at least `visuals.panels.MIN_TILE` px wide an arm."""
    from nerf_lab.analysis.orbit import orbit_frames, write_gif
    from nerf_lab.runs.checkpoints import load_trained

    device, bf16 = render_device()
    names, orbits = [], []
    for arm in arms:
        checkpoint = _checkpoint(arm)
        if checkpoint is not None:
            trained = load_trained(checkpoint)
            width = min(trained.run_config.data.resolution, max_width)
            orbits.append(orbit_frames(trained, frames, width=width, device=device, bf16=bf16, progress=f"report: orbit of {arm.name}").frames)
            names.append(arm.name)
    if orbits:
        # Each arm under its name, scaled up (nearest) to a size one can see (`labelled_grid`).
        from nerf_lab.visuals.panels import Tile, labelled_grid

        write_gif(path, [labelled_grid([Tile(name, orbit[i]) for name, orbit in zip(names, orbits)], len(orbits)) for i in range(frames)], fps)
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
