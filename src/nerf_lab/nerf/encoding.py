"""Positional (Fourier feature) encoding of coordinates, Mildenhall et al. 2020, section 5.1."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nerf_lab.nerf.parameters import is_int, require

# Most frequency bands an encoding may have. Band k computes sin(2^k·p) in float32: p carries a
# 24-bit mantissa, so for |p| ≈ 1 the phase 2^k·p is known to about 2^(k-23) rad, and from
# k = 24 the band is rounding noise (its error against float64 averages 0.4 there and 0.8,
# that of unrelated values, from k = 26; see tests/config/test_bad_input.py); from k = 127, 2^k·p
# overflows to inf and sin gives NaN.
MAX_FREQUENCY_BANDS = 24


class PositionalEncoding(nn.Module):
    """γ(p) = (p, sin(2⁰p), cos(2⁰p), sin(2¹p), cos(2¹p), …, sin(2^{L-1}p), cos(2^{L-1}p)).

    Applied to each of the `in_dim` coordinates of p; the output is ordered frequency by
    frequency, sine before cosine, each block holding all coordinates:

        p = (x, y, z), L = 1, include_input:
        γ(p) = (x, y, z, sin x, sin y, sin z, cos x, cos y, cos z)          (width 9)

    Width: `in_dim * (2 L + include_input)`: 63 for positions at L = 10 with the raw input,
    60 without; 27 / 24 for view directions at L = 4.

    Relation to the paper: equation (4) writes γ(p) = (sin(2⁰πp), cos(2⁰πp), …) without p.
    The authors' released code, and this class, drop the π and (by default) prepend p. Without
    π, frequency k has period 2π / 2^k, so for Blender scenes inside [-1.5, 1.5]³ the lowest
    band does not wrap around the scene; the raw input gives the network a smooth, non-periodic
    handle on position (the study's "encoding plus raw xyz" arm). `include_input=False` is the
    paper's formula up to the scale π; `n_freqs=0` with the raw input is "no encoding".
    """

    def __init__(self, n_freqs: int, include_input: bool = True, in_dim: int = 3) -> None:
        super().__init__()
        require(
            is_int(n_freqs) and 0 <= n_freqs <= MAX_FREQUENCY_BANDS, "n_freqs", n_freqs,
            f"an integer in [0, {MAX_FREQUENCY_BANDS}] (frequency bands; in float32, sin(2^k·p) for "
            f"k >= {MAX_FREQUENCY_BANDS} is rounding noise and from k = 127 NaN)",
        )
        require(isinstance(include_input, bool), "include_input", include_input, "true or false")
        require(
            n_freqs > 0 or include_input, "n_freqs", n_freqs,
            "n_freqs >= 1 or include_input=true (n_freqs=0 without the raw input encodes nothing)",
        )
        self.n_freqs = n_freqs
        self.include_input = include_input
        self.in_dim = in_dim
        self.register_buffer("frequencies", 2.0 ** torch.arange(n_freqs), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (2 * self.n_freqs + int(self.include_input))

    def forward(self, x: Float[Tensor, "*batch in_dim"]) -> Float[Tensor, "*batch out_dim"]:
        scaled = x[..., None, :] * self.frequencies[:, None]  # (*batch, L, in_dim)
        bands = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2)  # (*batch, L, 2, in_dim)
        encoded = bands.flatten(-3)
        return torch.cat([x, encoded], dim=-1) if self.include_input else encoded

    def extra_repr(self) -> str:
        return f"n_freqs={self.n_freqs}, include_input={self.include_input}, out_dim={self.out_dim}"
