import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nerf_lab.nerf.encoding import PositionalEncoding
from nerf_lab.nerf.field import NeRFField
from helpers import renderer

from nerf_lab.nerf.marching import render_in_chunks
from nerf_lab.nerf.rays import RayBundle, image_rays


class AnalyticField(torch.nn.Module):
    """A field given in closed form: density(x) and a constant colour."""

    def __init__(self, density_fn, colour=(0.2, 0.5, 0.8)):
        super().__init__()
        self.density_fn = density_fn
        self.register_buffer("colour", torch.tensor(colour))

    def forward(self, positions, directions=None):
        return self.colour.expand(*positions.shape[:-1], 3), self.density_fn(positions)


def make_model(field, n_coarse, near, far, **kwargs):
    return renderer(field, None, n_coarse=n_coarse, n_fine=0, near=near, far=far, **kwargs)


@pytest.mark.parametrize(("sigma", "length"), [(0.5, 1.0), (2.0, 0.7), (8.0, 0.3)])
def test_slab_of_constant_density_has_closed_form_opacity(sigma, length):
    torch.manual_seed(0)
    # Non-unit directions: the renderer must scale depths by |d| to get lengths in the scene.
    slab = AnalyticField(lambda p: sigma * ((p[..., 0] > 1.0) & (p[..., 0] < 1.0 + length)).float())
    model = make_model(slab, n_coarse=50_000, near=0.0, far=2.0).train()
    rays = RayBundle(torch.zeros(4, 3), torch.tensor([[2.0, 0.0, 0.0]]).expand(4, 3))
    out = model(rays)
    expected = 1 - math.exp(-sigma * length)
    torch.testing.assert_close(out.opacity, torch.full((4,), expected), atol=1e-4, rtol=0)
    # What is not absorbed shows the white background.
    colour = torch.tensor([0.2, 0.5, 0.8])
    torch.testing.assert_close(out.rgb, (expected * colour + (1 - expected)).expand(4, 3), atol=1e-4, rtol=0)


def test_opaque_thin_shell_gives_its_depth():
    distance, n_samples, near, far = 3.3, 2000, 2.0, 6.0
    shell = AnalyticField(lambda p: 1e5 * ((p.norm(dim=-1) - distance).abs() < 2e-3).float())
    model = make_model(shell, n_coarse=n_samples, near=near, far=far).eval()
    directions = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    out = model(RayBundle(torch.zeros(64, 3), directions))
    torch.testing.assert_close(out.opacity, torch.ones(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.depth, torch.full((64,), distance), atol=(far - near) / n_samples, rtol=0)


def test_empty_space_shows_the_background_colour():
    empty = AnalyticField(lambda p: torch.zeros(p.shape[:-1]))
    model = make_model(empty, 32, 2.0, 6.0, background=(0.1, 0.2, 0.3)).eval()
    out = model(RayBundle(torch.zeros(5, 3), torch.randn(5, 3)))
    torch.testing.assert_close(out.opacity, torch.zeros(5))
    torch.testing.assert_close(out.rgb, torch.tensor([0.1, 0.2, 0.3]).expand(5, 3))


def tiny_field(view_dependent=False, depth=2, width=32):
    return NeRFField(
        PositionalEncoding(4), PositionalEncoding(2), depth=depth, width=width, skips=(),
        view_dependent=view_dependent,
    )


def test_fresh_field_is_not_saturated():
    torch.manual_seed(0)
    field = NeRFField(PositionalEncoding(10), PositionalEncoding(4), depth=8, width=256, skips=(4,))
    rgb, density = field(torch.rand(4096, 3) * 3 - 1.5, torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1))
    assert 0.2 < rgb.mean() < 0.8 and rgb.std() < 0.2
    model = renderer(field, None, 64, 0, 2.0, 6.0).eval()
    rays = image_rays(torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1]]), 40.0, 32, 32)
    ray_opacity = model(rays.reshape(-1)).opacity
    # Neither all-transparent (the white minimum) nor a solid wall from the first sample on.
    assert 0.05 < ray_opacity.mean() < 0.999


def test_field_widths_follow_the_encodings_and_skips():
    field = NeRFField(PositionalEncoding(10), PositionalEncoding(4), depth=8, width=256, skips=(4,))
    assert field.trunk[0].in_features == 63
    assert field.trunk[5].in_features == 256 + 63
    assert field.color_hidden.in_features == 256 + 27 and field.color_hidden.out_features == 128
    no_raw = NeRFField(PositionalEncoding(10, include_input=False), None, depth=4, width=128, skips=(), view_dependent=False)
    assert no_raw.trunk[0].in_features == 60 and len(no_raw.trunk) == 4


@pytest.mark.parametrize("kind", ["nerf", "ngp"])
def test_the_hidden_width_the_bench_measures_is_the_fields_own(kind):
    # The bench and the long-run warning time a (points × width) @ (width × width) product at
    # this width, read from the field, not from a config key a user's model may not have.
    if kind == "nerf":
        field = NeRFField(PositionalEncoding(4), PositionalEncoding(2), depth=3, width=96, skips=(), view_dependent=True)
    else:
        from nerf_lab.nerf.ngp_field import NGPField

        field = NGPField(PositionalEncoding(4), PositionalEncoding(2), width=48, n_geometry_features=15)
    assert renderer(field, None, 8, 0, 2.0, 6.0).hidden_width == (96 if kind == "nerf" else 48)


def test_view_dependent_colour_changes_with_direction_and_position_only_does_not():
    torch.manual_seed(0)
    points = torch.rand(16, 3).expand(2, 16, 3)
    directions = torch.tensor([[[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]])
    rgb, density = tiny_field(view_dependent=True)(points, directions)
    assert not torch.allclose(rgb[0], rgb[1]) and torch.allclose(density[0], density[1])
    rgb, _ = tiny_field(view_dependent=False)(points, directions)
    assert torch.allclose(rgb[0], rgb[1])


def test_fine_pass_outputs_and_sample_count():
    torch.manual_seed(0)
    model = renderer(tiny_field(True), tiny_field(True), n_coarse=16, n_fine=32, near=2.0, far=6.0).train()
    out = model(RayBundle(torch.zeros(8, 3), torch.randn(8, 3)))
    assert out.weights.shape == (8, 48)
    assert out.rgb.shape == out.rgb_coarse.shape == (8, 3)
    assert not torch.allclose(out.rgb, out.rgb_coarse)


def test_evaluation_is_deterministic_and_training_is_not():
    torch.manual_seed(0)
    model = renderer(tiny_field(), tiny_field(), 16, 16, 2.0, 6.0)
    rays = RayBundle(torch.zeros(8, 3), torch.randn(8, 3))
    model.eval()
    torch.testing.assert_close(model(rays).rgb, model(rays).rgb)
    model.train()
    assert not torch.allclose(model(rays).rgb, model(rays).rgb)


def test_gradients_flow_a_tiny_model_fits_one_colour():
    torch.manual_seed(0)
    model = renderer(tiny_field(), None, 16, 0, 2.0, 6.0, background=(0.0, 0.0, 0.0)).train()
    target = torch.tensor([0.9, 0.3, 0.1])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        rays = RayBundle(torch.randn(64, 3) * 0.1 + torch.tensor([0.0, 0.0, 4.0]), torch.tensor([[0.0, 0.0, -1.0]]).expand(64, 3))
        loss = (model(rays).rgb - target).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 1e-3


def test_chunked_rendering_equals_one_pass():
    torch.manual_seed(0)
    model = renderer(tiny_field(True), tiny_field(True), 8, 8, 2.0, 6.0).eval()
    rays = image_rays(torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1]]), 20.0, 17, 13)
    with torch.no_grad():
        whole = model(rays.reshape(-1))
    chunked = render_in_chunks(model, rays, chunk=10)
    assert chunked.rgb.shape == (17, 13, 3) and chunked.depth.shape == (17, 13)
    torch.testing.assert_close(chunked.rgb.reshape(-1, 3), whole.rgb)
    torch.testing.assert_close(chunked.depth.reshape(-1), whole.depth)


def _peak_rss_bytes() -> int:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) * 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset the peak RSS")
def test_800px_view_renders_in_the_memory_of_one_chunk():
    torch.manual_seed(0)
    width = 32
    model = renderer(tiny_field(width=width), None, 8, 0, 2.0, 6.0).eval()
    pose = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1]])
    rays = image_rays(pose, 1100.0, 800, 800)
    chunk = 4096
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))

    # Warm up on a view of exactly one chunk: the allocator keeps the pages one chunk needs
    # (and libraries load lazily on first use), so what grows afterwards is what depends on
    # the image size.
    render_in_chunks(model, image_rays(pose, 1100.0, 64, 64), chunk=chunk)
    seen.clear()

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set size
    before = _peak_rss_bytes()
    out = render_in_chunks(model, rays, chunk=chunk)
    grown = _peak_rss_bytes() - before

    assert out.rgb.shape == (800, 800, 3)
    assert max(seen) == chunk and len(seen) == math.ceil(800 * 800 / chunk)
    # The outputs take 13 MB; the allocator's slack on a busy machine has measured up to
    # ~60 MB; rendering all 640k rays in one pass grows the peak by ~2.5 GB.
    outputs_bytes = 800 * 800 * 5 * 4
    one_pass_hidden_bytes = 800 * 800 * 8 * width * 4  # one activation of one layer, all rays at once
    assert grown < outputs_bytes + 128 * 2**20 < one_pass_hidden_bytes


@pytest.mark.parametrize("paper", [False, True])
def test_flop_count_of_a_training_step_is_what_torch_counts(paper):
    """`training_flops_per_point` (the bench's matrix-product bound) against torch's own count
    of the matrix products of a forward and backward pass (FlopCounterMode), for Tiny NeRF at
    L = 6 and for the paper's field (skip, view-dependent branch)."""
    from torch.utils.flop_counter import FlopCounterMode

    if paper:
        field = NeRFField(PositionalEncoding(10), PositionalEncoding(4, include_input=False), depth=8, width=256, skips=(4,))
    else:
        field = NeRFField(PositionalEncoding(6, include_input=True), None, depth=4, width=128, skips=(), view_dependent=False)
    points, directions = torch.rand(10, 3), F.normalize(torch.rand(10, 3), dim=-1)
    with FlopCounterMode(display=False) as counter:
        sigma, rgb = field(points, directions)
        (sigma.sum() + rgb.sum()).backward()
    assert counter.get_total_flops() == 10 * field.training_flops_per_point()
    tiny = NeRFField(PositionalEncoding(6, include_input=True), None, depth=4, width=128, skips=(), view_dependent=False)
    # The hierarchical model sends 64 points through the coarse field and 64 + 128 through the fine.
    model = renderer(tiny, tiny, n_coarse=64, n_fine=128, near=2.0, far=6.0)
    assert model.training_flops_per_ray() == (64 + 192) * 317_952


class CountingShell(AnalyticField):
    """An opaque sphere of radius 1 (σ = 50 inside): every ray from outside stops at it."""

    def __init__(self):
        super().__init__(lambda p: 50.0 * (p.norm(dim=-1) < 1.0).float())
        self.points = 0

    def forward(self, positions, directions=None):
        self.points += positions.reshape(-1, 3).shape[0]
        return super().forward(positions, directions)

    def training_flops_per_point(self):
        return 1  # so that a ray's FLOP estimate is the points it sends


@pytest.mark.parametrize("fine_union", [True, False])
def test_the_fine_pass_alone_renders_the_surface_from_its_own_samples(fine_union):
    """An opaque sphere seen from outside: with `fine_union=False` the fine field is asked only
    at its own 32 samples a ray (not 64 + 32) and still renders the sphere's surface, at t = 3
    on rays along +z from z = −4, to within one coarse step; the FLOP estimate of a training
    step counts the points the fields were sent."""
    rays = RayBundle(torch.tensor([[0.0, 0.0, -4.0]]).expand(20, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(20, 3))
    coarse, fine = CountingShell(), CountingShell()
    model = renderer(coarse, fine, 64, 32, 2.0, 6.0)
    model.sampler.fine_union = fine_union
    outputs = model.eval()(rays)
    assert fine.points == 20 * (32 if not fine_union else 64 + 32) and coarse.points == 20 * 64
    assert float(outputs.opacity.min()) > 0.99
    torch.testing.assert_close(outputs.depth, torch.full((20,), 3.0), atol=(6.0 - 2.0) / 64, rtol=0)
    coarse.points = fine.points = 0
    model.train()(rays)
    points_per_ray = (coarse.points + fine.points) / 20
    assert model.training_flops_per_ray() == points_per_ray * model.coarse_field.training_flops_per_point()


@pytest.mark.parametrize("n_fine", [0, 64])
def test_early_termination_skips_the_samples_behind_the_surface_and_changes_the_view_by_less_than_its_threshold(n_fine):
    rays = RayBundle(torch.tensor([[0.0, 0.0, -4.0]]).expand(50, 3), torch.nn.functional.normalize(
        torch.tensor([[0.0, 0.0, 1.0]]) + 0.05 * torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), dim=-1))
    views = {}
    for stop in (0.0, 1e-4):
        fields = [CountingShell(), CountingShell() if n_fine else None]
        model = renderer(*fields, 64, n_fine, 2.0, 6.0, stop_transmittance=stop).eval()
        views[stop] = (model(rays), sum(f.points for f in fields if f is not None))
    (full, all_points), (stopped, fewer_points) = views[0.0], views[1e-4]
    assert float(full.opacity.min()) > 0.99  # every ray hits the sphere
    torch.testing.assert_close(stopped.rgb, full.rgb, atol=1e-4, rtol=0)
    torch.testing.assert_close(stopped.opacity, full.opacity, atol=1e-4, rtol=0)
    # Rays enter the sphere at t ≈ 3 of [2, 6] and are opaque within 0.2: about 2/3 of the coarse
    # samples are behind it. The fine pass's samples cluster at the surface, so fewer of them are.
    bound = 0.6 if n_fine == 0 else 0.8
    assert fewer_points < bound * all_points
    assert float(stopped.field_evals_per_ray) < bound * float(full.field_evals_per_ray)


class PassCounter(CountingShell):
    """The shell, recording each call's points a ray (one call a pass) and holding one byte a
    point, so that a ray's activation estimate is the points of the pass it counts."""

    def __init__(self):
        super().__init__()
        self.per_ray = []

    def forward(self, positions, directions=None):
        self.per_ray.append(positions.shape[1])
        return super().forward(positions, directions)

    def activation_bytes_per_point(self):
        return 1


@pytest.mark.parametrize(
    "n_coarse, n_fine, fine_union", [(64, 0, True), (64, 128, True), (256, 32, False)],
    ids=["one pass", "the paper's 64 + 128", "256 coarse, 32 fine alone"],
)
def test_the_render_chunk_estimate_counts_the_largest_pass_the_renderer_sends(n_coarse, n_fine, fine_union):
    """What `sampling.chunk=null` sizes chunks by (hardware.render_chunk): a ray's points in the
    largest pass the renderer actually evaluates, at the field's bytes a point: the fine pass's
    coarse + fine samples in the paper's sampling, the coarse pass's when the fine one has its
    own few samples."""
    coarse = PassCounter()
    fine = PassCounter() if n_fine else None
    model = renderer(coarse, fine, n_coarse, n_fine, 2.0, 6.0)
    model.sampler.fine_union = fine_union
    rays = RayBundle(torch.tensor([[0.0, 0.0, -4.0]]).expand(6, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(6, 3))
    model.eval()(rays)
    sent = coarse.per_ray + (fine.per_ray if fine is not None else [])
    assert len(sent) == (2 if n_fine else 1)
    assert model.activation_bytes_per_ray() == max(sent)
