"""Reading scenes in the Blender layout of the NeRF synthetic data set.

A scene folder holds `transforms_{train,val,test}.json`, each with the horizontal field of
view `camera_angle_x` (radians) and `frames`, each frame a `file_path` (relative to the
folder, `.png` optional) and a 4×4 camera-to-world `transform_matrix` (OpenGL convention,
see `nerf_lab.nerf.rays`). Images are RGBA PNGs with straight (not premultiplied) alpha.

Decoded, resized images are cached as `.npy` files named by a hash of everything they depend
on (the JSON's content, each PNG's size and modification time, the resolution), so a cached
array is never stale: change a source file and the name changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from nerf_lab.data.files import read_cached_array, save_array_atomically
from nerf_lab.errors import DataError
from nerf_lab.nerf.rays import focal_from_fov

SPLITS = ("train", "val", "test")
# Bump when the cached array's meaning changes (not when its sources do: they are hashed).
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Frame:
    path: Path
    pose: list[list[float]]


@dataclass(frozen=True)
class SplitIndex:
    """What a split's JSON says, checked, before any image is decoded."""

    json_path: Path
    camera_angle_x: float
    frames: tuple[Frame, ...]


@dataclass(frozen=True)
class SceneSplit:
    """One split at one resolution: images composited onto the background, with cameras."""

    images: Float[Tensor, "views height width 3"]
    poses: Float[Tensor, "views 4 4"]
    focal: float
    file_paths: tuple[Path, ...]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    def __len__(self) -> int:
        return self.images.shape[0]


def read_split_index(scene_dir: Path, split: str) -> SplitIndex:
    """Parse and check `transforms_<split>.json`; raise `DataError` naming what is wrong."""
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
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not 0 < angle < math.pi:
        raise DataError(f"{json_path}: camera_angle_x must be a field of view in radians in (0, π), got {angle!r}")
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
        if path.suffix.lower() != ".png":
            path = path.with_name(path.name + ".png")
        if not path.is_file():
            raise DataError(f"{path} is missing (named by {where}.file_path)")
        checked.append(Frame(path, matrix))
    return SplitIndex(json_path, float(angle), tuple(checked))


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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_RGB, PNG_RGBA = 2, 6  # IHDR colour types


def check_images(index: SplitIndex, white_background: bool) -> None:
    """Check every image of a split from its PNG header alone (no decoding): a PNG, 8-bit RGB
    or RGBA, one size for the split; RGBA when the scene is composited onto white (an RGB image
    brings its own background, which would be trained on as the object's colour)."""
    size = None
    for frame in index.frames:
        with open(frame.path, "rb") as file:
            head = file.read(26)
        if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
            raise DataError(f"{frame.path} is not a PNG image: expected the split's images to be PNGs")
        width, height = struct.unpack(">II", head[16:24])
        bit_depth, colour_type = head[24], head[25]
        if bit_depth != 8 or colour_type not in (PNG_RGB, PNG_RGBA):
            raise DataError(f"{frame.path}: expected an 8-bit RGB or RGBA PNG, got bit depth {bit_depth}, colour type {colour_type}")
        if colour_type == PNG_RGB and white_background:
            raise DataError(
                f"{frame.path} has no alpha channel, but data.white_background=true composites the object onto white: "
                "expected RGBA images (or data.white_background=false for images that include their background)"
            )
        if size is None:
            size = (width, height)
        elif (width, height) != size:
            raise DataError(
                f"{frame.path} is {width}×{height}, but the split's first image {index.frames[0].path} is "
                f"{size[0]}×{size[1]}: expected one size per split"
            )


def load_split(
    scene_dir: str | Path,
    split: str,
    resolution: int,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    cache_dir: str | Path | None = None,
) -> SceneSplit:
    """Load one split with images `resolution` pixels wide (height keeps the aspect ratio).

    Downsampling averages premultiplied colour over each output pixel's area (antialiased,
    and without the dark fringe that averaging straight colour gives at the object's edge);
    the result is then composited onto `background`. The focal length scales with the width.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of {SPLITS}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"data.resolution must be a positive integer, got {resolution!r}")
    index = read_split_index(Path(scene_dir), split)

    cache_path = _cache_path(index, resolution, cache_dir) if cache_dir is not None else None
    premultiplied = read_cached_array(cache_path, len(index.frames), resolution) if cache_path is not None else None
    if premultiplied is None:
        premultiplied = _decode_and_resize(index, resolution)
        if cache_path is not None:
            save_array_atomically(cache_path, premultiplied)

    rgba = torch.from_numpy(premultiplied).float()
    images = rgba[..., :3] + (1.0 - rgba[..., 3:]) * torch.tensor(background, dtype=torch.float32)
    poses = torch.tensor([frame.pose for frame in index.frames], dtype=torch.float32)
    return SceneSplit(
        images=images.contiguous(),
        poses=poses,
        focal=focal_from_fov(index.camera_angle_x, resolution),
        file_paths=tuple(frame.path for frame in index.frames),
    )


def _decode_and_resize(index: SplitIndex, resolution: int) -> np.ndarray:
    """Decode every PNG of the split (in threads: the decoder releases the GIL) and resize."""

    def decode(frame: Frame) -> np.ndarray:
        try:
            image = iio.imread(frame.path)
        except Exception as error:  # imageio raises many types for a broken file
            raise DataError(f"{frame.path} could not be read as an image: {error}") from None
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DataError(f"{frame.path}: expected an RGB or RGBA image, got an array of shape {image.shape}")
        if image.dtype != np.uint8:
            raise DataError(f"{frame.path}: expected 8-bit channels, got {image.dtype}")
        return image

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        # Decode and resize image by image, so an 800 px split never holds two copies in float.
        first = decode(index.frames[0])
        height, width = first.shape[:2]
        if resolution > width:
            raise DataError(
                f"data.resolution={resolution} is larger than the source images "
                f"({width}×{height}, {index.frames[0].path}): expected at most {width}"
            )
        out_height = max(1, round(height * resolution / width))
        output = np.empty((len(index.frames), out_height, resolution, 4), dtype=np.float16)

        def process(number: int) -> None:
            image = first if number == 0 else decode(index.frames[number])
            if image.shape[:2] != (height, width):
                raise DataError(
                    f"{index.frames[number].path} is {image.shape[1]}×{image.shape[0]}, but the split's "
                    f"first image {index.frames[0].path} is {width}×{height}: expected one size per split"
                )
            output[number] = _premultiplied_area_resize(image, out_height, resolution)

        list(pool.map(process, range(len(index.frames))))
    return output


def _premultiplied_area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rgba = torch.from_numpy(image).float() / 255.0
    if rgba.shape[2] == 3:
        rgba = torch.cat([rgba, torch.ones_like(rgba[..., :1])], dim=-1)
    rgba[..., :3] *= rgba[..., 3:]
    if rgba.shape[:2] != (height, width):
        rgba = F.interpolate(rgba.permute(2, 0, 1)[None], size=(height, width), mode="area")[0].permute(1, 2, 0)
    return rgba.numpy().astype(np.float16)


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
