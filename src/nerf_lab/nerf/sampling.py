"""Where along each ray the field is queried: stratified and hierarchical (importance) sampling.

Samples are intervals. A ray's samples are given by the sorted edges
t_0 = near < t_1 < … < t_S = far, which tile [near, far]; sample i is the interval
[t_i, t_{i+1}], queried at its midpoint, with length δ_i = t_{i+1} − t_i. Tiling makes the
quadrature exact for piecewise-constant density: Σ δ_i over a ray is far − near.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

# Added to the coarse weights before they become a pdf: a ray whose coarse weights are all zero
# (empty space) still gets fine samples, spread uniformly.
PDF_PADDING = 1e-5


def stratified_edges(
    n_rays: int,
    n_samples: int,
    near: float,
    far: float,
    perturb: bool,
    device: torch.device | str | None = None,
) -> Float[Tensor, "{n_rays} {n_samples}+1"]:
    """Edges of `n_samples` intervals tiling [near, far] on each of `n_rays` rays.

    Deterministic (`perturb=False`, evaluation): equal intervals, queried at their centres.
    Stratified (`perturb=True`, training; paper eq. 2): every inner edge is drawn uniformly
    between the centres of the two equal intervals it separates, so each query point (an
    interval's midpoint) stays inside its own stratum while the network sees every depth over
    training; the outer edges stay at near and far, so the intervals still tile the ray.
    """
    steps = torch.linspace(0.0, 1.0, n_samples + 1, device=device)
    edges = (near + (far - near) * steps).expand(n_rays, n_samples + 1)
    if not perturb or n_samples == 1:
        return edges.contiguous()
    centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
    inner = centres[:, :-1] + (centres[:, 1:] - centres[:, :-1]) * torch.rand_like(centres[:, 1:])
    return torch.cat([edges[:, :1], inner, edges[:, -1:]], dim=-1)


def stratified_edges_between(
    t_min: Float[Tensor, "rays"], t_max: Float[Tensor, "rays"], n_samples: int, perturb: bool
) -> Float[Tensor, "rays {n_samples}+1"]:
    """`stratified_edges` on each ray's own range [t_min, t_max] (a ray clipped to the scene's
    box): edge k is t_min + (t_max − t_min) · e_k with e the edges of [0, 1]. A ray with
    t_min = t_max (it misses the box) gets zero-length intervals: no opacity, the background."""
    unit = stratified_edges(t_min.shape[0], n_samples, 0.0, 1.0, perturb, t_min.device)
    return t_min[:, None] + (t_max - t_min)[:, None] * unit


def sample_pdf(
    edges: Float[Tensor, "*rays edges"],
    weights: Float[Tensor, "*rays bins"],
    n_samples: int,
    deterministic: bool,
) -> Float[Tensor, "*rays {n_samples}"]:
    """Inverse-transform sampling of the piecewise-constant pdf that `weights` put on the bins
    bounded by `edges` (paper section 5.2).

    With the cdf F over the bins (F_0 = 0, F_k = Σ_{j<k} p_j), each u ∈ [0, 1] maps to the bin
    i with F_i ≤ u < F_{i+1} and to t = t_i + (u − F_i) / p_i · (t_{i+1} − t_i). The u are
    stratified, u_k = (k + ξ_k) / n, ξ ~ U[0, 1) (or ½ when `deterministic`), so the samples
    come out sorted and cover the pdf evenly. Weights are detached: sampling is not
    differentiated through.

    Example: edges (2, 3, 4) and weights (0, 1) put every sample in [3, 4]; deterministic with
    n = 2 gives t = (3.25, 3.75).
    """
    weights = weights.detach() + PDF_PADDING
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    cdf[..., -1] = 1.0  # guard the last edge against rounding in the cumulative sum

    batch_shape = weights.shape[:-1]
    offsets = (
        torch.full((*batch_shape, n_samples), 0.5, device=weights.device)
        if deterministic
        else torch.rand(*batch_shape, n_samples, device=weights.device)
    )
    u = (torch.arange(n_samples, device=weights.device) + offsets) / n_samples

    n_bins = weights.shape[-1]
    bins = (torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True) - 1).clamp(0, n_bins - 1)
    cdf_below = cdf.gather(-1, bins)
    pdf_bin = pdf.gather(-1, bins)
    edge_below = edges.gather(-1, bins)
    edge_above = edges.gather(-1, bins + 1)
    fraction = ((u - cdf_below) / pdf_bin).clamp(0.0, 1.0)
    return (edge_below + fraction * (edge_above - edge_below)).detach()


def merge_edges(
    edges: Float[Tensor, "*rays edges"], samples: Float[Tensor, "*rays m"]
) -> Float[Tensor, "*rays edges+m"]:
    """The coarse edges and the fine samples together, sorted: n + m intervals that still tile
    [near, far], dense where the coarse pass found content (the fine pass's samples)."""
    return torch.sort(torch.cat([edges, samples], dim=-1), dim=-1).values


def midpoints(edges: Float[Tensor, "*rays edges"]) -> Float[Tensor, "*rays edges-1"]:
    """Query depth of each interval: its centre."""
    return 0.5 * (edges[..., 1:] + edges[..., :-1])
