"""What the tests share: a renderer from given fields and sample counts, a run's TensorBoard
events."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from nerf_lab.nerf.renderer import NeRFRenderer
from nerf_lab.nerf.occupancy import OccupancyGrid
from nerf_lab.nerf.ray_samplers import BoxClippedSampler, OccupancyGridSampler, StratifiedSampler


class GridLookupSampler(StratifiedSampler):
    """Stratified samples over [near, far] whose samples in empty cells of `grid` skip the
    field, without clipping rays to the grid's box: isolates the grid's lookup in tests."""

    def __init__(self, n_coarse: int, grid: OccupancyGrid, n_fine: int = 0) -> None:
        super().__init__(n_coarse, n_fine)
        self.grid = grid

    def reaching_field(self, positions: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        return self.grid.lookup(positions)

    def update(self, density_fn, step: int) -> bool:
        return self.grid.update(density_fn, step)


def renderer(
    coarse_field: nn.Module,
    fine_field: nn.Module | None,
    n_coarse: int,
    n_fine: int,
    near: float,
    far: float,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    occupancy: OccupancyGrid | None = None,
    clip_to_box: bool = False,
    scene_box: Sequence[Sequence[float]] | None = None,
    stop_transmittance: float = 0.0,
) -> NeRFRenderer:
    """A `NeRFRenderer` over the given fields (the fine one when `n_fine > 0`), with the sampler
    the keywords describe: stratified; clipped to `scene_box`; a grid's lookup; or both.
    Early ray termination is off unless `stop_transmittance` is given."""
    if occupancy is not None and clip_to_box:
        sampler: StratifiedSampler = OccupancyGridSampler(
            n_coarse, occupancy.box.tolist(), lambda box, step_size: occupancy, n_fine=n_fine
        )
    elif occupancy is not None:
        sampler = GridLookupSampler(n_coarse, occupancy, n_fine)
    elif clip_to_box:
        sampler = BoxClippedSampler(n_coarse, scene_box, n_fine=n_fine)
    else:
        sampler = StratifiedSampler(n_coarse, n_fine)
    fields = iter([coarse_field, fine_field])
    return NeRFRenderer(lambda: next(fields), sampler, near, far, background, stop_transmittance)


def events(run_dir: Path):
    """The TensorBoard events a run wrote (every scalar, image and tensor kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def slow_after_first(cases: list) -> list:
    """Cases of a test that runs a command once a case (a process start of several seconds):
    the first runs in `make test`, the others are marked `slow` (`make test-full` and CI)."""
    return [case if index == 0 else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
            for index, case in enumerate(cases)]
