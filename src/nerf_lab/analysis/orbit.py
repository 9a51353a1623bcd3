"""A trained model seen from a circle around its scene: the camera path, the frames, and the
GIF and MP4 files they go into (`nerf_lab.render` and the reports' orbits).

The camera circles the scene's vertical axis at the radius of the data set's cameras and at
their mean elevation (or `elevation_deg`), looking at the origin, as the NeRF papers' videos do.
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

from nerf_lab.nerf.model import render_in_chunks
from nerf_lab.nerf.rays import focal_from_fov, image_rays, look_at
from nerf_lab.training.checkpoints import Trained
from nerf_lab.training.panels import colourise_depth, side_by_side


def orbit_poses(radius: float, elevation_deg: float, frames: int) -> Float[Tensor, "frames 4 4"]:
    """`frames` poses evenly spaced around a circle at `elevation_deg` on a sphere of `radius`."""
    elevation = math.radians(elevation_deg)
    azimuths = torch.linspace(0.0, 2 * math.pi, frames + 1, dtype=torch.float64)[:-1]
    positions = radius * torch.stack(
        [math.cos(elevation) * torch.cos(azimuths), math.cos(elevation) * torch.sin(azimuths), torch.full_like(azimuths, math.sin(elevation))],
        dim=-1,
    )
    return torch.stack([look_at(position) for position in positions]).float()


@dataclass
class Orbit:
    frames: list[np.ndarray]
    radius: float
    elevation_deg: float
    width: int


def orbit_frames(
    trained: Trained,
    frames: int,
    elevation_deg: float | None = None,
    width: int | None = None,
    depth: bool = False,
    scene_dir: str | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> Orbit:
    """`frames` views of a trained model around the scene (colour, and depth beside it), on
    the sphere its data set's cameras lie on, at their mean elevation unless given."""
    data = trained.run_config.data
    datamodule = trained.datamodule(scene_dir)
    train_poses, camera_angle_x = datamodule.cameras("train")
    radius = float(train_poses[:, :3, 3].norm(dim=-1).mean())
    if elevation_deg is None:
        positions = datamodule.cameras("test")[0][:, :3, 3]
        elevation_deg = float(torch.rad2deg(torch.asin(positions[:, 2] / positions.norm(dim=-1))).mean())
    width = width if width is not None else data.resolution
    focal = focal_from_fov(camera_angle_x, width)
    device = torch.device(device)
    module = trained.module.to(device)
    images = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for pose in orbit_poses(radius, elevation_deg, frames):
            out = render_in_chunks(module.model, image_rays(pose.to(device), focal, width, width), module.chunk)
            panels = [out["rgb"]]
            if depth:
                panels.append(colourise_depth(out["depth"].float(), out["opacity"].float(), data.near, data.far))
            images.append(side_by_side(*panels))
    return Orbit(images, radius, elevation_deg, width)


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
