"""How the renderer asks a field along its rays: only where needed, and a chunk at a time.

* `query_where`: the field at the kept samples only, gathered into one batch (padded to
  `bucket_size`) and scattered back into the (rays, samples) layout;
* `march`: early ray termination, segment by segment, front to back;
* `render_in_chunks`: a whole view, a chunk of rays at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from nerf_lab.nerf.rays import RayBundle


@dataclass
class RenderOutputs:
    """Rays rendered: per ray, over a leading shape `*rays` ((rays,) for a training batch, (H, W)
    for a whole view).

    * `rgb` (*rays, 3): the colour composited onto the background, C = Σ w_i c_i + (1 − Σ w_i) · b
      (Mildenhall et al. 2020, eq. 3);
    * `depth` (*rays,): the expected depth Σ w_i t_i, in the units of the ray parameter t;
    * `opacity` (*rays,): Σ w_i, one minus the transmittance left after the last sample;
    * `weights` (rays, samples): the compositing weights w_i = T_i (1 − exp(−σ_i δ_i)) of the
      last pass, which the fine pass draws its samples from (None for views rendered in chunks);
    * `field_evals_per_ray` (scalar): field evaluations a ray, both passes (None for views
      rendered in chunks);
    * `rgb_coarse` (*rays, 3): the coarse pass's colour where a fine pass follows (its term of
      the loss), else None.
    """

    rgb: Float[Tensor, "*rays 3"]
    depth: Float[Tensor, "*rays"]
    opacity: Float[Tensor, "*rays"]
    weights: Float[Tensor, "rays samples"] | None = None
    field_evals_per_ray: Float[Tensor, ""] | None = None
    rgb_coarse: Float[Tensor, "*rays 3"] | None = None

    def map(self, fn: Callable[[Tensor], Tensor]) -> RenderOutputs:
        """The same outputs with `fn` applied to each tensor present (`.float().cpu()`, say)."""
        return dataclasses.replace(
            self, **{f.name: fn(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}
        )


def bucket_size(n: int) -> int:
    """n rounded up to one of 8 sizes an octave (at most 12.5 % more; 4600 → 4608): batches
    of a varying number of points padded to these sizes repeat their shapes, and the CPU's
    matrix-product library builds a kernel for each new shape."""
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


# Samples a ray marches at once when rendering with early termination: the field is asked
# segment by segment, each time only for the rays still transparent enough to see further.
MARCH_SEGMENT = 16


def march(
    field: nn.Module,
    positions: Float[Tensor, "rays samples 3"],
    view_directions: Float[Tensor, "rays 1 3"],
    deltas: Float[Tensor, "rays samples"],
    keep: Bool[Tensor, "rays samples"] | None,
    stop_transmittance: float,
) -> tuple[Float[Tensor, "rays samples 3"], Float[Tensor, "rays samples"], Bool[Tensor, "rays samples"]]:
    """The field along each ray front to back, `MARCH_SEGMENT` samples at a time, with early ray
    termination: once a ray's transmittance T = exp(−Σ σ_j δ_j) falls below `stop_transmittance`
    (its surface is behind it), its later samples are not evaluated (density 0, colour 0).

    The light those samples could add is at most T < `stop_transmittance` of the ray's colour,
    so colour and opacity change by less than that (1e-4: invisible in an 8-bit image). Returns
    colours, densities and which samples were evaluated (within `keep`, if given).
    """
    n_rays, n_samples = deltas.shape
    rgb = positions.new_zeros(n_rays, n_samples, 3)
    density = deltas.new_zeros(n_rays, n_samples)
    evaluated = torch.zeros(n_rays, n_samples, dtype=torch.bool, device=deltas.device)
    optical_depth = deltas.new_zeros(n_rays)
    threshold = -math.log(stop_transmittance)  # T < t  ⇔  Σ σδ > −ln t
    for start in range(0, n_samples, MARCH_SEGMENT):
        part = slice(start, start + MARCH_SEGMENT)
        alive = (optical_depth <= threshold)[:, None].expand(-1, deltas[:, part].shape[1])
        wanted = alive if keep is None else alive & keep[:, part]
        rgb_part, density_part = query_where(field, positions[:, part], view_directions, wanted)
        rgb[:, part], density[:, part], evaluated[:, part] = rgb_part.to(rgb.dtype), density_part.to(density.dtype), wanted
        optical_depth = optical_depth + (density[:, part] * deltas[:, part]).sum(dim=-1)
    return rgb, density, evaluated


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
) -> RenderOutputs:
    """Render rays of any leading shape (a whole (H, W) view) `chunk` rays at a time.

    Only the per-ray outputs (`rgb`, `depth`, `opacity`) are kept, so the memory needed beyond
    them is that of one chunk: an 800×800 view renders in the memory of `chunk` rays. Raises
    `ValueError` for a `chunk` below 1.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of rays, got {chunk}")
    shape = rays.shape
    flat = rays.reshape(-1)
    rgb, depth, opacity = [], [], []
    for start in range(0, flat.shape[0], chunk):
        outputs = render_fn(flat[start : start + chunk])
        rgb.append(outputs.rgb)
        depth.append(outputs.depth)
        opacity.append(outputs.opacity)
    return RenderOutputs(
        rgb=torch.cat(rgb).reshape(*shape, 3),
        depth=torch.cat(depth).reshape(shape),
        opacity=torch.cat(opacity).reshape(shape),
    )
