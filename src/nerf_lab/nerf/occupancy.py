"""Empty-space skipping: an occupancy grid over the scene's box.

The grid splits the axis-aligned box [b_min, b_max] into R³ equal cells. Each cell keeps a
running estimate ρ of the field's density in it, refreshed from the field itself; a cell is
*occupied* when one sample step of length s through that density would be more than
`threshold` opaque:

    α_cell = 1 − exp(−ρ · s) > threshold        (e.g. s = (far − near) / n_c, threshold 0.01:
                                                 occupied when ρ > −ln(0.99) / s ≈ 0.16 for s = 1/16)

Samples that fall in cells that are not occupied (or outside the box) are not sent to the
network: their density is taken as 0, which is what the grid says it is, up to `threshold`.
The update rule is that of nerfacc's `OccGridEstimator` and instant-ngp, written here by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from nerf_lab.nerf.marching import bucket_size
from nerf_lab.nerf.parameters import BOX_EXPECTED, is_box, is_int, is_number, require

# Points evaluated at once when refreshing the grid: the memory of one refresh is bounded.
UPDATE_CHUNK = 1 << 18


def cell_indices(
    points: Float[Tensor, "*n 3"], box: Float[Tensor, "2 3"], resolution: int
) -> tuple[Int[Tensor, "*n"], Bool[Tensor, "*n"]]:
    """Flat index (i·R² + j·R + k) of the cell holding each point, and whether it is in the box
    at all (points outside get index 0 and `inside` False)."""
    unit = (points.float() - box[0]) / (box[1] - box[0])
    inside = ((unit >= 0) & (unit < 1)).all(dim=-1)
    ijk = (unit * resolution).long().clamp(0, resolution - 1)
    flat = (ijk[..., 0] * resolution + ijk[..., 1]) * resolution + ijk[..., 2]
    return torch.where(inside, flat, torch.zeros_like(flat)), inside


def occupied_at(
    occupied: Bool[Tensor, "R R R"], box: Float[Tensor, "2 3"], points: Float[Tensor, "*n 3"]
) -> Bool[Tensor, "*n"]:
    """Whether each point lies in an occupied cell; points outside the box never do."""
    index, inside = cell_indices(points, box, occupied.shape[0])
    return occupied.reshape(-1)[index] & inside


def cell_points(
    indices: Int[Tensor, "n"], box: Float[Tensor, "2 3"], resolution: int, jitter: bool
) -> Float[Tensor, "n 3"]:
    """A point in each cell: uniformly at random (`jitter`) or the centre."""
    ijk = torch.stack(
        [indices // (resolution * resolution), (indices // resolution) % resolution, indices % resolution], dim=-1
    )
    offset = torch.rand(ijk.shape, device=box.device) if jitter else torch.full(ijk.shape, 0.5, device=box.device)
    return box[0] + (ijk + offset) * (box[1] - box[0]) / resolution


class OccupancyGrid(nn.Module):
    """R³ cells over `scene_box`, each with a decaying maximum of the density seen in it.

    `update(density_fn, step)` at every training step t does the whole schedule:
      * every `update_every` steps only;
      * warm-up: every cell stays occupied, and nothing is evaluated, until `warmup_steps`,
        while the field is still learning where things are (a fresh field is foggy
        everywhere: its readings would keep every cell open long after);
      * cells refreshed: all of them at the first refresh; after, the occupied cells plus R³/4
        drawn at random (so an empty cell can come back);
      * a point drawn uniformly in each refreshed cell, σ = density_fn(point);
      * ρ ← max(`ema_decay` · ρ, σ) in a refreshed cell, ρ ← `ema_decay` · ρ in the others
        (empty cells, which only get emptier): a high reading holds for a while and fades
        geometrically unless the field confirms it (from 0.5 below 0.16 in 22 refreshes);
      * occupied ← 1 − exp(−ρ · `step_size`) > `threshold` (the opacity of one sample step);
      * collapse protection: if fewer than `min_occupied` of the cells are occupied (a field in
        the white minimum, density 0 everywhere, would otherwise never see a sample again),
        every cell is re-opened for another `warmup_steps`, and `update` returns True to say so.

    `density`, `occupied`, `refreshes` and `open_until` are buffers: they are saved in
    checkpoints with the fields, so a resumed run, eval and render use the same grid.
    """

    def __init__(
        self,
        scene_box: Sequence[Sequence[float]],
        resolution: int = 64,
        step_size: float = 1.0 / 16,
        threshold: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        update_every: int = 16,
        min_occupied: float = 1e-3,
    ) -> None:
        super().__init__()
        require(is_box(scene_box), "scene_box", scene_box, BOX_EXPECTED)
        require(is_int(resolution) and resolution >= 1, "resolution", resolution, "an integer >= 1 (cells along each axis)")
        require(is_int(update_every) and update_every >= 1, "update_every", update_every, "an integer >= 1 (steps between grid refreshes)")
        require(is_number(threshold) and 0 < threshold < 1, "threshold", threshold, "an opacity in (0, 1) of one sample step")
        require(is_number(ema_decay) and 0 <= ema_decay <= 1, "ema_decay", ema_decay, "a decay in [0, 1]")
        require(is_int(warmup_steps) and warmup_steps >= 0, "warmup_steps", warmup_steps, "an integer >= 0 (steps with every cell open)")
        require(is_number(min_occupied) and 0 <= min_occupied < 1, "min_occupied", min_occupied, "a fraction in [0, 1) of cells")
        require(is_number(step_size) and step_size > 0, "step_size", step_size, "a length > 0 (one sample step)")
        box = torch.tensor(scene_box, dtype=torch.float32)
        self.resolution, self.step_size, self.threshold = resolution, step_size, threshold
        self.ema_decay, self.warmup_steps, self.update_every = ema_decay, warmup_steps, update_every
        self.min_occupied = min_occupied
        self.register_buffer("box", box)
        self.register_buffer("density", torch.zeros(resolution, resolution, resolution))
        self.register_buffer("occupied", torch.ones(resolution, resolution, resolution, dtype=torch.bool))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))
        self.register_buffer("open_until", torch.tensor(warmup_steps, dtype=torch.long))

    def occupied_fraction(self) -> Float[Tensor, ""]:
        return self.occupied.float().mean()

    def lookup(self, points: Float[Tensor, "*n 3"]) -> Bool[Tensor, "*n"]:
        return occupied_at(self.occupied, self.box, points)

    def cells_to_refresh(self) -> Int[Tensor, "n"]:
        n_cells = self.resolution**3
        if int(self.refreshes) == 0:
            return torch.arange(n_cells, device=self.box.device)
        occupied = self.occupied.reshape(-1).nonzero()[:, 0]
        # About R³/4 random cells: as many as make the batch one of `bucket_size`'s sizes.
        n_random = bucket_size(occupied.shape[0] + n_cells // 4) - occupied.shape[0]
        random = torch.randint(n_cells, (n_random,), device=self.box.device)
        return torch.cat([occupied, random])

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], step: int) -> bool:
        """At training step `step`: refresh the grid from `density_fn` (points (n, 3) →
        densities (n)) if the schedule says so (every `update_every` steps, once the warm-up is
        over); True when the grid had collapsed below `min_occupied` and every cell was
        re-opened."""
        if step % self.update_every != 0 or step < int(self.open_until):
            return False
        indices = self.cells_to_refresh()
        points = cell_points(indices, self.box, self.resolution, jitter=True)
        sigma = torch.cat([density_fn(chunk).float().reshape(-1) for chunk in points.split(UPDATE_CHUNK)])
        flat = self.density.view(-1)
        # Duplicated random indices: the amax keeps the largest reading.
        decayed = flat * self.ema_decay
        flat.copy_(decayed.scatter_reduce(0, indices, sigma, "amax", include_self=True))
        self.refreshes += 1
        self.occupied.copy_(1.0 - torch.exp(-self.density * self.step_size) > self.threshold)
        if float(self.occupied_fraction()) < self.min_occupied:
            self.occupied.fill_(True)
            self.open_until.fill_(step + self.warmup_steps)
            self.refreshes.zero_()  # the next refresh reads every cell again
            return True
        return False
