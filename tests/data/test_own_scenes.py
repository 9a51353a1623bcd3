"""Scenes as users bring them: intrinsics as the field writes them, the principal
point in the rays, JPEG and 16-bit frames, OpenCV poses, the geometry check before a run, and
data.normalize. Known answers come from Lego variants built here from the same pixels."""

from __future__ import annotations

import json
import logging
import math
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import FAST_OVERRIDES, lego_dir, requires_lego
from own_scenes import jpeg, make_small_lego, opencv, pixel_intrinsics, scaled, shifted, variant
from user_commands import one_line_error, run_command

from nerf_lab.data.batches import RandomRayBatches, ViewDataset
from nerf_lab.data.blender import load_split, read_split_index
from nerf_lab.data.datamodule import BlenderDataModule
from nerf_lab.data.geometry import BLENDER_CAMERA_DISTANCE, check_geometry, focus_of
from nerf_lab.errors import DataError
from nerf_lab.nerf.rays import focal_from_fov, look_at


@pytest.fixture(scope="module")
def small_lego(tmp_path_factory) -> Path:
    return make_small_lego(lego_dir(), tmp_path_factory.mktemp("lego") / "lego")


def _check(scene: Path, **kwargs) -> None:
    """The check before a run, with conf/data/blender.yaml's near, far and box unless given."""
    BlenderDataModule(str(scene), **{"resolution": 32, "scene_box": [[-1.5] * 3, [1.5] * 3], **kwargs}).check_scene()


# ---------------------------------------------------------------- Lego exactly as before


@requires_lego
def test_lego_rays_and_images_are_those_of_the_old_reader(cache_dir):
    """Bit for bit: the rays of Lego's views (whole views and training batches) are the pinhole
    formula's, d = R((j + ½ − W/2)/f, −(i + ½ − H/2)/f, −1) with f from camera_angle_x, and the
    images the area-resized, premultiplied, white-composited pixels."""
    split = load_split(lego_dir(), "val", 100, cache_dir=cache_dir)
    meta = json.loads((lego_dir() / "transforms_val.json").read_text())
    focal = 0.5 * 100 / math.tan(0.5 * meta["camera_angle_x"])

    def old_rays(poses, rows, cols):
        x = (cols + 0.5 - 0.5 * 100) / focal
        y = -(rows + 0.5 - 0.5 * 100) / focal
        dirs = torch.stack([x, y, -torch.ones_like(x)], dim=-1).to(poses.dtype)
        return (poses[..., :3, :3] @ dirs[..., None])[..., 0], poses[..., :3, 3].expand(*x.shape, 3)

    view = ViewDataset(split, [3])[0]
    rows, cols = torch.meshgrid(torch.arange(100.0), torch.arange(100.0), indexing="ij")
    directions, origins = old_rays(split.poses[3].expand(100, 100, 4, 4), rows, cols)
    assert torch.equal(view.directions, directions) and torch.equal(view.origins, origins)

    batches = RandomRayBatches(split, 512, seed=3)
    batch = batches.batch(0, torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    views, rows, cols = (torch.randint(0, high, (512,), generator=generator) for high in (len(split), 100, 100))
    directions, _ = old_rays(split.poses[views], rows, cols)
    assert torch.equal(batch.directions, directions)

    rgba = torch.from_numpy(iio.imread(split.file_paths[3])).float() / 255.0
    rgba[..., :3] *= rgba[..., 3:]
    small = torch.nn.functional.interpolate(rgba.permute(2, 0, 1)[None], size=(100, 100), mode="area")[0].permute(1, 2, 0)
    small = torch.from_numpy(small.numpy().astype(np.float16)).float()
    assert torch.equal(split.images[3], small[..., :3] + (1.0 - small[..., 3:]) * torch.ones(3))


# ---------------------------------------------------------------- intrinsics and the principal point


def _camera_scene(folder: Path, image: np.ndarray, top: dict, frame_keys: dict | None = None) -> Path:
    """A one-camera scene (every split the same view) holding `image`."""
    for split in ("train", "val", "test"):
        (folder / split).mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / split / "v.png", image)
        frame = {"file_path": f"{split}/v.png", "transform_matrix": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 1.0]], **(frame_keys or {})}
        (folder / f"transforms_{split}.json").write_text(json.dumps({**top, "frames": [frame]}))
    return folder


def test_the_rays_of_a_cropped_view_are_those_of_the_full_view(tmp_path):
    """A 40×30 view with its principal point at (17, 13), and its 24×18 crop from column 8,
    row 6 (principal point (9, 7)): each ray of the crop is the full view's ray through the
    same pixel, bit for bit."""
    full_image = np.random.default_rng(0).integers(0, 255, (30, 40, 4), dtype=np.uint8)
    full = _camera_scene(tmp_path / "full", full_image, {"fl_x": 50.0, "fl_y": 52.0, "cx": 17.0, "cy": 13.0, "w": 40, "h": 30})
    crop = _camera_scene(tmp_path / "crop", full_image[6:24, 8:32], {"fl_x": 50.0, "fl_y": 52.0, "cx": 9.0, "cy": 7.0, "w": 24, "h": 18})
    full_rays = ViewDataset(load_split(full, "test", 40), [0])[0]
    crop_rays = ViewDataset(load_split(crop, "test", 24), [0])[0]
    assert crop_rays.directions.shape == (18, 24, 3)
    assert torch.equal(crop_rays.directions, full_rays.directions[6:24, 8:32])
    assert torch.equal(crop_rays.rgb, full_rays.rgb[6:24, 8:32])


def test_pixel_intrinsics_scale_to_the_images_read_and_frames_win(tmp_path, caplog):
    """fl/c refer to the JSON's w, h and scale to the size loaded; a frame's own values win
    over the top level's; fl_x wins over a camera_angle_x that disagrees, said once."""
    image = np.zeros((30, 40, 4), dtype=np.uint8)
    top = {"camera_angle_x": 1.0, "fl_x": 400.0, "fl_y": 420.0, "cx": 170.0, "cy": 130.0, "w": 400, "h": 300}
    scene = _camera_scene(tmp_path / "s", image, top)
    with caplog.at_level(logging.WARNING, logger="nerf_lab"):
        split = load_split(scene, "train", 20)
        load_split(scene, "train", 20)
    assert torch.allclose(split.intrinsics[0], torch.tensor([20.0, 21.0, 8.5, 6.5], dtype=torch.float64))
    assert sum("disagree by more than a pixel" in record.message for record in caplog.records) == 1
    own = _camera_scene(tmp_path / "own", image, top, {"fl_x": 100.0, "cx": 20.0})
    assert torch.allclose(load_split(own, "train", 20).intrinsics[0], torch.tensor([5.0, 21.0, 1.0, 6.5], dtype=torch.float64))


def test_frames_of_different_sizes_with_their_own_intrinsics_load_at_one_width(tmp_path):
    """A 40×30 frame and an 80×60 one, each with its own fl_x, cx, cy, loaded 20 px wide:
    each frame's intrinsics scale by its own factor; without them, one size a split."""
    pose = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
    frames = [
        {"file_path": "small.png", "transform_matrix": pose, "fl_x": 40.0, "cx": 18.0, "cy": 14.0},
        {"file_path": "large.png", "transform_matrix": pose, "fl_x": 100.0, "cx": 44.0, "cy": 30.0},
    ]
    iio.imwrite(tmp_path / "small.png", np.zeros((30, 40, 4), np.uint8))
    iio.imwrite(tmp_path / "large.png", np.zeros((60, 80, 4), np.uint8))
    for split in ("train", "val", "test"):
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"frames": frames}))
    _check(tmp_path, resolution=20, scene_box=None)
    split = load_split(tmp_path, "train", 20)
    assert split.images.shape == (2, 15, 20, 3)
    assert torch.allclose(split.intrinsics, torch.tensor([[20.0, 20.0, 9.0, 7.0], [25.0, 25.0, 11.0, 7.5]], dtype=torch.float64))
    for frame in frames:
        del frame["fl_x"], frame["cx"], frame["cy"]
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 1.0, "fl_x": 40.0, "frames": frames}))
    with pytest.raises(DataError, match=r"large.png is 80×60, but the split's first image .*small.png is 40×30: expected one size per split"):
        load_split(tmp_path, "train", 20)


@requires_lego
def test_lego_with_pixel_intrinsics_only_gives_the_same_cameras(small_lego, tmp_path):
    pixels = variant(small_lego, tmp_path / "pixels", edit_top=pixel_intrinsics)
    got, expected = load_split(pixels, "test", 32), load_split(small_lego, "test", 32)
    assert torch.allclose(got.intrinsics, expected.intrinsics, rtol=1e-12)
    assert torch.allclose(got.intrinsics[0], torch.tensor([focal_from_fov(0.6911112070083618, 32)] * 2 + [16.0, 16.0], dtype=torch.float64))


@pytest.mark.parametrize("key", ["k1", "p2"])
def test_lens_distortion_is_refused_in_one_line(tmp_path, key):
    scene = _camera_scene(tmp_path / "s", np.zeros((8, 8, 4), np.uint8), {"camera_angle_x": 1.0, key: 0.01})
    with pytest.raises(DataError, match=rf"transforms_train.json: {key}=0.01 is lens distortion, which nerf_lab does not model") as caught:
        _check(scene)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- image files as named


@requires_lego
def test_jpeg_frames_load_as_their_pixels(small_lego, tmp_path):
    scene = variant(small_lego, tmp_path / "jpeg", image=jpeg)
    assert read_split_index(scene, "train").frames[0].path.suffix == ".jpg"
    _check(scene)
    split = load_split(scene, "val", 64)
    photo = iio.imread(scene / "val" / f"{split.file_paths[0].stem}.jpg")
    assert torch.allclose(split.images[0], torch.from_numpy(photo).float() / 255, atol=1e-3)


def _png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGBA PNG (colour type 6, bit depth 16), written by hand: Pillow cannot."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_pngs_read_as_their_8_bit_values(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 255, (16, 16, 4), dtype=np.uint8)
    eight = load_split(_camera_scene(tmp_path / "8", pixels, {"camera_angle_x": 1.0}), "train", 16)
    scene = _camera_scene(tmp_path / "16", pixels, {"camera_angle_x": 1.0})
    for split in ("train", "val", "test"):
        _png16(scene / split / "v.png", pixels.astype(np.uint16) * 257)
    _check(scene, resolution=16)
    assert torch.allclose(load_split(scene, "train", 16).images, eight.images, atol=1e-3)


# ---------------------------------------------------------------- the geometry check


def test_the_focus_point_is_where_the_cameras_look():
    """Cameras on a circle of radius 3 about q, each looking at q: the focus point is q, every
    distance 3, every camera facing it; flipped to OpenCV's axes, none faces it."""
    q = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    poses = np.stack([look_at(q + 3 * torch.tensor([math.cos(a), math.sin(a), 0.4], dtype=torch.float64) / math.hypot(1, 0.4), q).numpy()
                      for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)])
    focus = focus_of(poses)
    assert np.allclose(focus.point, q.numpy()) and np.allclose(focus.distances, 3.0) and focus.in_front.all()
    flipped = poses * np.array([1, -1, -1, 1])[None, None, :]
    assert not focus_of(flipped).in_front.any()


def test_parallel_axes_are_said_once_and_skip_the_check(caplog):
    poses = np.stack([np.eye(4) for _ in range(5)])
    poses[:, 0, 3] = np.arange(5.0)
    assert focus_of(poses) is None
    with caplog.at_level(logging.WARNING, logger="nerf_lab"):
        check_geometry(poses, 2.0, 6.0, [[-1.5] * 3, [1.5] * 3], "opengl", False)
    assert [r.message for r in caplog.records if "nearly parallel" in r.message] != []


GEOMETRY_CASES = [
    ("scaled", {"edit_frame": scaled(2.0)}, {},
     r"^data: the cameras look at a point 8.06 units away, beyond data.far=6.0; set data.near=4 data.far=12, or data.normalize=true$",
     {"near": 4.0, "far": 12.0}),
    ("off_centre", {"edit_frame": shifted((2.5, 0, 0))}, {},
     (r"^data: the cameras look at a point \(2.50, 0.00, 0.00\) outside data.scene_box=\[\[-1.5,-1.5,-1.5\],\[1.5,1.5,1.5\]\]; "
      r"set data.scene_box=\[\[1,-1.5,-1.5\],\[4,1.5,1.5\]\], or data.normalize=true$"),
     {"scene_box": [[1, -1.5, -1.5], [4, 1.5, 1.5]]}),
    ("opencv", {"edit_frame": opencv}, {},
     (r"^data: 25 of 25 cameras face away from the point their axes meet: are the poses in the OpenCV/COLMAP convention .*\? "
      r"set data.camera_convention=opencv$"),
     {"camera_convention": "opencv"}),
]


@requires_lego
@pytest.mark.parametrize(("name", "edits", "settings", "message", "fix"), GEOMETRY_CASES, ids=[c[0] for c in GEOMETRY_CASES])
def test_a_scene_the_cameras_contradict_is_refused_with_the_fix_and_the_fix_passes(small_lego, tmp_path, name, edits, settings, message, fix):
    scene = variant(small_lego, tmp_path / name, **edits)
    with pytest.raises(DataError, match=message):
        _check(scene, **settings)
    _check(scene, **{**settings, **fix})


@requires_lego
@pytest.mark.parametrize("edit", [scaled(2.0), shifted((2.5, 0, 0)), scaled(0.3)], ids=["scaled", "off_centre", "small"])
def test_normalize_puts_the_cameras_where_the_blender_scenes_have_them(small_lego, tmp_path, edit):
    scene = variant(small_lego, tmp_path / "s", edit_frame=edit)
    datamodule = BlenderDataModule(str(scene), resolution=32, normalize=True)
    datamodule.check_scene()
    geometry = datamodule.scene_geometry()
    poses = datamodule.cameras("train")[0].double()
    assert np.isclose(float(poses[:, :3, 3].norm(dim=-1).mean()), BLENDER_CAMERA_DISTANCE, rtol=1e-5)
    assert geometry["near"] == pytest.approx(2.03, abs=0.02) and geometry["far"] == pytest.approx(6.04, abs=0.02)
    assert geometry["scene_box"] == [[-1.5] * 3, [1.5] * 3]
    # The unmodified scene, normalised, has the same cameras (to float32 rounding).
    unmodified = BlenderDataModule(str(small_lego), resolution=32, normalize=True).cameras("train")[0]
    assert torch.allclose(poses.float(), unmodified, atol=1e-4)


@requires_lego
def test_a_recorded_transform_is_used_as_it_is(small_lego):
    """What eval, render and a resume get from a normalised run's config: its transform, not
    one derived again from the (possibly other) scene they read."""
    plain = BlenderDataModule(str(small_lego), resolution=32).cameras("train")[0].double()
    recorded = {"centre": [1.0, 0.0, -2.0], "scale": 3.0}
    moved = BlenderDataModule(str(small_lego), resolution=32, normalize=True, scene_transform=recorded).cameras("train")[0].double()
    assert torch.allclose(moved[:, :3, 3], 3.0 * (plain[:, :3, 3] - torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)), atol=1e-5)
    assert torch.equal(moved[:, :3, :3], plain[:, :3, :3])


@requires_lego
def test_train_refuses_a_scaled_scene_before_the_run_folder(small_lego, tmp_path, cache_dir):
    scene = variant(small_lego, tmp_path / "scaled", edit_frame=scaled(2.0))
    result = run_command("nerf_lab.train", *FAST_OVERRIDES, "data=blender", f"data.scene_dir={scene}", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    assert one_line_error(result) == "error: data: the cameras look at a point 8.06 units away, beyond data.far=6.0; set data.near=4 data.far=12, or data.normalize=true"
    assert not (tmp_path / "run").exists()


def test_the_orbit_circles_the_scene_centre_looking_at_it():
    """Every orbit camera sits `radius` from the centre at the elevation asked for, its axis
    through the centre, world z up."""
    from nerf_lab.analysis.orbit import orbit_poses

    centre = torch.tensor([2.5, -1.0, 0.5], dtype=torch.float64)
    poses = orbit_poses(3.0, 30.0, 5, centre).double()
    offsets = poses[:, :3, 3] - centre
    assert torch.allclose(offsets.norm(dim=-1), torch.full((5,), 3.0, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(offsets[:, 2], torch.full((5,), 1.5, dtype=torch.float64), atol=1e-5)  # 3 sin 30°
    assert torch.allclose(-poses[:, :3, 2], -offsets / 3.0, atol=1e-5)  # looking down -z at the centre
