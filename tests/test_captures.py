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

pytestmark = [pytest.mark.lego, _lego_absent]


def rgb_on_black(source: Path, folder: Path) -> str:
    """Alpha dropped as people convert Blender scenes: the colour composited onto black, RGB."""
    rgba = iio.imread(source).astype(np.float64) / 255
    iio.imwrite(folder / f"{source.stem}.png", np.round(255 * rgba[..., :3] * rgba[..., 3:]).astype(np.uint8))
    return f"./{folder.name}/{source.stem}"


@pytest.fixture(scope="module")
def small_lego(tmp_path_factory) -> Path:
    return make_small_lego(lego_dir(), tmp_path_factory.mktemp("lego") / "lego")


def _check(scene: Path, tmp_path: Path, *overrides: str) -> None:
    from nerf_lab.records.config import validate_config

    validate_config(compose_config(["data=blender", f"data.scene_dir={scene}", "data.resolution=16", *overrides], tmp_path / "run"), check_files=True)


def test_black_images_without_alpha_under_a_white_background_are_refused_naming_the_key(small_lego, tmp_path):
    scene = variant(small_lego, tmp_path / "black", image=rgb_on_black)
    with pytest.raises(DataError) as caught:
        _check(scene, tmp_path)
    message = str(caught.value)
    assert message.startswith("data.white_background=true, but the training images have no alpha and a black background")
    assert "set data.white_background=false" in message and "\n" not in message
    _check(scene, tmp_path, "data.white_background=false")


def test_white_images_without_alpha_under_a_black_background_are_refused(small_lego, tmp_path):
    scene = variant(small_lego, tmp_path / "white", image=jpeg)
    _check(scene, tmp_path)
    with pytest.raises(DataError, match="set data.white_background=true"):
        _check(scene, tmp_path, "data.white_background=false")


def test_images_with_alpha_take_either_background(small_lego, tmp_path):
    _check(small_lego, tmp_path)
    _check(small_lego, tmp_path, "data.white_background=false")
