"""Volume rendering: the quadrature of Max (1995) used by NeRF, as pure functions of tensors.

For one ray with samples i = 1 … S, densities σ_i and interval lengths δ_i (metric, that is
already multiplied by |d|, see `nerf_lab.nerf.rays`):

    α_i = 1 − exp(−σ_i δ_i)                       opacity of interval i
    T_i = ∏_{j<i} (1 − α_j) = exp(−Σ_{j<i} σ_j δ_j)  transmittance up to interval i
    w_i = T_i α_i                                 weight of interval i
    Ĉ   = Σ_i w_i c_i + (1 − Σ_i w_i) · c_bg       colour composited onto a background

Worked example (the test suite asserts these numbers): σ = (1, 1), δ = (0.5, 0.5) gives
α = (0.3935, 0.3935), T = (1, 0.6065), w = (0.3935, 0.2387), and opacity Σ w = 0.6321, which
is 1 − exp(−σ ℓ) for the slab of length ℓ = 1 that the two intervals cover.

These functions run in at least float32 whatever the autocast context: the cumulative sum of
optical depth loses the scene's far side in bfloat16 (8 bits of mantissa). Float64 inputs stay
float64: cast to float32, a float64 render's weights would carry float32's rounding, and
devices round float32 differently (a GPU's cumulative sum adds in another order than a CPU's),
which the fine pass amplifies, through the samples it places from the weights, into
differences of ~1e-4 between two float64 renders of the same weights.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def at_least_float32(x: Tensor) -> Tensor:
    """`x` in float32 if it is of a lower precision (bfloat16, float16), else as it is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def render_weights(
    densities: Float[Tensor, "*rays samples"], deltas: Float[Tensor, "*rays samples"]
) -> tuple[
    Float[Tensor, "*rays samples"], Float[Tensor, "*rays samples"], Float[Tensor, "*rays samples"]
]:
    """(weights w_i, transmittance T_i, alphas α_i) from densities σ_i and lengths δ_i.

    T_i is computed as exp of an exclusive cumulative sum of σδ rather than as a cumulative
    product of (1 − α): the same value, without the product's underflow and without the
    epsilon the authors' code adds to each factor.
    """
    densities, deltas = at_least_float32(densities), at_least_float32(deltas)
    optical_depth = densities * deltas
    alphas = 1.0 - torch.exp(-optical_depth)
    depth_before = torch.cumsum(
        torch.cat([torch.zeros_like(optical_depth[..., :1]), optical_depth[..., :-1]], dim=-1), dim=-1
    )
    transmittance = torch.exp(-depth_before)
    return transmittance * alphas, transmittance, alphas


def accumulate(
    weights: Float[Tensor, "*rays samples"], values: Float[Tensor, "*rays samples channels"]
) -> Float[Tensor, "*rays channels"]:
    """Σ_i w_i v_i: composited colour (values = colours) or any per-sample quantity."""
    return (weights[..., None] * at_least_float32(values)).sum(dim=-2)


def opacity(weights: Float[Tensor, "*rays samples"]) -> Float[Tensor, "*rays"]:
    """Accumulated opacity Σ_i w_i = 1 − T_{S+1}, the probability that the ray stops."""
    return weights.sum(dim=-1)


def expected_depth(
    weights: Float[Tensor, "*rays samples"], depths: Float[Tensor, "*rays samples"]
) -> Float[Tensor, "*rays"]:
    """Depth of the surface the ray sees: Σ w_i t_i / Σ w_i, the expected stopping depth given
    that the ray stops; rays that see nothing get the farthest sample's depth, not 0, so an
    empty background reads as far in a depth map."""
    total = weights.sum(dim=-1)
    depth = (weights * depths).sum(dim=-1) / total.clamp_min(1e-10)
    far = depths[..., -1]
    return torch.where(total > 1e-6, depth.clamp(depths[..., 0], far), far)


def composite_onto_background(
    rgb: Float[Tensor, "*rays 3"],
    ray_opacity: Float[Tensor, "*rays"],
    background: Float[Tensor, "3"],
) -> Float[Tensor, "*rays 3"]:
    """Ĉ + (1 − Σ w) c_bg: what shows through where the ray does not stop (white for the
    Blender scenes, whose images are composited onto white the same way)."""
    return rgb + (1.0 - ray_opacity[..., None]) * background
