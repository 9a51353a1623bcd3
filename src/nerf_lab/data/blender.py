"""Reading scenes in the Blender layout of the NeRF synthetic data set.

A scene folder holds `transforms_{train,val,test}.json`, each with the camera intrinsics
(`camera_angle_x`, or `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h`: `nerf_lab.data.intrinsics`) and
`frames`, each frame a `file_path` (relative to the folder; `.png` is added to a name without
an extension) and a 4×4 camera-to-world `transform_matrix` in the OpenGL convention (see
`nerf_lab.nerf.rays`), or the OpenCV one (y down, looking down +z) converted when read. Images
are PNG or JPEG, 8 or 16 bits, RGB or RGBA with straight alpha (`nerf_lab.data.images`); a
split's images share one size, or, where every frame states its own intrinsics, may differ.

A frame may name a `mask_path` (nerfstudio's key): a one-channel image of the frame's size, 0
where a pixel takes no part in training or in that view's scores (a passer-by, a tripod). The
pixels that count are `SceneSplit.masks`.

Decoded, resized images are cached as `.npy` files named by a hash of everything they depend
on (the JSON's content, each PNG's size and modification time, the resolution), so a cached
array is never stale: change a source file and the name changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from nerf_lab.files import read_cached_array, save_array_atomically
from nerf_lab.data.geometry import SceneTransform
from nerf_lab.data.images import decode_and_resize, decode_mask, image_size, mask_size, output_height, resize_mask
from nerf_lab.data.intrinsics import Intrinsics, read_intrinsics
from nerf_lab.errors import DataError

log = logging.getLogger("nerf_lab")

SPLITS = ("train", "val", "test")
CAMERA_CONVENTIONS = ("opengl", "opencv")
# Bump when the cached array's meaning changes (not when its sources do: they are hashed).
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Frame:
    path: Path
    pose: list[list[float]]  # camera-to-world, OpenGL convention (converted when read)
    intrinsics: Intrinsics
    mask: Path | None = None  # `mask_path`: 0 where a pixel is not trained on or scored


@dataclass(frozen=True)
class SplitIndex:
    """What a split's JSON says, checked, before any image is decoded."""

    json_path: Path
    camera_angle_x: float | None  # the top-level one, where given
    frames: tuple[Frame, ...]

    def poses(self) -> np.ndarray:
        """(views, 4, 4) float64 camera-to-world poses, OpenGL convention."""
        return np.array([frame.pose for frame in self.frames], dtype=np.float64)


@dataclass(frozen=True)
class SceneSplit:
    """One split at one resolution: images composited onto the background, with cameras.

    `masks` marks the pixels that count (trained on, scored), or is None when all do: a
    frame's `mask_path`, and, in a split of images of several heights (each frame with its own
    intrinsics), the rows below a shorter image, which fills the top `view_heights[v]` rows."""

    images: Float[Tensor, "views height width 3"]
    poses: Float[Tensor, "views 4 4"]
    intrinsics: Float[Tensor, "views 4"]  # (f_x, f_y, c_x, c_y) in pixels of `images`, float64
    file_paths: tuple[Path, ...]
    masks: Bool[Tensor, "views height width"] | None = None
    view_heights: tuple[int, ...] | None = None  # each view's own rows; None: all `height`

    def view_height(self, view: int) -> int:
        return self.height if self.view_heights is None else self.view_heights[view]

    def select(self, views: list[int]) -> "SceneSplit":
        """The views at the indices `views`, in that order."""
        return SceneSplit(
            self.images[views], self.poses[views], self.intrinsics[views], tuple(self.file_paths[v] for v in views),
            None if self.masks is None else self.masks[views],
            None if self.view_heights is None else tuple(self.view_heights[v] for v in views),
        )

    def to(self, device: torch.device) -> "SceneSplit":
        """Images, poses and masks on `device` (the intrinsics stay float64 on the CPU)."""
        masks = None if self.masks is None else self.masks.to(device)
        return SceneSplit(self.images.to(device), self.poses.to(device), self.intrinsics, self.file_paths, masks, self.view_heights)

    @property
    def focal(self) -> float:
        """The first view's horizontal focal length in pixels."""
        return float(self.intrinsics[0, 0])

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return self.images.shape[0]


def read_split_index(scene_dir: Path, split: str, camera_convention: str = "opengl", images: bool = True) -> SplitIndex:
    """Parse and check `transforms_<split>.json`; raise `DataError` naming what is wrong.
    Poses in the OpenCV convention (`camera_convention="opencv"`) are converted to OpenGL
    (the rotation's y and z columns negated, exactly). With `images=False` the frames' image
    files need not exist (cameras only: a split of poses to render)."""
    if not scene_dir.is_dir():
        raise DataError(
            f"scene folder {scene_dir} does not exist: set data.scene_dir (or NERF_SYNTHETIC_DIR) "
            "to a folder with transforms_train.json, transforms_val.json and transforms_test.json"
        )
    json_path = scene_dir / f"transforms_{split}.json"
    # A test split is read only to score a run at its end: say how to train without one.
    without = "; test=false trains without a test split (nerf_lab.render poses=<json> renders its cameras)" if split == "test" else ""
    if not json_path.is_file():
        raise DataError(f"{json_path} is missing: a Blender scene needs transforms_{split}.json{without}")
    return read_frames(json_path, camera_convention, images, without)


def read_frames(json_path: Path, camera_convention: str = "opengl", images: bool = True, hint: str = "") -> SplitIndex:
    """The frames of a `transforms*.json` file, checked (`read_split_index`); with
    `images=False` their image files need not exist. `hint` ends the line of a missing image."""
    scene_dir = json_path.parent
    without = hint
    if not json_path.is_file():
        raise DataError(f"{json_path} is missing: expected a transforms JSON (camera_angle_x or fl_x, and frames)")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{json_path} is not valid JSON: {error}") from None

    if not isinstance(meta, dict):
        raise DataError(f"{json_path}: expected a JSON object with camera_angle_x and frames")
    angle = meta.get("camera_angle_x")
    if angle is not None and (isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle < math.pi):
        raise DataError(f"{json_path}: camera_angle_x must be a field of view in radians in (0, π), got {angle!r}")
    if camera_convention not in CAMERA_CONVENTIONS:
        raise DataError(f"data.camera_convention={camera_convention!r} is not allowed: expected one of {', '.join(CAMERA_CONVENTIONS)}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{json_path}: frames must be a non-empty list")

    checked = []
    for number, frame in enumerate(frames):
        where = f"{json_path}: frames[{number}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DataError(f"{where} needs a file_path string")
        matrix = frame.get("transform_matrix")
        if not _is_matrix_4x4(matrix):
            raise DataError(f"{where}.transform_matrix must be a 4×4 list of numbers")
        problem = _pose_problem(matrix)
        if problem:
            raise DataError(f"{where}.transform_matrix {problem}: expected a camera-to-world pose (rotation, position; last row 0 0 0 1)")
        path = scene_dir / frame["file_path"]
        if not path.suffix:  # the Blender scenes name "./train/r_0" for r_0.png
            path = path.with_name(path.name + ".png")
        if images and not path.is_file():
            raise DataError(f"{path} is missing (named by {where}.file_path){without}")
        if camera_convention == "opencv":
            matrix = [[row[0], -row[1], -row[2], row[3]] for row in matrix[:3]] + [matrix[3]]
        mask = _mask_path(scene_dir, where, frame) if images else None  # cameras alone need no mask
        checked.append(Frame(path, matrix, read_intrinsics(where, meta, frame), mask))
    _say_if_dynamic_masks_lie_beside(json_path, checked)
    return SplitIndex(json_path, None if angle is None else float(angle), tuple(checked))


_said_dynamic_masks: set[Path] = set()


def _say_if_dynamic_masks_lie_beside(json_path: Path, frames: list[Frame]) -> None:
    """instant-ngp's `dynamic_mask_<image>.png` files (non-zero: not trained on) are not read:
    say so once a JSON, where a frame without `mask_path` has one beside its image."""
    for frame in frames:
        dynamic = frame.path.with_name(f"dynamic_mask_{frame.path.stem}.png")
        if frame.mask is None and json_path not in _said_dynamic_masks and dynamic.is_file():
            _said_dynamic_masks.add(json_path)
            log.warning(
                "%s: %s is instant-ngp's dynamic mask, which nerf_lab does not read: its pixels will be trained on; "
                "name a mask for each frame as mask_path (0 where a pixel is not trained on, nerfstudio's convention)",
                json_path, dynamic,
            )
            return


def _mask_path(scene_dir: Path, where: str, frame: dict) -> Path | None:
    """The frame's `mask_path` (nerfstudio's key), checked to name a file, or None."""
    named = frame.get("mask_path")
    if named is None:
        return None
    if not isinstance(named, str) or not named:
        raise DataError(f"{where}.mask_path must be a path string (relative to the scene folder), got {named!r}")
    path = scene_dir / named
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    if not path.is_file():
        raise DataError(f"{path} is missing (named by {where}.mask_path)")
    return path


def _is_matrix_4x4(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(
            isinstance(row, list)
            and len(row) == 4
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in row)
            for row in value
        )
    )


def _pose_problem(matrix: list[list[float]]) -> str | None:
    """Why a 4×4 matrix is not a usable camera-to-world pose, or None. (Rays need the rotation
    part invertible: an all-zero or otherwise singular one puts every ray on one point.)"""
    pose = np.array(matrix, dtype=np.float64)
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        return f"has last row {pose[3].tolist()}"
    if abs(np.linalg.det(pose[:3, :3])) < 1e-6:
        return "is singular (its rotation part has determinant 0)"
    return None


def check_images(index: SplitIndex) -> list[tuple[int, int]]:
    """Check every image of a split from its header alone (no decoding): an RGB or RGBA
    image of 8 or 16 bits a channel that imageio reads; one size for the split, unless every
    frame states its own intrinsics (then each its own); each mask one channel, of its
    image's size. Returns each frame's (width, height) as stored."""
    sizes = [image_size(frame.path) for frame in index.frames]
    each_own = all(frame.intrinsics.own for frame in index.frames)
    for number, (frame, size) in enumerate(zip(index.frames, sizes)):
        if size != sizes[0] and not each_own:
            raise DataError(
                f"{frame.path} is {size[0]}×{size[1]}, but the split's first image {index.frames[0].path} is "
                f"{sizes[0][0]}×{sizes[0][1]}: expected one size per split, or each frame's own intrinsics "
                f"(fl_x, fl_y, cx, cy, w, h in {index.json_path.name}: frames[{number}])"
            )
        if frame.mask is not None and mask_size(frame.mask) != size:
            width, height = mask_size(frame.mask)
            raise DataError(f"{frame.mask} is {width}×{height}, but its image {frame.path} is {size[0]}×{size[1]}: expected a mask of its image's size")
    return sizes


def load_split(
    scene_dir: str | Path,
    split: str,
    resolution: int,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    cache_dir: str | Path | None = None,
    camera_convention: str = "opengl",
    transform: SceneTransform | None = None,
) -> SceneSplit:
    """Load one split with images `resolution` pixels wide (height keeps the aspect ratio).

    Downsampling averages premultiplied colour over each output pixel's area (antialiased,
    and without the dark fringe that averaging straight colour gives at the object's edge);
    the result is then composited onto `background` (images without alpha are opaque, so
    stay as they are). The intrinsics scale to the loaded size; poses are converted from
    `camera_convention` and moved by `transform` (`data.normalize`) when given.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {SPLITS}")
    index = read_split_index(Path(scene_dir), split, camera_convention)
    sizes = check_images(index)

    cache_path = _cache_path(index, resolution, cache_dir) if cache_dir is not None else None
    premultiplied = read_cached_array(cache_path, len(index.frames), resolution) if cache_path is not None else None
    if premultiplied is None:
        premultiplied = decode_and_resize([frame.path for frame in index.frames], resolution, mixed_heights=True)
        if cache_path is not None:
            save_array_atomically(cache_path, premultiplied)
    heights = tuple(output_height(width, height, resolution) for width, height in sizes)
    masks = valid_pixels(index, heights, resolution)

    rgba = torch.from_numpy(premultiplied).float()
    images = rgba[..., :3] + (1.0 - rgba[..., 3:]) * torch.tensor(background, dtype=torch.float32)
    if transform is None:
        poses = torch.tensor([frame.pose for frame in index.frames], dtype=torch.float32)
    else:
        poses = torch.from_numpy(transform.apply(index.poses())).float()
    intrinsics = torch.tensor(
        [frame.intrinsics.scaled(resolution, height, *size) for frame, height, size in zip(index.frames, heights, sizes)],
        dtype=torch.float64,
    )
    return SceneSplit(
        images=images.contiguous(), poses=poses, intrinsics=intrinsics, file_paths=tuple(frame.path for frame in index.frames),
        masks=masks, view_heights=None if len(set(heights)) == 1 else heights,
    )


def valid_pixels(index: SplitIndex, heights: tuple[int, ...], resolution: int) -> Tensor | None:
    """(views, max(heights), resolution) bool: the pixels that count, from each frame's mask
    (resized: a pixel counts when all of its area does) and its own height; None when all do."""
    if all(frame.mask is None for frame in index.frames) and len(set(heights)) == 1:
        return None
    masks = np.zeros((len(index.frames), max(heights), resolution), dtype=bool)
    for number, (frame, height) in enumerate(zip(index.frames, heights)):
        masks[number, :height] = True if frame.mask is None else resize_mask(decode_mask(frame.mask), height, resolution)
        split = index.json_path.stem.removeprefix("transforms_")
        if split != "train" and not masks[number].any():  # a view to score needs a pixel to score
            raise DataError(
                f"{frame.mask} leaves no pixel of {frame.path} that counts at {resolution} px wide (a pixel counts when "
                "all of its area does): expected a mask that keeps some of a val or test view"
            )
    return torch.from_numpy(masks)


def _cache_path(index: SplitIndex, resolution: int, cache_dir: str | Path) -> Path:
    digest = hashlib.sha256()
    digest.update(f"{CACHE_FORMAT}|{resolution}|{index.json_path.resolve()}|".encode())
    digest.update(index.json_path.read_bytes())
    for frame in index.frames:
        stat = frame.path.stat()
        digest.update(f"{frame.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
    scene = index.json_path.parent.name
    split = index.json_path.stem.removeprefix("transforms_")
    return Path(cache_dir) / f"{scene}-{split}-{resolution}px-{digest.hexdigest()[:16]}.npy"
