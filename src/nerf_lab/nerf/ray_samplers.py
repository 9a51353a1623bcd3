"""Ray samplers: where along each ray the renderer asks the field, as objects chosen by config.

A sampler answers the three questions of `NeRFRenderer`'s passes (the maths is in
`nerf_lab.nerf.sampling`, the grid in `nerf_lab.nerf.occupancy`):

* `coarse_edges(rays, near, far)`: the first pass's samples, as interval edges (rays, n_c + 1);
* `fine_edges(edges, weights)`: the second pass's, drawn from the first pass's weights and
  merged with its edges (paper section 5.2), or alone (`fine_union=False`); asked only when
  `n_fine > 0`;
* `reaching_field(positions, edges)`: which samples the field is evaluated at (None: all);
  the others get density 0 and colour 0.

and, in training, `update(density_fn, step)` at every step (the occupancy grid's refresh, whose
schedule the grid owns). Samples are stratified while the sampler is in training mode and
`perturb` is set, midpoints otherwise (`nn.Module.train()`/`eval()` of the model reach it).

Early ray termination (stop evaluating samples behind an opaque surface) belongs to the
renderer, not here: it needs the transmittance of the samples before, which only compositing
knows (`NeRFRenderer.render_samples`).

A new sampler is one subclass and one YAML file under `conf/sampling/` (docs/configuration.md,
"Adding a sampler"): e.g. `UniformSampler` below, equal intervals even in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from nerf_lab.nerf.occupancy import OccupancyGrid
from nerf_lab.nerf.parameters import BOX_EXPECTED, ParameterError, is_box, is_int, require
from nerf_lab.nerf.rays import RayBundle, ray_box_intersection
from nerf_lab.nerf.sampling import merge_edges, sample_pdf, stratified_edges, stratified_edges_between

DensityFn = Callable[[Float[Tensor, "n 3"]], Float[Tensor, "n"]]


@runtime_checkable
class RaySampler(Protocol):
    """What `NeRFRenderer` asks of a sampler (an `nn.Module`, so that its state, such as an
    occupancy grid, travels with the renderer's). `StratifiedSampler` and its subclasses below
    are the ones nerf_lab has; a new one needs only these."""

    n_coarse: int  # samples a ray in the first pass
    n_fine: int  # samples a ray added by the second pass (0: one pass, one field)

    @property
    def samples_per_ray(self) -> int:
        """Samples of a ray in its largest pass (for sizing render chunks)."""
        ...

    @property
    def fine_samples_per_ray(self) -> int:
        """Samples of a ray in the second pass (0 without one; for counting FLOPs)."""
        ...

    def coarse_edges(self, rays: RayBundle, near: float, far: float) -> Float[Tensor, "rays edges"]:
        """The first pass's interval edges along each ray, within [near, far]."""
        ...

    def fine_edges(
        self, edges: Float[Tensor, "rays edges"], weights: Float[Tensor, "rays samples"]
    ) -> Float[Tensor, "rays fine_edges"]:
        """The second pass's edges, from the first pass's `edges` and compositing `weights`."""
        ...

    def reaching_field(
        self, positions: Float[Tensor, "rays samples 3"], edges: Float[Tensor, "rays edges"]
    ) -> Bool[Tensor, "rays samples"] | None:
        """Which samples the field is evaluated at (None: all); the others get density 0."""
        ...

    def update(self, density_fn: DensityFn, step: int) -> bool:
        """A training step's bookkeeping; True when the sampler reset itself."""
        ...

    def statistics(self) -> dict[str, Tensor]:
        """0-d tensors worth logging in training (`train/<name>`)."""
        ...


class StratifiedSampler(nn.Module):
    """`n_coarse` stratified samples tiling [near, far] (paper eq. 2), then, when
    `n_fine > 0`, `n_fine` more drawn from the coarse weights (hierarchical sampling, section
    5.2) and merged with them: the paper's 64 + 128 is `StratifiedSampler(64, 128)`.

    `fine_union=False` gives the second pass only its own samples: `n_fine + 1` edges drawn
    from the coarse weights bound `n_fine` intervals, which cover the part of the ray the
    coarse pass found opaque and nothing else (the resampling of mip-NeRF 360, Barron et al.
    2022, section 3, with the coarse field as the proposal). The fine field is then asked
    `n_fine` times a ray instead of `n_coarse + n_fine`, so the coarse pass can take fine steps
    (through an occupancy grid, only where the scene is) at the cost of its own samples alone.

    Raises `ParameterError` naming `n_coarse`, `n_fine`, `perturb` or `fine_union` for a value
    that does not fit.
    """

    def __init__(self, n_coarse: int, n_fine: int = 0, perturb: bool = True, fine_union: bool = True) -> None:
        super().__init__()
        require(is_int(n_coarse) and n_coarse >= 1, "n_coarse", n_coarse, "an integer >= 1 (coarse samples a ray)")
        require(is_int(n_fine) and n_fine >= 0, "n_fine", n_fine, "an integer >= 0 (fine samples a ray; 0 = single pass)")
        require(isinstance(perturb, bool), "perturb", perturb, "true or false")
        require(
            isinstance(fine_union, bool), "fine_union", fine_union,
            "true (the fine pass evaluates coarse and fine samples, the paper) or false (its own samples only)",
        )
        self.n_coarse, self.n_fine, self.perturb, self.fine_union = n_coarse, n_fine, perturb, fine_union

    @property
    def stratified(self) -> bool:
        return self.training and self.perturb

    @property
    def fine_samples_per_ray(self) -> int:
        """Samples of a ray in the fine pass: the coarse and fine ones with `fine_union`, the
        fine ones alone without; 0 without a fine pass."""
        if self.n_fine == 0:
            return 0
        return self.n_coarse + self.n_fine if self.fine_union else self.n_fine

    @property
    def samples_per_ray(self) -> int:
        """Samples of a ray in its largest pass."""
        return max(self.n_coarse, self.fine_samples_per_ray)

    def coarse_edges(self, rays: RayBundle, near: float, far: float) -> Float[Tensor, "rays edges"]:
        return stratified_edges(rays.origins.shape[0], self.n_coarse, near, far, self.stratified, rays.origins.device)

    def fine_edges(
        self, edges: Float[Tensor, "rays edges"], weights: Float[Tensor, "rays samples"]
    ) -> Float[Tensor, "rays fine_edges"]:
        deterministic = not self.stratified
        if not self.fine_union:
            return sample_pdf(edges, weights, self.n_fine + 1, deterministic=deterministic)
        return merge_edges(edges, sample_pdf(edges, weights, self.n_fine, deterministic=deterministic))

    def reaching_field(
        self, positions: Float[Tensor, "rays samples 3"], edges: Float[Tensor, "rays edges"]
    ) -> Bool[Tensor, "rays samples"] | None:
        return None

    def update(self, density_fn: DensityFn, step: int) -> bool:
        """A training step's bookkeeping; True when the sampler had to reset itself (a grid
        that collapsed). Nothing to do here."""
        return False

    def statistics(self) -> dict[str, Tensor]:
        """0-d tensors worth logging in training (`train/<name>`), left on the device."""
        return {}

    def extra_repr(self) -> str:
        return f"n_coarse={self.n_coarse}, n_fine={self.n_fine}, perturb={self.perturb}, fine_union={self.fine_union}"


class UniformSampler(StratifiedSampler):
    """Equal intervals, queried at their centres, in training too: the ablation of the
    paper's stratification (a fixed set of depths: the field never sees between them)."""

    def coarse_edges(self, rays: RayBundle, near: float, far: float) -> Float[Tensor, "rays edges"]:
        return stratified_edges(rays.origins.shape[0], self.n_coarse, near, far, False, rays.origins.device)


class BoxClippedSampler(StratifiedSampler):
    """`StratifiedSampler` on each ray's part of [near, far] inside `scene_box` (the slab
    method, `ray_box_intersection`): the same number of samples where the scene can be. Rays
    that miss the box get zero-length samples, which never reach the field. A `scene_box` that
    is not a box (None, min ≥ max) raises `ParameterError`."""

    def __init__(
        self,
        n_coarse: int,
        scene_box: Sequence[Sequence[float]] | None,
        n_fine: int = 0,
        perturb: bool = True,
        fine_union: bool = True,
    ) -> None:
        super().__init__(n_coarse, n_fine, perturb, fine_union)
        require(is_box(scene_box), "scene_box", scene_box, BOX_EXPECTED + " (the samples are clipped to it; sampling=coarse needs no box)")
        # Not persistent: the box comes from the config, and checkpoints stay as they were.
        self.register_buffer("scene_box", torch.tensor(scene_box, dtype=torch.float32), persistent=False)

    def coarse_edges(self, rays: RayBundle, near: float, far: float) -> Float[Tensor, "rays edges"]:
        t_min, t_max, _ = ray_box_intersection(rays.origins, rays.directions, self.scene_box, near, far)
        return stratified_edges_between(t_min, t_max, self.n_coarse, self.stratified)

    def reaching_field(
        self, positions: Float[Tensor, "rays samples 3"], edges: Float[Tensor, "rays edges"]
    ) -> Bool[Tensor, "rays samples"] | None:
        return edges[:, 1:] > edges[:, :-1]


class OccupancyGridSampler(BoxClippedSampler):
    """`BoxClippedSampler` whose samples in cells an `OccupancyGrid` marks empty skip the field,
    in both passes (the fine samples are looked up too). The grid covers `scene_box`; its
    occupancy threshold is the opacity of one coarse step inside the box, the box's diagonal
    over `n_coarse` (the longest step a clipped ray can get, so the grid errs towards keeping
    a cell). `grid` is the grid's constructor with its own settings (a `_partial_` in config)."""

    def __init__(
        self,
        n_coarse: int,
        scene_box: Sequence[Sequence[float]] | None,
        grid: Callable[..., OccupancyGrid],
        n_fine: int = 0,
        perturb: bool = True,
        fine_union: bool = True,
    ) -> None:
        super().__init__(n_coarse, scene_box, n_fine, perturb, fine_union)
        diagonal = float((self.scene_box[1] - self.scene_box[0]).norm())
        try:
            self.grid = grid(scene_box, step_size=diagonal / n_coarse)
        except ParameterError as error:
            raise error.within("grid") from None

    def reaching_field(
        self, positions: Float[Tensor, "rays samples 3"], edges: Float[Tensor, "rays edges"]
    ) -> Bool[Tensor, "rays samples"] | None:
        return (edges[:, 1:] > edges[:, :-1]) & self.grid.lookup(positions)

    def update(self, density_fn: DensityFn, step: int) -> bool:
        return self.grid.update(density_fn, step)

    def statistics(self) -> dict[str, Tensor]:
        return {"occupied_fraction": self.grid.occupied_fraction()}
