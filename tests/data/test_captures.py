"""Captures as users bring them: images without alpha keep their own background, and the
renderer's (data.white_background) must be that background, or the run is refused in one line
before it starts."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import _lego_absent, compose_config, lego_dir
from own_scenes import jpeg, make_small_lego, variant

from nerf_lab.errors import DataError

lego = [pytest.mark.lego, _lego_absent]


def needs_lego(test):
    for mark in lego:
        test = mark(test)
    return test


def rgb_on_black(source: Path, folder: Path) -> str:
    """Alpha dropped as people convert Blender scenes: the colour composited onto black, RGB."""
    rgba = iio.imread(source).astype(np.float64) / 255
    iio.imwrite(folder / f"{source.stem}.png", np.round(255 * rgba[..., :3] * rgba[..., 3:]).astype(np.uint8))
    return f"./{folder.name}/{source.stem}"


@pytest.fixture(scope="module")
def small_lego(tmp_path_factory) -> Path:
    return make_small_lego(lego_dir(), tmp_path_factory.mktemp("lego") / "lego")


def _check(scene: Path, tmp_path: Path, *overrides: str) -> None:
    from nerf_lab.config.build import validate_config

    validate_config(compose_config(["data=blender", f"data.scene_dir={scene}", "data.resolution=16", *overrides], tmp_path / "run"), check_files=True)


@needs_lego
def test_black_images_without_alpha_under_a_white_background_are_refused_naming_the_key(small_lego, tmp_path):
    scene = variant(small_lego, tmp_path / "black", image=rgb_on_black)
    with pytest.raises(DataError) as caught:
        _check(scene, tmp_path)
    message = str(caught.value)
    assert message.startswith("data.white_background=true, but the training images have no alpha and a black background")
    assert "set data.white_background=false" in message and "\n" not in message
    _check(scene, tmp_path, "data.white_background=false")


@needs_lego
def test_white_images_without_alpha_under_a_black_background_are_refused(small_lego, tmp_path):
    scene = variant(small_lego, tmp_path / "white", image=jpeg)
    _check(scene, tmp_path)
    with pytest.raises(DataError, match="set data.white_background=true"):
        _check(scene, tmp_path, "data.white_background=false")


@needs_lego
def test_images_with_alpha_take_either_background(small_lego, tmp_path):
    _check(small_lego, tmp_path)
    _check(small_lego, tmp_path, "data.white_background=false")


def _rotation_about_x(degrees: float):
    import math

    import torch

    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rotation = torch.eye(4, dtype=torch.float64)
    rotation[1:3, 1:3] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return rotation


@pytest.mark.parametrize("degrees", [0.0, 90.0, 150.0])
def test_the_orbit_turns_about_the_cameras_mean_up(degrees):
    """A capture rotated about x (the up axis of a COLMAP capture is anywhere): the orbit of
    its rotated cameras is the upright orbit rotated alike (for 0°, world +z as before)."""
    import torch

    from nerf_lab.analysis.orbit import mean_up, orbit_poses

    upright = orbit_poses(4.0, 30.0, 8).double()  # cameras around +z at 30° elevation
    rotation = _rotation_about_x(degrees)
    captured = rotation @ upright
    up = mean_up(captured)
    assert torch.allclose(up, rotation[:3, 2], atol=1e-6)
    assert torch.allclose(orbit_poses(4.0, 30.0, 8, up=up).double(), captured, atol=1e-5)
