"""Scene problems found before the run folder exists, from the JSON and the PNG headers: one
line naming the file, exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import FAST_OVERRIDES
from user_commands import one_line_error, run_command

from helpers import slow_after_first

from nerf_lab.data.datamodule import BlenderDataModule
from nerf_lab.errors import DataError


@pytest.fixture
def scene(tmp_path, builtin_scene_32px) -> Path:
    copy = tmp_path / "scene"
    shutil.copytree(builtin_scene_32px, copy)
    return copy


def _zero_pose(scene: Path) -> None:
    meta = json.loads((scene / "transforms_train.json").read_text())
    meta["frames"][3]["transform_matrix"] = [[0.0] * 4 for _ in range(4)]
    (scene / "transforms_train.json").write_text(json.dumps(meta))


def _singular_pose(scene: Path) -> None:
    meta = json.loads((scene / "transforms_val.json").read_text())
    meta["frames"][1]["transform_matrix"][0][:3] = [0.0, 0.0, 0.0]  # a zero row: no rotation
    (scene / "transforms_val.json").write_text(json.dumps(meta))


def _text_among_pngs(scene: Path) -> None:
    (scene / "test" / "r_2.png").write_text("not an image\n")


def _rgb_without_alpha(scene: Path) -> None:
    path = scene / "train" / "r_6.png"
    iio.imwrite(path, iio.imread(path)[..., :3])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_zero_pose, r"transforms_train.json: frames\[3\].transform_matrix has last row \[0.0, 0.0, 0.0, 0.0\]"),
        (_singular_pose, r"transforms_val.json: frames\[1\].transform_matrix is singular"),
        (_text_among_pngs, r"test/r_2.png is not an image imageio can read"),
    ],
)
def test_the_scene_check_refuses_what_cannot_be_trained_on(scene, damage, message):
    damage(scene)
    with pytest.raises(DataError, match=message) as caught:
        BlenderDataModule(str(scene), resolution=32).check_scene()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("white_background", [True, False])
def test_an_image_without_alpha_is_used_as_it_is_on_any_background(scene, white_background):
    """An RGB image is opaque (its background was photographed): compositing leaves it alone,
    while the RGBA images beside it are composited onto the background."""
    _rgb_without_alpha(scene)
    datamodule = BlenderDataModule(str(scene), resolution=32, white_background=white_background, cache_dir=str(scene / "cache"))
    datamodule.check_scene()
    split = datamodule.load("train")
    rgb = iio.imread(scene / "train" / "r_6.png")
    assert torch.allclose(split.images[6], torch.from_numpy(rgb).float() / 255, atol=1e-3)  # float16 cache
    rgba = iio.imread(scene / "train" / "r_0.png").astype(np.float32) / 255
    background = 1.0 if white_background else 0.0
    expected = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]) * background
    assert torch.allclose(split.images[0], torch.from_numpy(expected), atol=1e-3)


@pytest.mark.parametrize("damage", slow_after_first([_zero_pose, _text_among_pngs]))
def test_train_refuses_the_scene_with_one_line_and_no_run_folder(scene, tmp_path, cache_dir, damage):
    damage(scene)
    result = run_command(
        "nerf_lab.train", *FAST_OVERRIDES, "data=blender", f"data.scene_dir={scene}", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir
    )
    assert one_line_error(result).startswith(f"error: {scene}")
    assert not (tmp_path / "run").exists()
