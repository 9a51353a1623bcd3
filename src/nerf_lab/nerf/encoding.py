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


# Most degrees `SphericalHarmonicsEncoding` has (bands l = 0 … 3, 16 functions), as the
# instant-ngp NeRF uses them.
MAX_SH_DEGREE = 4


class SphericalHarmonicsEncoding(nn.Module):
    """The real spherical harmonics Y_l^m(d) of a unit view direction d = (x, y, z), bands
    l = 0 … `degree` − 1, m = −l … l: `degree`² values (16 at degree 4), the direction encoding
    of instant-ngp (Müller et al. 2022, section 5.4; the polynomials and their order, with the
    Condon–Shortley sign on odd m, are those of tiny-cuda-nn and Plenoxels):

        l = 0:  1 / (2√π)
        l = 1:  −√(3/4π)·y,  √(3/4π)·z,  −√(3/4π)·x
        l = 2:  ½√(15/π)·xy,  −½√(15/π)·yz,  ¼√(5/π)·(3z² − 1),  −½√(15/π)·xz,  ¼√(15/π)·(x² − y²)
        l = 3:  the seven cubics in `forward`.

    They are orthonormal on the sphere (∫ Y_i Y_j dΩ = δ_ij), and each band's squares sum to
    (2l + 1) / 4π for every unit d (the addition theorem), which the tests check. Against γ(d)
    at L = 4 (24 values of sines and cosines of the direction's coordinates), the 16 values are
    smooth on the sphere and of bounded band: what the small colour MLP of model=ngp reads.

    Input (*batch, 3), unit vectors (the renderer passes normalised directions); output
    (*batch, degree²). Raises `ParameterError` naming `degree` outside [1, 4].
    """

    def __init__(self, degree: int = 4, in_dim: int = 3) -> None:
        super().__init__()
        require(is_int(degree) and 1 <= degree <= MAX_SH_DEGREE, "degree", degree, f"an integer in [1, {MAX_SH_DEGREE}] (bands l = 0 … degree − 1)")
        require(in_dim == 3, "in_dim", in_dim, "3 (spherical harmonics encode 3-D unit directions)")
        self.degree = degree
        self.in_dim = 3

    @property
    def out_dim(self) -> int:
        return self.degree**2

    def forward(self, d: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch out_dim"]:
        x, y, z = d.unbind(-1)
        bands = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            bands += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
        if self.degree > 2:
            xx, yy, zz = x * x, y * y, z * z
            bands += [
                1.0925484305920792 * x * y,
                -1.0925484305920792 * y * z,
                0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * x * z,
                0.54627421529603959 * (xx - yy),
            ]
        if self.degree > 3:
            bands += [
                0.59004358992664352 * y * (yy - 3 * xx),
                2.8906114426405538 * x * y * z,
                0.45704579946446572 * y * (1 - 5 * zz),
                0.3731763325901154 * z * (5 * zz - 3),
                0.45704579946446572 * x * (1 - 5 * zz),
                1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (3 * yy - xx),
            ]
        return torch.stack(bands, dim=-1)

    def extra_repr(self) -> str:
        return f"degree={self.degree}, out_dim={self.out_dim}"
