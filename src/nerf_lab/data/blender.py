"""Reading scenes in the Blender layout of the NeRF synthetic data set.

A scene folder holds `transforms_{train,val,test}.json`, each with the camera intrinsics
(`camera_angle_x`, or `fl_x`, `fl_y`, `cx`, `cy`, `w`, `h`: `nerf_lab.data.intrinsics`) and
`frames`, each frame a `file_path` (relative to the folder; `.png` is added to a name without
an extension) and a 4×4 camera-to-world `transform_matrix` in the OpenGL convention (see
`nerf_lab.nerf.rays`), or the OpenCV one (y down, looking down +z) converted when read. Images
are PNG or JPEG, 8 or 16 bits, RGB or RGBA with straight alpha (`nerf_lab.data.images`).

Decoded, resized images are cached as `.npy` files named by a hash of everything they depend
on (the JSON's content, each PNG's size and modification time, the resolution), so a cached
array is never stale: change a source file and the name changes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from nerf_lab.files import read_cached_array, save_array_atomically
from nerf_lab.data.geometry import SceneTransform
from nerf_lab.data.images import decode_and_resize, image_size, output_height
from nerf_lab.data.intrinsics import Intrinsics, read_intrinsics
from nerf_lab.errors import DataError

SPLITS = ("train", "val", "test")
CAMERA_CONVENTIONS = ("opengl", "opencv")
# Bump when the cached array's meaning changes (not when its sources do: they are hashed).
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Frame:
    path: Path
    pose: list[list[float]]  # camera-to-world, OpenGL convention (converted when read)
    intrinsics: Intrinsics


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
    """One split at one resolution: images composited onto the background, with cameras."""

    images: Float[Tensor, "views height width 3"]
    poses: Float[Tensor, "views 4 4"]
    intrinsics: Float[Tensor, "views 4"]  # (f_x, f_y, c_x, c_y) in pixels of `images`, float64
    file_paths: tuple[Path, ...]

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


def read_split_index(scene_dir: Path, split: str, camera_convention: str = "opengl") -> SplitIndex:
    """Parse and check `transforms_<split>.json`; raise `DataError` naming what is wrong.
    Poses in the OpenCV convention (`camera_convention="opencv"`) are converted to OpenGL
    (the rotation's y and z columns negated, exactly)."""
    if not scene_dir.is_dir():
        raise DataError(
            f"scene folder {scene_dir} does not exist: set data.scene_dir (or NERF_SYNTHETIC_DIR) "
            "to a folder with transforms_train.json, transforms_val.json and transforms_test.json"
        )
    json_path = scene_dir / f"transforms_{split}.json"
    if not json_path.is_file():
        raise DataError(f"{json_path} is missing: a Blender scene needs transforms_{split}.json")
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
        if not path.is_file():
            raise DataError(f"{path} is missing (named by {where}.file_path)")
        if camera_convention == "opencv":
            matrix = [[row[0], -row[1], -row[2], row[3]] for row in matrix[:3]] + [matrix[3]]
        checked.append(Frame(path, matrix, read_intrinsics(where, meta, frame)))
    return SplitIndex(json_path, None if angle is None else float(angle), tuple(checked))


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


def check_images(index: SplitIndex) -> int:
    """Check every image of a split from its header alone (no decoding): an RGB or RGBA
    image of 8 or 16 bits a channel that imageio reads; one size for the split, unless every
    frame states its own intrinsics (then one aspect ratio). Returns the smallest width."""
    sizes = [image_size(frame.path) for frame in index.frames]
    each_own = all(frame.intrinsics.own for frame in index.frames)
    for frame, size in zip(index.frames, sizes):
        same = size == sizes[0] if not each_own else output_height(*size, 1000) == output_height(*sizes[0], 1000)
        if not same:
            raise DataError(
                f"{frame.path} is {size[0]}×{size[1]}, but the split's first image {index.frames[0].path} is "
                f"{sizes[0][0]}×{sizes[0][1]}: expected one size per split (or, with each frame's own intrinsics, one aspect ratio)"
            )
    return min(width for width, _ in sizes)


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
    check_images(index)

    cache_path = _cache_path(index, resolution, cache_dir) if cache_dir is not None else None
    premultiplied = read_cached_array(cache_path, len(index.frames), resolution) if cache_path is not None else None
    if premultiplied is None:
        premultiplied = decode_and_resize([frame.path for frame in index.frames], resolution)
        if cache_path is not None:
            save_array_atomically(cache_path, premultiplied)

    rgba = torch.from_numpy(premultiplied).float()
    images = rgba[..., :3] + (1.0 - rgba[..., 3:]) * torch.tensor(background, dtype=torch.float32)
    if transform is None:
        poses = torch.tensor([frame.pose for frame in index.frames], dtype=torch.float32)
    else:
        poses = torch.from_numpy(transform.apply(index.poses())).float()
    height = images.shape[1]
    intrinsics = torch.tensor(
        [frame.intrinsics.scaled(resolution, height, *image_size(frame.path)) for frame in index.frames], dtype=torch.float64
    )
    return SceneSplit(images=images.contiguous(), poses=poses, intrinsics=intrinsics, file_paths=tuple(frame.path for frame in index.frames))


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
