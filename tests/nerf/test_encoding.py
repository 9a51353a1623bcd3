import math

import numpy as np
import pytest
import torch

from nerf_lab.nerf.encoding import PositionalEncoding, SphericalHarmonicsEncoding
from nerf_lab.nerf.parameters import ParameterError


@pytest.mark.parametrize(
    ("n_freqs", "include_input", "width"), [(10, True, 63), (10, False, 60), (4, True, 27), (4, False, 24)]
)
def test_widths_match_the_papers(n_freqs, include_input, width):
    encoding = PositionalEncoding(n_freqs, include_input)
    assert encoding.out_dim == width
    assert encoding(torch.zeros(5, 7, 3)).shape == (5, 7, width)


def test_values_match_hand_computation():
    x, y, z = 0.5, -1.0, 2.0
    encoded = PositionalEncoding(n_freqs=2, include_input=True)(torch.tensor([[x, y, z]]))[0]
    expected = [x, y, z]
    for scale in (1.0, 2.0):  # 2^0, 2^1: no π, as in the authors' code
        expected += [math.sin(scale * v) for v in (x, y, z)]
        expected += [math.cos(scale * v) for v in (x, y, z)]
    torch.testing.assert_close(encoded, torch.tensor(expected), atol=1e-6, rtol=0)


def test_without_raw_input_starts_with_the_first_band():
    encoded = PositionalEncoding(n_freqs=1, include_input=False)(torch.tensor([[0.0, math.pi / 2, 1.0]]))
    torch.testing.assert_close(
        encoded[0], torch.tensor([0.0, 1.0, math.sin(1.0), 1.0, 0.0, math.cos(1.0)]), atol=1e-6, rtol=0
    )


def test_zero_frequencies_with_raw_input_is_the_identity():
    x = torch.randn(4, 3)
    torch.testing.assert_close(PositionalEncoding(0, include_input=True)(x), x)


def test_an_empty_encoding_is_refused():
    with pytest.raises(ValueError, match="n_freqs=0 without the raw input encodes nothing"):
        PositionalEncoding(0, include_input=False)


def _unit_directions(n: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_spherical_harmonics_satisfy_the_addition_theorem(degree):
    # Σ_m Y_l^m(d)² = (2l + 1) / 4π for every unit d and every band l.
    encoding = SphericalHarmonicsEncoding(degree)
    values = encoding(_unit_directions(200))
    assert encoding.out_dim == degree**2 and values.shape == (200, degree**2)
    for band in range(degree):
        in_band = values[:, band**2 : (band + 1) ** 2]
        torch.testing.assert_close(in_band.square().sum(-1), torch.full((200,), (2 * band + 1) / (4 * math.pi), dtype=torch.float64))


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    # ∫ Y_i Y_j dΩ = δ_ij, by Gauss–Legendre in cos θ (exact for these polynomials) times the
    # trapezoid rule in φ (exact for trigonometric polynomials of degree < the points).
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(8))
    phi = torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16)
    cos_t, phi_grid = torch.meshgrid(nodes, phi, indexing="ij")
    sin_t = (1 - cos_t**2).sqrt()
    d = torch.stack([sin_t * phi_grid.cos(), sin_t * phi_grid.sin(), cos_t], dim=-1).reshape(-1, 3)
    w = (weights[:, None] * (2 * math.pi / 16)).expand(8, 16).reshape(-1)
    values = SphericalHarmonicsEncoding(4)(d)
    gram = values.T @ (values * w[:, None])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)


def test_spherical_harmonics_values_at_the_pole():
    # At d = +z only the m = 0 functions are non-zero: Y_l^0 = √((2l + 1) / 4π).
    values = SphericalHarmonicsEncoding(4)(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))[0]
    expected = torch.zeros(16, dtype=torch.float64)
    for band in range(4):
        expected[band**2 + band] = math.sqrt((2 * band + 1) / (4 * math.pi))
    torch.testing.assert_close(values, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("degree", [0, 5, True])
def test_a_spherical_harmonics_degree_out_of_range_names_the_parameter(degree):

    with pytest.raises(ParameterError, match="degree"):
        SphericalHarmonicsEncoding(degree)


def test_spherical_harmonics_have_the_sign_and_order_of_their_definition():
    # Built here from the definition, not from the polynomials: the associated Legendre
    # function P_l^m(z) = (−1)^m (1 − z²)^{m/2} d^m P_l/dz^m (Condon–Shortley phase), the
    # normalisation K_l^m = √((2l + 1)/4π · (l − m)!/(l + m)!), and Y_l^m = √2 K P_l^|m| sin(|m|φ)
    # for m < 0, K P_l for m = 0, √2 K P_l^m cos(mφ) for m > 0, ordered m = −l … l in each band.
    d = _unit_directions(50, seed=3)
    x, y, z = (c.numpy() for c in d.unbind(-1))
    phi = np.arctan2(y, x)
    expected = []
    for band in range(4):
        for m in range(-band, band + 1):
            a = abs(m)
            legendre = np.polynomial.legendre.Legendre.basis(band).deriv(a)(z) * (-1) ** a * (1 - z**2) ** (a / 2)
            k = math.sqrt((2 * band + 1) / (4 * math.pi) * math.factorial(band - a) / math.factorial(band + a))
            angular = 1.0 if m == 0 else math.sqrt(2) * (np.sin(a * phi) if m < 0 else np.cos(a * phi))
            expected.append(k * legendre * angular)
    torch.testing.assert_close(SphericalHarmonicsEncoding(4)(d), torch.from_numpy(np.stack(expected, axis=-1)))
