"""A scene's image files: checked from their headers before a run, decoded and resized to it.

Any format imageio reads (PNG and JPEG in practice), 8- or 16-bit channels, RGB or RGBA with
straight (not premultiplied) alpha. An image without alpha is opaque: its background was
photographed, and compositing (`data.white_background`) leaves it as it is.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from nerf_lab.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY, PNG_RGB, PNG_RGBA = 0, 2, 6  # IHDR colour types
DEPTHS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header (no decoding); `DataError` naming the
    file when it is not an RGB or RGBA image of 8 or 16 bits a channel."""
    with open(path, "rb") as file:
        head = file.read(26)
    if head[:8] == PNG_SIGNATURE:  # the common case, read from 26 bytes
        if len(head) < 26 or head[12:16] != b"IHDR":
            raise DataError(f"{path} is not a valid PNG image (no IHDR header): expected an RGB or RGBA image")
        width, height = struct.unpack(">II", head[16:24])
        bit_depth, colour_type = head[24], head[25]
        if bit_depth not in (8, 16) or colour_type not in (PNG_RGB, PNG_RGBA):
            raise DataError(f"{path}: expected an 8- or 16-bit RGB or RGBA PNG, got bit depth {bit_depth}, colour type {colour_type}")
        return width, height
    try:
        props = iio.improps(path)
    except Exception as error:  # noqa: BLE001 (imageio raises many types for a file it cannot read)
        raise DataError(f"{path} is not an image imageio can read ({type(error).__name__}): expected a PNG or JPEG") from None
    return _checked_shape(path, props.shape, props.dtype)


def _checked_shape(path: Path, shape: Sequence[int], dtype: np.dtype) -> tuple[int, int]:
    if len(shape) != 3 or shape[2] not in (3, 4):
        raise DataError(f"{path}: expected an RGB or RGBA image, got an array of shape {tuple(shape)}")
    if np.dtype(dtype) not in DEPTHS:
        raise DataError(f"{path}: expected 8- or 16-bit channels, got {dtype}")
    return int(shape[1]), int(shape[0])


def decode(path: Path) -> np.ndarray:
    """The image's pixels, (height, width, 3 or 4), uint8 or uint16."""
    try:
        image = iio.imread(path)
    except Exception as error:  # noqa: BLE001 (imageio raises many types for a broken file)
        raise DataError(f"{path} could not be read as an image: {error}".splitlines()[0]) from None
    _checked_shape(path, image.shape, image.dtype)
    return image


def output_height(width: int, height: int, resolution: int) -> int:
    """Rows of an image `width` × `height` loaded `resolution` pixels wide (aspect kept)."""
    return max(1, round(height * resolution / width))


def decode_and_resize(paths: Sequence[Path], resolution: int, mixed_heights: bool = False) -> np.ndarray:
    """Every image, `resolution` pixels wide, premultiplied RGBA in float16, (views, H, W, 4);
    decoded in threads (the decoders release the GIL), one image at a time, so an 800 px split
    never holds two copies in float. Images whose heights at `resolution` differ are a
    `DataError`, unless `mixed_heights`: then H is the tallest, and a shorter image fills its
    top rows (its rows keep their intrinsics), the rows below it transparent (their pixels
    are marked invalid by `valid_pixels`)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        first = decode(paths[0])
        sizes = [(first.shape[1], first.shape[0])] + [image_size(path) for path in paths[1:]]
        heights = [output_height(width, height, resolution) for width, height in sizes]
        out_height = max(heights)
        output = np.zeros((len(paths), out_height, resolution, 4), dtype=np.float16)

        def process(number: int) -> None:
            image = first if number == 0 else decode(paths[number])
            height, width = image.shape[:2]
            if resolution > width:
                raise DataError(f"data.resolution={resolution} is larger than the source images ({width}×{height}, {paths[number]}): expected at most {width}")
            own_height = output_height(width, height, resolution)
            if own_height != heights[0] and not mixed_heights:
                raise DataError(
                    f"{paths[number]} is {width}×{height}, but the split's first image {paths[0]} is "
                    f"{first.shape[1]}×{first.shape[0]}: expected one aspect ratio per split "
                    "(or each frame's own intrinsics: fl_x, fl_y, cx, cy, w, h)"
                )
            output[number, :own_height] = premultiplied_area_resize(image, own_height, resolution)

        list(pool.map(process, range(len(paths))))
    return output


def mask_size(path: Path) -> tuple[int, int]:
    """(width, height) of a mask file (`frames[i].mask_path`): one channel, 8 or 16 bits, or
    `DataError` naming the file."""
    with open(path, "rb") as file:
        head = file.read(26)
    if head[:8] == PNG_SIGNATURE and len(head) >= 26 and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if head[25] != PNG_GRAY:
            raise DataError(
                f"{path}: expected a one-channel (greyscale) PNG mask, got colour type {head[25]} "
                "(a palette or colour image: save it as greyscale, 0 where a pixel is not trained on)"
            )
        return width, height
    mask = decode_mask(path)
    return mask.shape[1], mask.shape[0]


def decode_mask(path: Path) -> np.ndarray:
    """A mask file's pixels as bool (height, width): True where the pixel counts (non-zero),
    as nerfstudio reads `mask_path`; `DataError` naming the file unless it is one channel."""
    try:
        mask = iio.imread(path)
    except Exception as error:  # noqa: BLE001 (imageio raises many types for a broken file)
        raise DataError(f"{path} could not be read as a mask image: {error}".splitlines()[0]) from None
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DataError(f"{path}: expected a one-channel (greyscale) mask, 0 where a pixel is not trained on, got an array of shape {mask.shape}")
    return mask != 0


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A bool mask at (height, width): an output pixel counts only when all of its area does
    (area averaging, as the image's own pixels are resized, so no pixel that mixes in a masked
    one is trained on or scored)."""
    if mask.shape == (height, width):
        return mask
    # The windows of area resizing (adaptive average pooling): a pixel counts when no masked
    # source pixel lies in its window.
    masked = torch.from_numpy(~mask).float()[None, None]
    return (F.adaptive_max_pool2d(masked, (height, width))[0, 0] == 0).numpy()


def premultiplied_area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, 4) float16, colour premultiplied by alpha, averaged over each output
    pixel's area (antialiased, without the dark fringe that averaging straight colour gives)."""
    rgba = torch.from_numpy(image.astype(np.float32) if image.dtype == np.uint16 else image).float() / DEPTHS[image.dtype]
    if rgba.shape[2] == 3:
        rgba = torch.cat([rgba, torch.ones_like(rgba[..., :1])], dim=-1)
    rgba[..., :3] *= rgba[..., 3:]
    if rgba.shape[:2] != (height, width):
        rgba = F.interpolate(rgba.permute(2, 0, 1)[None], size=(height, width), mode="area")[0].permute(1, 2, 0)
    return rgba.numpy().astype(np.float16)
