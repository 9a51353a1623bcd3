"""Variants of a small Lego (25/2/4 views at 64 px) as users bring their own scenes: at another
scale, off-centre, with OpenCV poses, JPEG frames, intrinsics only as fl_x/cx/...; each built
from the same pixels, so the answer is known: the unmodified scene's."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

VIEWS = {"train": 25, "val": 2, "test": 4}
SIZE = 64


def make_small_lego(lego: Path, out: Path) -> Path:
    """Evenly spaced views of each split, resized to 64 px by area averaging (straight RGBA)."""
    for split, count in VIEWS.items():
        meta = json.loads((lego / f"transforms_{split}.json").read_text())
        frames = meta["frames"][:: len(meta["frames"]) // count][:count]
        (out / split).mkdir(parents=True, exist_ok=True)
        kept = []
        for frame in frames:
            name = Path(frame["file_path"]).name
            image = torch.from_numpy(iio.imread(lego / f"{frame['file_path']}.png")).float().permute(2, 0, 1)[None]
            small = torch.nn.functional.interpolate(image, size=(SIZE, SIZE), mode="area")[0].permute(1, 2, 0)
            iio.imwrite(out / split / f"{name}.png", small.round().to(torch.uint8).numpy())
            kept.append({"file_path": f"./{split}/{name}", "transform_matrix": frame["transform_matrix"]})
        (out / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": meta["camera_angle_x"], "frames": kept}))
    return out


def variant(base: Path, out: Path, edit_frame: Callable[[dict], None] = lambda f: None, edit_top: Callable[[dict], None] = lambda m: None,
            image: Callable[[Path, Path], str] | None = None) -> Path:
    """A copy of `base` with each frame and each JSON's top level edited; images linked, or
    written by `image(source, folder)` (returning the new file_path)."""
    for split in VIEWS:
        meta = json.loads((base / f"transforms_{split}.json").read_text())
        (out / split).mkdir(parents=True, exist_ok=True)
        for frame in meta["frames"]:
            source = base / f"{frame['file_path']}.png"
            if image is None:
                os.symlink(source, out / split / source.name)
            else:
                frame["file_path"] = image(source, out / split)
            edit_frame(frame)
        edit_top(meta)
        (out / f"transforms_{split}.json").write_text(json.dumps(meta))
    return out


def scaled(factor: float) -> Callable[[dict], None]:
    def edit(frame: dict) -> None:
        for row in frame["transform_matrix"][:3]:
            row[3] *= factor
    return edit


def shifted(offset: tuple[float, float, float]) -> Callable[[dict], None]:
    def edit(frame: dict) -> None:
        for row, delta in zip(frame["transform_matrix"][:3], offset):
            row[3] += delta
    return edit


def opencv(frame: dict) -> None:
    for row in frame["transform_matrix"][:3]:
        row[1], row[2] = -row[1], -row[2]


def pixel_intrinsics(meta: dict) -> None:
    """camera_angle_x replaced by fl_x, fl_y, cx, cy, w, h of the 800 px originals."""
    focal = 0.5 * 800 / math.tan(0.5 * meta.pop("camera_angle_x"))
    meta.update(fl_x=focal, fl_y=focal, cx=400.0, cy=400.0, w=800, h=800)


def jpeg(source: Path, folder: Path) -> str:
    """The image composited onto white and saved as a JPEG of best quality."""
    rgba = iio.imread(source).astype(np.float64) / 255
    rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    iio.imwrite(folder / f"{source.stem}.jpg", np.round(255 * rgb).astype(np.uint8), quality=95)
    return f"./{folder.name}/{source.stem}.jpg"
