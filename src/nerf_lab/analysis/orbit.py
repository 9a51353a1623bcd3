"""A trained model seen from a circle around its scene: the camera path, the frames, and the
GIF and MP4 files they go into (`nerf_lab.render` and the reports' orbits).

The camera circles the training cameras' mean up direction (`mean_up`: world z for the Blender
scenes) through the scene's centre (the centre of
`data.scene_box`, else the point the training cameras look at, else the origin) at the
training cameras' mean distance from it and the test cameras' mean elevation (each
overridable), looking at the centre, as the NeRF papers' videos do. Its images have the
training images' aspect ratio and focal length, with the principal point at their centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from nerf_lab.nerf.marching import render_in_chunks
from nerf_lab.data.geometry import focus_of
from nerf_lab.nerf.rays import image_rays, look_at
from nerf_lab.runs.checkpoints import Trained
from nerf_lab.visuals.panels import colourise_depth, side_by_side


def orbit_poses(
    radius: float, elevation_deg: float, frames: int, centre: Float[Tensor, "3"] | None = None, up: Float[Tensor, "3"] | None = None
) -> Float[Tensor, "frames 4 4"]:
    """`frames` poses evenly spaced around a circle at `elevation_deg` above the plane normal
    to `up` (world +z), on a sphere of `radius` about `centre` (the origin), each looking at
    the centre with `up` up in the image."""
    centre = torch.zeros(3, dtype=torch.float64) if centre is None else centre.double()
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if up is None else torch.nn.functional.normalize(up.double(), dim=0)
    # The circle's plane: x and y for +z up; else x (or y, near x) made normal to the axis.
    reference = torch.tensor([1.0, 0.0, 0.0] if abs(float(axis[0])) < 0.9 else [0.0, 1.0, 0.0], dtype=torch.float64)
    first = torch.nn.functional.normalize(reference - (reference @ axis) * axis, dim=0)
    second = torch.linalg.cross(axis, first)
    elevation = math.radians(elevation_deg)
    azimuths = torch.linspace(0.0, 2 * math.pi, frames + 1, dtype=torch.float64)[:-1]
    positions = radius * (
        math.cos(elevation) * (torch.cos(azimuths)[:, None] * first + torch.sin(azimuths)[:, None] * second) + math.sin(elevation) * axis
    )
    return torch.stack([look_at(centre + position, centre, axis) for position in positions]).float()


def mean_up(poses: Float[Tensor, "cameras 4 4"]) -> Float[Tensor, "3"]:
    """The cameras' mean up direction (their poses' y axes, OpenGL convention), unit length,
    float64: the axis an orbit of the capture turns about (world +z for the Blender scenes,
    elsewhere for many COLMAP captures). +z where the mean vanishes."""
    mean = poses[:, :3, 1].double().mean(0)
    return torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if float(mean.norm()) < 1e-6 else mean / mean.norm()


@dataclass
class Orbit:
    frames: list[np.ndarray]
    radius: float
    elevation_deg: float
    width: int
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)


def scene_centre(data: dict | object, train_poses: Tensor) -> Float[Tensor, "3"]:
    """The centre of `data.scene_box`, else the point the cameras look at, else the origin."""
    box = data.get("scene_box")
    if box is not None:
        low, high = (torch.tensor([float(x) for x in corner], dtype=torch.float64) for corner in box)
        return 0.5 * (low + high)
    focus = focus_of(train_poses.double().numpy())
    return torch.zeros(3, dtype=torch.float64) if focus is None else torch.from_numpy(focus.point)


def orbit_frames(
    trained: Trained,
    frames: int,
    elevation_deg: float | None = None,
    width: int | None = None,
    depth: bool = False,
    scene_dir: str | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    centre: list[float] | None = None,
    radius: float | None = None,
    progress: str | None = None,
) -> Orbit:
    """`frames` views of a trained model around the scene (colour, and depth beside it), on
    the sphere its data set's cameras lie on about its centre, at their mean elevation, unless
    `centre`, `radius` or `elevation_deg` are given. `progress`: a label under which the
    frames rendered so far are shown on stderr (`show_progress`)."""
    data = trained.run_config.data
    datamodule = trained.datamodule(scene_dir)
    train_poses, intrinsics, (train_height, train_width) = datamodule.cameras("train")
    middle = scene_centre(data, train_poses) if centre is None else torch.tensor(centre, dtype=torch.float64)
    if radius is None:
        radius = float((train_poses[:, :3, 3].double() - middle).norm(dim=-1).mean())
    up = mean_up(train_poses)
    if elevation_deg is None:
        offsets = datamodule.poses("test")[:, :3, 3].double() - middle
        elevation_deg = float(torch.rad2deg(torch.asin((offsets @ up) / offsets.norm(dim=-1))).mean())
    width = width if width is not None else data.resolution
    height = max(1, round(train_height * width / train_width))
    focal = float(intrinsics[0, 0]) * width / train_width
    device = torch.device(device)
    module = trained.module.to(device)
    images = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for number, pose in enumerate(orbit_poses(radius, elevation_deg, frames, middle, up)):
            if progress:
                show_progress(progress, number, frames)
            out = render_in_chunks(module.renderer, image_rays(pose.to(device), focal, height, width), module.chunk)
            panels = [out.rgb]
            if depth:
                panels.append(colourise_depth(out.depth.float(), out.opacity.float(), data.near, data.far))
            images.append(side_by_side(*panels))
    if progress:
        show_progress(progress, frames, frames)
    return Orbit(images, radius, elevation_deg, width, tuple(float(x) for x in middle))


def show_progress(label: str, done: int, total: int) -> None:
    """`label: done/total frames` on stderr, rewritten in place (a line of its own when done)."""
    import sys

    end = "\n" if done >= total else ""
    print(f"\r{label}: {done}/{total} frames", end=end, file=sys.stderr, flush=True)


def write_gif(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    return path


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> Path | None:
    """An MP4 where imageio has a video back end (pip install imageio-ffmpeg), else None."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return None
    # Video codecs want even sizes.
    height, width = frames[0].shape[:2]
    padded = [np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge") for frame in frames]
    iio.imwrite(path, np.stack(padded), plugin="FFMPEG", fps=fps)
    return path
