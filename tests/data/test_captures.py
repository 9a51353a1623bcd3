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


def rgb_on_grey(source: Path, folder: Path) -> str:
    """Alpha dropped onto a grey backdrop (0.5, 0.5, 0.5), RGB."""
    rgba = iio.imread(source).astype(np.float64) / 255
    rgb = rgba[..., :3] * rgba[..., 3:] + 0.5 * (1 - rgba[..., 3:])
    iio.imwrite(folder / f"{source.stem}.png", np.round(255 * rgb).astype(np.uint8))
    return f"./{folder.name}/{source.stem}"


@needs_lego
def test_images_on_a_grey_backdrop_are_refused_with_the_colour_that_fits_and_train_with_it(small_lego, tmp_path):
    """A backdrop neither black nor white has no value of data.white_background that fits:
    the line names data.background_color with the measured colour, and with it the renderer
    composites onto that grey and the blank-image mark is scored against it."""
    from nerf_lab.config.build import build_module

    scene = variant(small_lego, tmp_path / "grey", image=rgb_on_grey)
    for setting in ([], ["data.white_background=false"]):
        with pytest.raises(DataError) as caught:
            _check(scene, tmp_path, *setting)
        message = str(caught.value)
        assert "no alpha and a uniform background (mean border colour 0.50, 0.50, 0.50" in message
        assert "set data.background_color=[0.50,0.50,0.50] so that" in message and "\n" not in message
    chosen = "data.background_color=[0.5,0.5,0.5]"
    _check(scene, tmp_path, chosen)
    cfg = compose_config(["data=blender", f"data.scene_dir={scene}", "data.resolution=16", chosen], tmp_path / "run")
    assert build_module(cfg).renderer.background.tolist() == [0.5, 0.5, 0.5]
    # Black images under a grey background_color: the line names both keys to change.
    black = variant(small_lego, tmp_path / "black", image=rgb_on_black)
    with pytest.raises(DataError, match=r"set data.white_background=false and data.background_color=null so that"):
        _check(black, tmp_path, chosen)


@pytest.mark.parametrize("colour", ["[0.5,0.5]", "[0,0,2]", "grey"])
def test_a_background_colour_that_is_not_three_fractions_is_refused(colour, tmp_path):
    from nerf_lab.config.build import validate_config
    from nerf_lab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data.background_color=.* is not allowed: expected \[r, g, b\], each in \[0, 1\]"):
        validate_config(compose_config([f"data.background_color={colour}"], tmp_path / "run"))


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
