"""Empty-space skipping: the occupancy grid, rays clipped to the scene's box, and the model
that sends only occupied samples to its fields."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nerf_lab.errors import ConfigError
from nerf_lab.nerf.encoding import PositionalEncoding
from nerf_lab.nerf.field import NeRFField
from helpers import events, renderer

from nerf_lab.nerf.marching import bucket_size, render_in_chunks
from nerf_lab.nerf.occupancy import OccupancyGrid, occupied_at
from nerf_lab.nerf.rays import ray_box_intersection
from nerf_lab.nerf.rays import RayBundle, image_rays, look_at
from nerf_lab.nerf.sampling import midpoints, stratified_edges
from nerf_lab.config.build import validate_config
from nerf_lab.config.compose import CONF_DIR

BOX = [[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]]
# An axis-aligned block whose faces lie on cell boundaries of a 12³ grid over BOX (cells of
# 0.25): the cells it touches are known exactly, and it fills each of them whole.
BLOCK_LOW, BLOCK_HIGH = torch.tensor([-0.5, 0.0, -0.75]), torch.tensor([0.25, 0.5, 0.5])


def block_density(points):
    return 5.0 * ((points > BLOCK_LOW) & (points < BLOCK_HIGH)).all(dim=-1).float()


class CountingField(torch.nn.Module):
    """The block, coloured by position; remembers every point it was asked about."""

    def __init__(self, density_fn=block_density):
        super().__init__()
        self.density_fn = density_fn
        self.seen: list[torch.Tensor] = []

    def forward(self, positions, directions=None):
        self.seen.append(positions.detach().reshape(-1, 3))
        rgb = torch.sigmoid(positions * torch.tensor([1.0, -2.0, 3.0]))
        return rgb, self.density_fn(positions)

    def points_seen(self):
        return torch.cat(self.seen) if self.seen else torch.zeros(0, 3)


def fitted_grid(density_fn=block_density, resolution=12, updates=3):
    grid = OccupancyGrid(BOX, resolution=resolution, step_size=0.0625, warmup_steps=0, update_every=1)
    for step in range(updates):
        grid.update(density_fn, step)
    return grid


def view_rays(size=20):
    return image_rays(look_at(torch.tensor([2.5, -2.0, 2.0])), focal=size * 1.1, height=size, width=size)


def test_slab_method_gives_the_part_of_the_ray_inside_the_box():
    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[0.0, 0.0, -4.0], [0.0, 3.0, -4.0], [-4.0, -4.0, 0.0], [0.0, 0.0, 0.0]])
    directions = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    t_min, t_max, hit = ray_box_intersection(origins, directions, box, near=0.5, far=6.0)
    # Along z at speed 2: inside for z in [-1, 1], t in [1.5, 2.5]; the second ray passes
    # at y = 3 and misses (it reads far); the diagonal enters at t = 3 and leaves at t = 5;
    # the last starts inside, so it is clipped to near: [0.5, 1].
    torch.testing.assert_close(t_min, torch.tensor([1.5, 6.0, 3.0, 0.5]))
    torch.testing.assert_close(t_max, torch.tensor([2.5, 6.0, 5.0, 1.0]))
    assert hit.tolist() == [True, False, True, True]


def test_grid_marks_exactly_the_cells_the_block_touches():
    grid = fitted_grid()
    centres = (torch.arange(12) + 0.5) * 0.25 - 1.5
    x, y, z = torch.meshgrid(centres, centres, centres, indexing="ij")
    expected = block_density(torch.stack([x, y, z], dim=-1)) > 0
    assert int(expected.sum()) == 3 * 2 * 5
    assert torch.equal(grid.occupied, expected)
    assert float(grid.occupied_fraction()) == pytest.approx(30 / 12**3)


def test_grid_opens_every_cell_during_warm_up_and_evaluates_nothing():
    points_asked = []

    def density(points):
        points_asked.append(points.shape[0])
        return block_density(points)

    grid = OccupancyGrid(BOX, resolution=8, step_size=0.0625, warmup_steps=32)
    for step in (0, 16):
        assert grid.update(density, step) is False
    assert points_asked == [] and bool(grid.occupied.all())
    grid.update(density, 32)  # the first refresh reads every cell
    assert points_asked == [8**3]
    assert float(grid.occupied_fraction()) < 0.1


def test_a_ray_that_misses_the_box_gets_no_samples_and_renders_the_background():
    field = CountingField(lambda p: torch.full(p.shape[:-1], 50.0))  # everything is opaque
    model = renderer(field, None, 32, 0, 2.0, 6.0, background=(0.1, 0.2, 0.3), clip_to_box=True, scene_box=BOX).eval()
    miss = RayBundle(torch.tensor([[0.0, 3.0, -4.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    out = model(miss)
    assert field.points_seen().shape[0] == 0
    torch.testing.assert_close(out.rgb, torch.tensor([[0.1, 0.2, 0.3]]))
    torch.testing.assert_close(out.opacity, torch.zeros(1))
    assert float(out.field_evals_per_ray) == 0.0


def test_clipped_samples_keep_the_closed_form_opacity_of_a_slab():
    # σ = 2 between x = 1 and x = 1.4, inside the box: opacity 1 − exp(−σ ℓ) as without clipping.
    slab = CountingField(lambda p: 2.0 * ((p[..., 0] > 1.0) & (p[..., 0] < 1.4)).float())
    # The ray is in the box for t in [2.5, 5.5]: 300 samples of 0.01, whose edges fall on the slab's.
    model = renderer(slab, None, 300, 0, 0.0, 6.0, clip_to_box=True, scene_box=BOX).eval()
    out = model(RayBundle(torch.tensor([[-4.0, 0.2, 0.1]]), torch.tensor([[1.0, 0.0, 0.0]])))
    torch.testing.assert_close(out.opacity, torch.tensor([1 - math.exp(-0.8)]), atol=1e-4, rtol=0)
    # All 300 samples lie in the 3 units inside the box, none in the 3 before it.
    assert bool((slab.points_seen()[:, 0] > -1.5).all())


@pytest.mark.parametrize("n_fine", [0, 24])
def test_a_view_is_the_same_with_and_without_the_grid_when_empty_space_is_empty(n_fine):
    def make(grid):
        fine = CountingField() if n_fine else None
        return renderer(CountingField(), fine, 48, n_fine, 2.0, 6.0, occupancy=grid).eval()

    dense, skipping = make(None), make(fitted_grid())
    rays = view_rays()
    plain = render_in_chunks(dense, rays, chunk=150)
    skipped = render_in_chunks(skipping, rays, chunk=150)
    assert float(plain.opacity.max()) > 0.5  # the block is in view
    for key in ("rgb", "opacity", "depth"):
        torch.testing.assert_close(getattr(skipped, key), getattr(plain, key), atol=1e-4, rtol=0)
    seen_dense = sum(f.points_seen().shape[0] for f in (dense.coarse_field, dense.fine_field) if f is not None)
    seen_skipping = sum(f.points_seen().shape[0] for f in (skipping.coarse_field, skipping.fine_field) if f is not None)
    assert seen_skipping < 0.2 * seen_dense


def test_samples_in_empty_cells_never_reach_the_field():
    grid = fitted_grid()
    field = CountingField()
    model = renderer(field, None, 64, 0, 2.0, 6.0, occupancy=grid).eval()
    rays = view_rays(12).reshape(-1)
    out = model(rays)
    seen = field.points_seen()
    # Independently: the evaluation samples (interval midpoints) that lie in occupied cells.
    depths = midpoints(stratified_edges(rays.shape[0], 64, 2.0, 6.0, perturb=False))
    points = rays.origins[:, None] + rays.directions[:, None] * depths[..., None]
    expected = int(occupied_at(grid.occupied, grid.box, points).sum())
    # The batch is padded to a bucket size with copies of a kept point: the distinct points
    # are exactly the kept samples.
    assert 0 < torch.unique(seen, dim=0).shape[0] == expected < points.shape[0] * points.shape[1] // 10
    assert seen.shape[0] == bucket_size(expected)
    assert bool(grid.lookup(seen).all())
    assert float(out.field_evals_per_ray) == pytest.approx(expected / rays.shape[0])


def test_gradients_reach_the_field_through_the_gathered_samples():
    torch.manual_seed(0)
    field = NeRFField(PositionalEncoding(4), None, depth=2, width=32, skips=(), view_dependent=False)
    grid = OccupancyGrid(BOX, resolution=12, step_size=0.0625, warmup_steps=0)
    grid.update(block_density, 0)
    model = renderer(field, None, 32, 0, 2.0, 6.0, occupancy=grid, clip_to_box=True).train()
    out = model(view_rays(8).reshape(-1))
    out.rgb.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in field.parameters())


def test_a_field_in_the_white_minimum_is_not_locked_out():
    torch.manual_seed(0)
    field = NeRFField(PositionalEncoding(4), None, depth=2, width=32, skips=(), view_dependent=False)
    with torch.no_grad():
        field.head.bias[3] = -10.0  # ReLU(σ) = 0 everywhere: the white minimum
    grid = OccupancyGrid(BOX, resolution=8, step_size=0.0625, warmup_steps=20, update_every=4)
    model = renderer(field, None, 16, 0, 2.0, 6.0, occupancy=grid, clip_to_box=True).train()
    assert grid.update(model.density, 20) is True  # collapsed: every cell re-opened …
    assert bool(grid.occupied.all())
    assert grid.update(model.density, 24) is False  # … and left open for another warm-up
    assert bool(grid.occupied.all())
    rays = RayBundle(torch.tensor([[0.0, 0.0, -4.0]]), torch.tensor([[0.0, 0.0, 1.0]]))
    assert float(model(rays).field_evals_per_ray) == 16  # every sample reaches the field


@pytest.mark.parametrize(("n", "size"), [(0, 0), (1, 1), (15, 15), (17, 18), (4600, 4608), (65000, 65536)])
def test_bucket_sizes_waste_at_most_an_eighth(n, size):
    assert bucket_size(n) == size and size - n <= n / 8


def test_grid_survives_a_state_dict_round_trip():
    grid = fitted_grid()
    copy = OccupancyGrid(BOX, resolution=12, step_size=0.0625, warmup_steps=0, update_every=1)
    copy.load_state_dict(grid.state_dict())
    assert torch.equal(copy.occupied, grid.occupied) and torch.equal(copy.density, grid.density)
    assert int(copy.refreshes) == 3


def test_a_training_run_logs_the_grid_and_its_checkpoint_brings_it_back(make_cfg):
    from nerf_lab.train import train
    from nerf_lab.runs.checkpoints import load_trained

    cfg = make_cfg("sampling=occupancy", "sampling.n_c=16", "sampling.grid.resolution=16",
                   "sampling.grid.warmup_steps=4", "sampling.grid.update_every=2")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    saved = {k.removeprefix("renderer.sampler.grid."): v for k, v in checkpoint["state_dict"].items() if ".grid." in k}
    assert int(saved["refreshes"]) == 4  # steps 4, 6, 8, 10 of 12
    restored = load_trained(run / "checkpoints" / "last.ckpt").module
    assert torch.equal(restored.renderer.sampler.grid.density, saved["density"])
    assert torch.equal(restored.renderer.sampler.grid.occupied, saved["occupied"])
    scalars = set(events(run).Tags()["scalars"])
    assert {"train/occupied_fraction", "train/field_evals_per_ray"} <= scalars


def test_builtin_scene_box_in_config_is_the_scene_s_own():
    from nerf_lab.data.builtin_scene import SCENE_BOX

    assert OmegaConf.load(CONF_DIR / "data" / "builtin.yaml").scene_box == [list(c) for c in SCENE_BOX]


@pytest.mark.parametrize(
    ("override", "key"),
    [("sampling.grid.threshold=1.5", "sampling.grid.threshold"), ("data.scene_box=[[0,0,0],[1,1,-1]]", "data.scene_box"),
     ("data.scene_box=null", "data.scene_box")],
)
def test_bad_grid_settings_name_their_key(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(make_cfg("sampling=occupancy", override))


def test_the_grid_owns_its_schedule_refreshing_every_update_every_steps_after_warm_up():
    calls = []

    def density(points):
        calls.append(points.shape[0])
        return block_density(points)

    grid = OccupancyGrid(BOX, resolution=4, step_size=0.0625, warmup_steps=8, update_every=4)
    for step in range(17):
        grid.update(density, step)
    assert len(calls) == 3  # steps 8, 12 and 16: none in the warm-up, none between refreshes
