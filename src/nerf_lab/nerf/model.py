"""The NeRF model: samplers, coarse and fine fields and the volume renderer, put together."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from torch.profiler import record_function

from nerf_lab.nerf.occupancy import OccupancyGrid, bucket_size, ray_box_intersection
from nerf_lab.nerf.rays import RayBundle
from nerf_lab.nerf.rendering import (
    accumulate,
    composite_onto_background,
    expected_depth,
    opacity,
    render_weights,
)
from nerf_lab.nerf.sampling import (
    merge_edges,
    midpoints,
    sample_pdf,
    stratified_edges,
    stratified_edges_between,
)

RenderOutputs = dict[str, Tensor]


class NeRFModel(nn.Module):
    """Renders rays through a radiance field, with the paper's hierarchical sampling.

    A field is any module mapping (positions (*b, 3), unit directions (*b, 3) or broadcastable)
    to (rgb (*b, 3), density (*b)), such as `NeRFField`: the renderer knows nothing of networks.

    Coarse pass: `n_coarse` stratified samples in [near, far] through `coarse_field`.
    Fine pass (when `n_fine > 0`): `n_fine` samples drawn from the coarse weights, merged
    with the coarse ones, all `n_coarse + n_fine` through `fine_field` (a second network, as
    in the paper). `n_fine = 0` is the single-pass model of Tiny NeRF.

    Empty-space skipping (both optional, off by default):
      * `clip_to_box`: each ray's samples tile only its part of [near, far] inside
        `scene_box` (`ray_box_intersection`); rays that miss it get zero-length samples and
        render the background;
      * `occupancy`: samples in cells that the `OccupancyGrid` marks empty (or outside its box)
        are not sent to the field; their density is 0. Both passes skip them: the fine
        samples, drawn from the coarse weights, are looked up in the grid too.

    `forward` returns `rgb` (composited onto `background`), `depth`, `opacity` and `weights`
    of the last pass, plus `rgb_coarse` when there is a fine pass (both are supervised), and
    `field_evals_per_ray` (0-d: points sent to the fields, both passes, a ray on average).
    Samples are stratified (random) only in training mode and when `perturb` is set.
    """

    def __init__(
        self,
        coarse_field: nn.Module,
        fine_field: nn.Module | None,
        n_coarse: int,
        n_fine: int,
        near: float,
        far: float,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        perturb: bool = True,
        occupancy: OccupancyGrid | None = None,
        clip_to_box: bool = False,
        scene_box: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if n_coarse < 1 or n_fine < 0:
            raise ValueError(f"need n_coarse >= 1 and n_fine >= 0, got {n_coarse} and {n_fine}")
        if (n_fine > 0) != (fine_field is not None):
            raise ValueError("a fine field is needed exactly when n_fine > 0")
        if not 0.0 <= near < far:
            raise ValueError(f"need 0 <= near < far, got near={near}, far={far}")
        self.coarse_field = coarse_field
        self.fine_field = fine_field
        self.n_coarse = n_coarse
        self.n_fine = n_fine
        self.near = near
        self.far = far
        self.perturb = perturb
        self.register_buffer("background", torch.tensor(background, dtype=torch.float32))
        self.occupancy = occupancy
        self.clip_to_box = clip_to_box
        if clip_to_box:
            if scene_box is None and occupancy is None:
                raise ValueError("clip_to_box needs a scene_box (or an occupancy grid, whose box it uses)")
            box = occupancy.box.clone() if scene_box is None else torch.tensor(scene_box, dtype=torch.float32)
            # Not persistent: the box comes from the config, and checkpoints stay as they were.
            self.register_buffer("scene_box", box, persistent=False)

    def compile_fields(self) -> None:
        """torch.compile the fields (the network work); sampling and compositing stay eager."""
        for field in (self.coarse_field, self.fine_field):
            if field is not None:
                field.compile()

    def training_flops_per_ray(self, field_evals_per_ray: float | None = None) -> int | float:
        """The fields' floating-point work for one ray in a training step: `n_coarse` points
        through the coarse field, and `n_coarse + n_fine` through the fine one. Needs fields
        that count their own (`NeRFField.training_flops_per_point`). With empty-space skipping
        fewer points reach the fields: give the measured `field_evals_per_ray` (both passes),
        counted at the coarse field's cost (the two fields are built alike)."""
        if field_evals_per_ray is not None:
            return field_evals_per_ray * self.coarse_field.training_flops_per_point()
        total = self.n_coarse * self.coarse_field.training_flops_per_point()
        if self.fine_field is not None:
            total += (self.n_coarse + self.n_fine) * self.fine_field.training_flops_per_point()
        return total

    def forward(self, rays: RayBundle) -> RenderOutputs:
        stratified = self.training and self.perturb
        n_rays = rays.origins.shape[0]
        with record_function("nerf.sampling"):
            if self.clip_to_box:
                t_min, t_max, _ = ray_box_intersection(rays.origins, rays.directions, self.scene_box, self.near, self.far)
                coarse_edges = stratified_edges_between(t_min, t_max, self.n_coarse, stratified)
            else:
                coarse_edges = stratified_edges(
                    n_rays, self.n_coarse, self.near, self.far, stratified, rays.origins.device
                )
        coarse = self.render_samples(self.coarse_field, rays, coarse_edges)
        if self.fine_field is None:
            return coarse
        with record_function("nerf.sampling"):
            fine_depths = sample_pdf(
                coarse_edges, coarse["weights"], self.n_fine, deterministic=not stratified
            )
            fine_edges = merge_edges(coarse_edges, fine_depths)
        fine = self.render_samples(self.fine_field, rays, fine_edges)
        fine["rgb_coarse"] = coarse["rgb"]
        fine["field_evals_per_ray"] = fine["field_evals_per_ray"] + coarse["field_evals_per_ray"]
        return fine

    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n"]:
        """The coarse field's density (it does not depend on the view direction): what the
        occupancy grid is refreshed from."""
        directions = positions.new_tensor([0.0, 0.0, 1.0]).expand_as(positions)
        return self.coarse_field(positions, directions)[1]

    def skips_samples(self) -> bool:
        return self.occupancy is not None or self.clip_to_box

    def render_samples(
        self,
        field: nn.Module,
        rays: RayBundle,
        edges: Float[Tensor, "rays edges"],
    ) -> RenderOutputs:
        """Query `field` at the centres of the intervals bounded by `edges` and composite.

        The stages are labelled for `torch.profiler` (`nerf.sampling`, `nerf.field`,
        `nerf.compositing`): `nerf_lab.bench bench.profile_steps=N` reports their share of a step.
        """
        with record_function("nerf.sampling"):
            depths = midpoints(edges)
            positions = rays.origins[:, None, :] + rays.directions[:, None, :] * depths[..., None]
            direction_norm = rays.directions.norm(dim=-1, keepdim=True)
            view_directions = (rays.directions / direction_norm)[:, None, :]
        with record_function("nerf.field"):
            if self.skips_samples():
                keep = edges[:, 1:] > edges[:, :-1]  # zero-length samples: rays that miss the box
                if self.occupancy is not None:
                    keep = keep & self.occupancy.lookup(positions)
                rgb, density = query_where(field, positions, view_directions, keep)
                evals = keep.sum() / keep.shape[0]
            else:
                rgb, density = field(positions, view_directions)
                evals = depths.new_full((), float(depths.shape[-1]))

        # The compositing sums stay in float32 under autocast (see nerf_lab.nerf.rendering).
        with record_function("nerf.compositing"), torch.autocast(device_type=edges.device.type, enabled=False):
            deltas = (edges[:, 1:] - edges[:, :-1]) * direction_norm
            weights, _, _ = render_weights(density, deltas)
            ray_opacity = opacity(weights)
            return {
                "rgb": composite_onto_background(
                    accumulate(weights, rgb), ray_opacity, self.background
                ),
                "depth": expected_depth(weights, depths),
                "opacity": ray_opacity,
                "weights": weights,
                "field_evals_per_ray": evals,
            }


def query_where(
    field: nn.Module,
    positions: Float[Tensor, "rays samples 3"],
    view_directions: Float[Tensor, "rays 1 3"],
    keep: Bool[Tensor, "rays samples"],
) -> tuple[Float[Tensor, "rays samples 3"], Float[Tensor, "rays samples"]]:
    """The field at the samples where `keep` is set, and colour 0, density 0 elsewhere: the
    kept points are gathered into one (n, 3) batch, so the network's work is n points, and the
    results are scattered back into the (rays, samples) layout that compositing uses.

    The batch is padded to `bucket_size(n)` with copies of a kept point (whose results are
    dropped): the CPU's matrix-product library builds a kernel for each new shape, and a new
    n every step made each product about twice as slow (measured here).
    """
    index = keep.reshape(-1).nonzero()[:, 0]
    n = index.shape[0]
    padded = torch.cat([index, index[:1].expand(bucket_size(n) - n)])
    flat_positions = positions.reshape(-1, 3)[padded]
    flat_directions = view_directions.expand_as(positions).reshape(-1, 3)[padded]
    rgb_kept, density_kept = field(flat_positions, flat_directions)
    rgb = rgb_kept.new_zeros(keep.numel(), 3).index_put((index,), rgb_kept[:n])
    density = density_kept.new_zeros(keep.numel()).index_put((index,), density_kept[:n])
    return rgb.reshape(*keep.shape, 3), density.reshape(keep.shape)


@torch.no_grad()
def render_in_chunks(
    render_fn: Callable[[RayBundle], RenderOutputs],
    rays: RayBundle,
    chunk: int,
    keys: Sequence[str] = ("rgb", "depth", "opacity"),
) -> RenderOutputs:
    """Render rays of any leading shape (a whole (H, W) view) `chunk` rays at a time.

    Only the per-ray outputs named in `keys` are kept, so the memory needed beyond the
    outputs themselves is that of one chunk: an 800×800 view renders in the memory of
    `chunk` rays.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of rays, got {chunk}")
    shape = rays.shape
    flat = rays.reshape(-1)
    pieces: dict[str, list[Tensor]] = {key: [] for key in keys}
    for start in range(0, flat.shape[0], chunk):
        outputs = render_fn(flat[start : start + chunk])
        for key in keys:
            pieces[key].append(outputs[key])
    return {key: torch.cat(parts).reshape(*shape, *parts[0].shape[1:]) for key, parts in pieces.items()}
