import math

import pytest
import torch

from nerf_lab.nerf.encoding import PositionalEncoding


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
