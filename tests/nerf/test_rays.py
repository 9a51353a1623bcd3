import json
import math

import torch
from conftest import lego_dir, requires_lego

from nerf_lab.nerf.rays import focal_from_fov, image_rays, pixel_rays


def test_focal_length_from_field_of_view():
    assert math.isclose(focal_from_fov(math.pi / 2, 200), 100.0)
    # Lego's camera at 100 px: camera_angle_x of transforms_train.json, 100 px wide.
    assert math.isclose(focal_from_fov(0.6911112070083618, 100), 138.8888, rel_tol=1e-4)


def test_centre_pixel_of_identity_pose_looks_down_minus_z():
    rays = image_rays(torch.eye(4), focal=80.0, height=101, width=101)
    assert rays.shape == (101, 101)
    torch.testing.assert_close(rays.directions[50, 50], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(rays.origins[50, 50], torch.zeros(3))


def test_image_axes_follow_the_opengl_convention():
    rays = image_rays(torch.eye(4), focal=50.0, height=100, width=100)
    top_left, bottom_right = rays.directions[0, 0], rays.directions[-1, -1]
    assert top_left[0] < 0 < top_left[1]  # left is −x, top is +y
    assert bottom_right[0] > 0 > bottom_right[1]
    # Pixel centres: the corner ray is half a pixel in from the image corner.
    torch.testing.assert_close(top_left, torch.tensor([-49.5 / 50, 49.5 / 50, -1.0]))


def test_pose_rotates_and_translates_rays():
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # 90° about y
    pose[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    rays = pixel_rays(pose[None], torch.tensor([49.5]), torch.tensor([49.5]), 50.0, 100, 100)
    torch.testing.assert_close(rays.origins[0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(rays.directions[0], torch.tensor([-1.0, 0.0, 0.0]))


@requires_lego
def test_lego_training_cameras_look_at_the_scene_centre():
    meta = json.loads((lego_dir() / "transforms_train.json").read_text())
    poses = torch.tensor([frame["transform_matrix"] for frame in meta["frames"]])
    width = height = 800
    focal = focal_from_fov(meta["camera_angle_x"], width)
    rows = torch.full((len(poses),), height / 2 - 0.5)
    rays = pixel_rays(poses, rows, rows.clone(), focal, height, width)
    direction = rays.directions / rays.directions.norm(dim=-1, keepdim=True)
    # Distance from the origin to each ray: |o − (o·d) d|.
    closest = rays.origins - (rays.origins * direction).sum(-1, keepdim=True) * direction
    assert len(poses) == 100
    assert closest.norm(dim=-1).max() < 0.5


def test_a_views_rays_are_the_same_under_bf16_autocast():
    """nerf_lab.render and the orbit build a view's rays inside the bf16 autocast they render
    in (precision=auto on a GPU or a CPU with AMX): the directions must stay float32 and equal,
    bit for bit, to those built outside it. (A matrix product under autocast rounds to bfloat16:
    a direction off by up to 2⁻⁹ of its length, a few pixels at 800 px.)"""
    angle = torch.tensor(0.3)
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor(
        [[torch.cos(angle), 0.0, torch.sin(angle)], [0.0, 1.0, 0.0], [-torch.sin(angle), 0.0, torch.cos(angle)]]
    )
    pose[:3, 3] = torch.tensor([0.5, -1.0, 4.0])
    plain = image_rays(pose, 1111.1, 40, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = image_rays(pose, 1111.1, 40, 50)
    assert under.directions.dtype == torch.float32
    assert torch.equal(under.directions, plain.directions) and torch.equal(under.origins, plain.origins)
