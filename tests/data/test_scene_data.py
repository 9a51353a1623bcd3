import json
import math
import os
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import lego_dir, requires_lego

from nerf_lab.data.blender import load_split, read_split_index
from nerf_lab.data.builtin_scene import (
    SCENE,
    SPLIT_SIZES,
    Cylinder,
    camera_positions,
    look_at_origin,
    render_view,
    trace,
)
from nerf_lab.errors import DataError
from nerf_lab.nerf.rays import focal_from_fov, image_rays

LEGO_FOV = 0.6911112070083618


# --- the real Lego scene ---


@requires_lego
def test_lego_at_100px(cache_dir):
    split = load_split(lego_dir(), "train", 100, cache_dir=cache_dir)
    assert split.images.shape == (100, 100, 100, 3)
    assert split.images.min() >= 0 and split.images.max() <= 1
    corners = split.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.ones_like(corners))  # white background
    assert math.isclose(split.focal, 138.8888, rel_tol=1e-4)
    assert math.isclose(split.focal, 0.5 * 100 / math.tan(0.5 * LEGO_FOV))


@requires_lego
def test_lego_silhouette_ray_passes_close_to_the_object(cache_dir):
    split = load_split(lego_dir(), "train", 100, cache_dir=cache_dir)
    view = split.images[0]
    # The object's pixels are those not white; take the left-most such pixel on the middle row.
    row = 50
    cols = torch.nonzero((view[row] < 0.9).any(-1)).flatten()
    assert len(cols) > 0
    rays = image_rays(split.poses[0], split.focal, 100, 100)
    origin, direction = rays.origins[row, cols[0]], rays.directions[row, cols[0]]
    direction = direction / direction.norm()
    closest = origin - (origin @ direction) * direction
    # The Lego model fits inside a sphere of radius ~1.5 about the origin: the silhouette ray
    # grazes it, well inside the cameras' distance (~4).
    assert 0.3 < closest.norm() < 1.6


@requires_lego
def test_lego_at_800px_scales_shapes_and_focal(cache_dir):
    small = load_split(lego_dir(), "val", 100, cache_dir=cache_dir)
    full = load_split(lego_dir(), "val", 800, cache_dir=cache_dir)
    assert full.images.shape == (13, 800, 800, 3)
    assert math.isclose(full.focal, 8 * small.focal, rel_tol=1e-9)
    # Area averaging: each 100 px pixel is the mean of its 8 × 8 block at 800 px.
    blocks = full.images.reshape(13, 100, 8, 100, 8, 3).mean(dim=(2, 4))
    torch.testing.assert_close(blocks, small.images, atol=2e-3, rtol=0)


# --- the built-in scene ---


def test_builtin_scene_is_in_the_blender_layout(builtin_scene_32px):
    for split, count in SPLIT_SIZES.items():
        index = read_split_index(builtin_scene_32px, split)
        assert len(index.frames) == count
        assert math.isclose(index.camera_angle_x, LEGO_FOV)
        image = iio.imread(index.frames[0].path)
        assert image.shape == (32, 32, 4) and image.dtype == np.uint8


def test_builtin_scene_alpha_is_what_the_tracer_hits(builtin_scene_32px):
    index = read_split_index(builtin_scene_32px, "train")
    pose = torch.tensor(index.frames[7].pose)
    rgba = iio.imread(index.frames[7].path)
    alpha = rgba[..., 3]
    assert (alpha == 255).sum() > 50 and (alpha == 0).sum() > 50  # object and background both show
    # NeRF's own rays for this camera: where the image is opaque they hit a surface of the
    # tracer, where it is transparent they miss every surface.
    rays = image_rays(pose, focal_from_fov(index.camera_angle_x, 32), 32, 32)
    distance, _ = trace(rays.origins.reshape(-1, 3).double().numpy(), rays.directions.reshape(-1, 3).double().numpy())
    hit = np.isfinite(distance).reshape(32, 32)
    assert hit[alpha == 255].all()
    assert not hit[alpha == 0].any()


def test_builtin_scene_has_colour_texture_and_thin_parts():
    pose = look_at_origin(camera_positions("test")[0])
    image = render_view(pose, 96)
    opaque = image[..., 3] > 0.99
    colours = image[opaque][:, :3]
    assert np.ptp(colours, axis=0).min() > 0.5  # distinct colours, not a grey blob
    fractional = (image[..., 3] > 0.05) & (image[..., 3] < 0.95)
    assert fractional.sum() > 20  # antialiased silhouettes


@pytest.mark.parametrize("resolution", [96, 32])
def test_builtin_scene_thin_poles_are_as_wide_in_the_image_as_their_projection(resolution):
    """Where a pole stands against the background, the image row through its axis (a quarter
    below its top) is covered (alpha summed over the row) by the pole's projected width
    2 r f / depth: a few pixels at 96 px, under one at 32 px; and it is the pole's yellow."""
    pose = look_at_origin(camera_positions("test")[0])
    image = render_view(pose, resolution)
    focal = focal_from_fov(LEGO_FOV, resolution)
    world_to_camera = np.linalg.inv(pose)
    poles = [s for s in SCENE if isinstance(s, Cylinder) and s.radius < 0.1]
    measured = 0
    for pole in poles:
        x, y, z, _ = world_to_camera @ np.array([*pole.centre_xy, pole.z_max - 0.25, 1.0])
        column, row = resolution / 2 + focal * x / -z, int(resolution / 2 - focal * y / -z)
        window = image[row, max(0, int(column) - 4) : int(column) + 5]
        if window[0, 3] > 0 or window[-1, 3] > 0:
            continue  # something else is behind or in front of this pole from here
        expected_width = 2 * pole.radius * focal / -z
        assert window[:, 3].sum() == pytest.approx(expected_width, abs=0.5)
        assert expected_width < (3.0 if resolution == 96 else 1.0)  # thin: a few pixels at most
        r, g, b = window[window[:, 3] > 0.99, :3].mean(axis=0) if (window[:, 3] > 0.99).any() else window[window[:, 3] > 0, :3].mean(axis=0)
        assert r > 0.3 and 0.6 * r < g < r and b < 0.2 * r  # the pole's yellow, shaded
        measured += 1
    assert measured >= 1  # the test camera sees at least one pole against the background


def test_builtin_scene_renders_deterministically(cache_dir, builtin_scene_32px):
    again = render_view(np.array(read_split_index(builtin_scene_32px, "val").frames[3].pose), 32)
    stored = iio.imread(read_split_index(builtin_scene_32px, "val").frames[3].path)
    np.testing.assert_array_equal(np.round(again * 255).astype(np.uint8), stored)


# --- the cache ---


def test_cache_is_used_and_never_stale(tmp_path, builtin_scene_32px):
    scene = tmp_path / "scene"
    shutil.copytree(builtin_scene_32px, scene)
    cache = tmp_path / "cache"
    first = load_split(scene, "val", 16, cache_dir=cache)
    cached = list(cache.glob("*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.zeros_like(np.load(cached[0])))  # tamper: a hit must read this file
    assert load_split(scene, "val", 16, cache_dir=cache).images.min() == 1.0  # the zeros, composited on white
    # Change a source image: a new cache entry, with the new content.
    path = scene / "val" / "r_0.png"
    rgba = iio.imread(path)
    rgba[...] = [255, 0, 0, 255]
    iio.imwrite(path, rgba)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    fresh = load_split(scene, "val", 16, cache_dir=cache)
    torch.testing.assert_close(fresh.images[0], torch.tensor([1.0, 0.0, 0.0]).expand(16, 16, 3))
    torch.testing.assert_close(fresh.images[1:], first.images[1:], atol=1e-3, rtol=0)
    assert len(list(cache.glob("*.npy"))) == 2


def test_downsampling_averages_premultiplied_colour(tmp_path, builtin_scene_32px):
    """Half-transparent red over white, averaged with a clear pixel: straight-colour averaging
    would make the edge darker than either; premultiplied averaging does not."""
    scene = tmp_path / "scene"
    shutil.copytree(builtin_scene_32px, scene)
    for frame in read_split_index(scene, "test").frames:
        rgba = np.zeros((32, 32, 4), dtype=np.uint8)
        rgba[:, ::2] = [255, 0, 0, 255]  # every other column opaque red, the rest clear black
        iio.imwrite(frame.path, rgba)
    images = load_split(scene, "test", 16).images
    torch.testing.assert_close(images[0, 0, 0], torch.tensor([1.0, 0.5, 0.5]), atol=2e-3, rtol=0)


# --- bad input: one line naming the file or key ---


@pytest.fixture
def scene(tmp_path, builtin_scene_32px) -> Path:
    copy = tmp_path / "scene"
    shutil.copytree(builtin_scene_32px, copy)
    return copy


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _expect(message: str, scene: Path, split: str = "train", resolution: int = 32) -> None:
    with pytest.raises(DataError, match=message) as caught:
        load_split(scene, split, resolution)
    assert "\n" not in str(caught.value)


def test_missing_scene_folder(tmp_path):
    _expect(r"scene folder .*nowhere does not exist", tmp_path / "nowhere")


def test_missing_transforms_file(scene):
    (scene / "transforms_val.json").unlink()
    _expect(r"transforms_val.json is missing", scene, "val")


def test_malformed_transforms_file(scene):
    (scene / "transforms_train.json").write_text('{"camera_angle_x": 0.7, "frames": [')
    _expect(r"transforms_train.json is not valid JSON", scene)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("camera_angle_x"), r"frames\[0\]: no focal length: expected camera_angle_x \(radians\) or fl_x"),
        (lambda m: m.update(camera_angle_x=4.0), r"camera_angle_x must be a field of view in radians"),
        (lambda m: m.update(frames=[]), r"frames must be a non-empty list"),
        (lambda m: m["frames"][2].pop("file_path"), r"frames\[2\] needs a file_path"),
        (lambda m: m["frames"][3].update(transform_matrix=[[1, 0, 0]]), r"frames\[3\].transform_matrix must be a 4×4"),
    ],
)
def test_bad_transforms_content(scene, edit, message):
    _edit_json(scene / "transforms_train.json", edit)
    _expect(message, scene)


def test_missing_image(scene):
    (scene / "train" / "r_5.png").unlink()
    _expect(r"r_5.png is missing \(named by .*frames\[5\].file_path\)", scene)


def test_images_of_different_sizes(scene):
    iio.imwrite(scene / "train" / "r_9.png", np.zeros((16, 16, 4), dtype=np.uint8))
    _expect(r"r_9.png is 16×16, but the split's first image .* is 32×32", scene)


def test_image_without_expected_channels(scene):
    iio.imwrite(scene / "train" / "r_4.png", np.zeros((32, 32), dtype=np.uint8))
    _expect(r"r_4.png: expected an 8- or 16-bit RGB or RGBA", scene)


@pytest.mark.parametrize("resolution", [0, -3, True, 10])
def test_resolution_must_be_an_integer_that_holds_the_ssim_window(scene, resolution):
    from nerf_lab.data.datamodule import BlenderDataModule
    from nerf_lab.nerf.parameters import ParameterError

    with pytest.raises(ParameterError) as caught:
        BlenderDataModule(str(scene), resolution=resolution)
    assert (caught.value.parameter, caught.value.value) == ("resolution", resolution)
    assert "at least 11" in caught.value.expected
    BlenderDataModule(str(scene), resolution=11)  # SSIM's 11-pixel window fits


def test_resolution_larger_than_the_source(scene):
    _expect(r"data.resolution=64 is larger than the source images .*expected at most 32", scene, resolution=64)
