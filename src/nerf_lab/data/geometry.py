"""What a scene's cameras imply about where the scene is, checked before a run starts; and the
transform that puts a capture where the Blender scenes are (`data.normalize`).

From the camera-to-world poses alone (OpenGL convention, each camera looking down its −z axis):
the *focus point* is the point closest, in least squares, to every camera's viewing axis,

    p = argmin Σ_i |(I − a_i a_iᵀ)(p − o_i)|²  =  (Σ_i (I − a_i a_iᵀ))⁻¹ Σ_i (I − a_i a_iᵀ) o_i

(o_i the camera centre, a_i its unit axis). For cameras around an object it is the object's
centre; nerfstudio's and instant-ngp's converters centre captures the same way. When the axes
are nearly parallel (a forward-facing capture) there is no such point: the smallest eigenvalue
of Σ(I − a aᵀ)/n, the mean squared sine of the axes' spread about their common direction, is
below `PARALLEL`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nerf_lab.errors import DataError

log = logging.getLogger("nerf_lab")

# The Blender synthetic scenes' cameras sit 4.0311 units from the origin (every view of every
# split of Lego), with near 2, far 6 and the object inside [-1.5, 1.5]³.
BLENDER_CAMERA_DISTANCE = 4.0311
BLENDER_HALF_BOX = 1.5
# Below this mean squared sine (axes within about 6° of one direction) the axes have no focus.
PARALLEL = 0.01


@dataclass(frozen=True)
class Focus:
    """Where the cameras look: the focus point, each camera's distance to it (scene units),
    and whether it lies in front of each camera (its depth along the axis is positive)."""

    point: np.ndarray  # (3,)
    distances: np.ndarray  # (cameras,)
    in_front: np.ndarray  # (cameras,) bool


@dataclass(frozen=True)
class SceneTransform:
    """position ← scale · (position − centre), rotations kept: applied to every camera."""

    centre: tuple[float, float, float]
    scale: float

    def apply(self, poses: np.ndarray) -> np.ndarray:
        """(cameras, 4, 4) camera-to-world poses, float64, moved and scaled."""
        moved = np.array(poses, dtype=np.float64, copy=True)
        moved[:, :3, 3] = self.scale * (moved[:, :3, 3] - np.array(self.centre))
        return moved

    def to_config(self) -> dict[str, Any]:
        return {"centre": [float(x) for x in self.centre], "scale": float(self.scale)}

    @staticmethod
    def from_config(value: Any) -> SceneTransform | None:
        if value is None:
            return None
        return SceneTransform(tuple(float(x) for x in value["centre"]), float(value["scale"]))


def focus_of(poses: np.ndarray) -> Focus | None:
    """The focus point of (cameras, 4, 4) poses, or None when their axes are nearly parallel."""
    poses = np.asarray(poses, dtype=np.float64)
    origins = poses[:, :3, 3]
    axes = -poses[:, :3, 2] / np.linalg.norm(poses[:, :3, 2], axis=-1, keepdims=True)
    projectors = np.eye(3) - axes[:, :, None] * axes[:, None, :]  # (cameras, 3, 3)
    normal = projectors.sum(0)
    if np.linalg.eigvalsh(normal / len(poses))[0] < PARALLEL:
        return None
    point = np.linalg.solve(normal, (projectors @ origins[:, :, None]).sum(0))[:, 0]
    depth = np.einsum("ij,ij->i", point - origins, axes)
    return Focus(point, np.linalg.norm(point - origins, axis=-1), depth > 0)


def normalizing_transform(poses: np.ndarray) -> SceneTransform:
    """Centre on the focus point; scale so the cameras' mean distance to it is the Blender
    scenes' (`BLENDER_CAMERA_DISTANCE`). `DataError` when the axes have no focus point."""
    focus = focus_of(poses)
    if focus is None:
        raise DataError(
            "data.normalize=true: the cameras' axes are nearly parallel (a forward-facing capture), so there is no "
            "point they look at to centre on: expected data.normalize=false with data.near, data.far and data.scene_box set by hand"
        )
    return SceneTransform(tuple(float(x) for x in focus.point), BLENDER_CAMERA_DISTANCE / float(focus.distances.mean()))


def derived_bounds(poses: np.ndarray) -> tuple[float, float, list[list[float]]]:
    """near, far and the scene box of poses already normalised: the Blender scenes' margins
    (2 units either side of the focus point, a box 1.5 units each way) around the cameras'
    distances to the origin, rounded to 2 decimals."""
    distances = np.linalg.norm(np.asarray(poses)[:, :3, 3], axis=-1)
    near = max(0.05, math.floor(100 * (distances.min() - 2.0)) / 100)
    far = math.ceil(100 * (distances.max() + 2.0)) / 100
    return near, far, [[-BLENDER_HALF_BOX] * 3, [BLENDER_HALF_BOX] * 3]


def _nice(value: float) -> str:
    """`value` rounded to 2 significant digits, written plainly (4, 12, 0.35)."""
    if value <= 0:
        return "0"
    return f"{float(f'{value:.2g}'):g}"


def _box(low: np.ndarray, high: np.ndarray) -> str:
    """A box as it is written on the command line: [[x,y,z],[x,y,z]]."""
    return "[[" + ",".join(f"{x:.4g}" for x in low) + "],[" + ",".join(f"{x:.4g}" for x in high) + "]]"


def check_geometry(poses: np.ndarray, near: float, far: float, scene_box: list | None, convention: str, normalize: bool) -> None:
    """`DataError`, one line saying what was found and what to set, when the cameras look away
    from the point their axes meet, when that point lies outside `scene_box`, or when it is
    not between `near` and `far` from every camera. One warning, and no test, when the axes
    are nearly parallel."""
    focus = focus_of(poses)
    n = len(poses)
    if focus is None:
        log.warning("data: the cameras' viewing axes are nearly parallel (a forward-facing capture?): no point they look at, so the geometry check is skipped; make sure data.near, data.far and data.scene_box fit the scene")
        return
    away = int((~focus.in_front).sum())
    if away > n // 2:
        other = "opencv" if convention == "opengl" else "opengl"
        names = {"opencv": "OpenCV/COLMAP convention (y down, looking down +z)", "opengl": "OpenGL/Blender convention (y up, looking down -z)"}
        raise DataError(
            f"data: {away} of {n} cameras face away from the point their axes meet: are the poses in the {names[other]}? "
            f"set data.camera_convention={other}"
        )
    point = ", ".join(f"{round(x, 2) + 0.0:.2f}" for x in focus.point)  # + 0.0: no "-0.00"
    if scene_box is not None:
        low, high = np.array(scene_box[0], dtype=float), np.array(scene_box[1], dtype=float)
        if np.any(focus.point < low) or np.any(focus.point > high):
            half = 0.5 * (high - low)
            raise DataError(
                f"data: the cameras look at a point ({point}) outside data.scene_box={_box(low, high)}; "
                f"set data.scene_box={_box(focus.point - half, focus.point + half)}, or data.normalize=true"
            )
    closest, farthest = float(focus.distances.min()), float(focus.distances.max())
    if closest < near or farthest > far:
        # Half the nearest distance and 1.5 times the farthest: Lego's 2 and 6 about its 4.03.
        suggestion = f"set data.near={_nice(closest / 2)} data.far={_nice(farthest * 1.5)}"
        suggestion += "" if normalize else ", or data.normalize=true"
        mean = float(focus.distances.mean())
        if farthest > far and closest >= near:
            found = f"{mean:.2f} units away, beyond data.far={far}" if farthest - closest < 0.1 * mean else f"{closest:.2f} to {farthest:.2f} units away, beyond data.far={far}"
        elif closest < near and farthest <= far:
            found = f"{mean:.2f} units away, nearer than data.near={near}" if farthest - closest < 0.1 * mean else f"{closest:.2f} to {farthest:.2f} units away, nearer than data.near={near}"
        else:
            found = f"{closest:.2f} to {farthest:.2f} units away, outside [data.near, data.far]=[{near}, {far}]"
        raise DataError(f"data: the cameras look at a point {found}; {suggestion}")
