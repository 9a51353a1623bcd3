import math

import pytest
import torch

from nerf_lab.nerf.rendering import (
    accumulate,
    composite_onto_background,
    expected_depth,
    opacity,
    render_weights,
)


def test_docstring_example():
    weights, transmittance, alphas = render_weights(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]))
    a = 1 - math.exp(-0.5)
    torch.testing.assert_close(alphas, torch.tensor([a, a]))
    torch.testing.assert_close(transmittance, torch.tensor([1.0, math.exp(-0.5)]))
    torch.testing.assert_close(weights, torch.tensor([a, math.exp(-0.5) * a]))
    assert opacity(weights).item() == pytest.approx(1 - math.exp(-1.0), abs=1e-6)


def test_weights_are_a_sub_probability():
    generator = torch.Generator().manual_seed(0)
    # Densities from empty to very dense, intervals from tiny to long.
    densities = torch.rand(512, 96, generator=generator) ** 4 * 200.0
    deltas = torch.rand(512, 96, generator=generator) * 0.1
    weights, transmittance, _ = render_weights(densities, deltas)
    assert (weights >= 0).all()
    assert (weights.sum(-1) <= 1 + 1e-6).all()
    assert (transmittance[:, 1:] <= transmittance[:, :-1] + 1e-7).all()  # light only gets absorbed


def test_composite_of_constant_colour_is_that_colour_scaled_by_opacity():
    weights, _, _ = render_weights(torch.full((3, 10), 2.0), torch.full((3, 10), 0.05))
    colour = torch.tensor([0.2, 0.4, 0.6]).expand(3, 10, 3)
    torch.testing.assert_close(accumulate(weights, colour), opacity(weights)[:, None] * colour[:, 0])


def test_empty_ray_shows_the_background_and_far_depth():
    weights, _, _ = render_weights(torch.zeros(2, 8), torch.full((2, 8), 0.5))
    background = torch.tensor([1.0, 1.0, 1.0])
    rgb = composite_onto_background(accumulate(weights, torch.rand(2, 8, 3)), opacity(weights), background)
    torch.testing.assert_close(rgb, background.expand(2, 3))
    depths = torch.linspace(2, 6, 8).expand(2, 8)
    torch.testing.assert_close(expected_depth(weights, depths), torch.full((2,), 6.0))


def test_renders_in_float32_under_bfloat16_inputs():
    weights, _, _ = render_weights(torch.ones(4, dtype=torch.bfloat16), torch.ones(4, dtype=torch.bfloat16))
    assert weights.dtype == torch.float32
