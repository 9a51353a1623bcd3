"""How the renderer asks a field along its rays: only where needed, and a chunk at a time.

* `query_where`: the field at the kept samples only, gathered into one batch (padded to
  `bucket_size`) and scattered back into the (rays, samples) layout;
* `march`: early ray termination, segment by segment, front to back;
* `render_in_chunks`: a whole view, a chunk of rays at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from nerf_lab.nerf.rays import RayBundle

RenderOutputs = dict[str, Tensor]


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
