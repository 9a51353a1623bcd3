"""A built-in scene, ray traced analytically, written in the Blender layout.

A fresh machine has no NeRF data set and cannot download one, so the framework makes its own:
a small still life inside [-1.2, 1.2]³ seen from cameras on a sphere around the origin, as in
the NeRF synthetic scenes. It is written as RGBA PNGs plus `transforms_{train,val,test}.json`,
exactly what `nerf_lab.data.blender` reads, so it exercises the same code path as real data.

The tracer is independent of the NeRF renderer (plain NumPy, exact ray–surface
intersections), so the images are ground truth, not a NeRF's output. What is in it, and why:

* a disc-shaped table with a checkerboard top: texture, which positional encoding must resolve;
* a red glossy sphere with a moving highlight: view-dependent colour;
* a blue box turned 30° about the vertical: flat faces and sharp edges;
* three thin yellow poles (radius 0.035) topped by green balls: thin parts that too few samples
  per ray step over;
* Lambertian shading with hard shadows from a directional light, on every surface.

Everything is deterministic: camera positions come from a Fibonacci lattice and an orbit,
not from a random generator.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from nerf_lab.files import remove_stale_partials, written_atomically

# Bump when the scene's content changes, so cached renders are regenerated.
SCENE_VERSION = 1
CAMERA_ANGLE_X = 0.6911112070083618  # the NeRF synthetic scenes' field of view
CAMERA_RADIUS = 4.0
SPLIT_SIZES = {"train": 100, "val": 8, "test": 16}
SUBSAMPLES = 2  # 2 × 2 rays a pixel: antialiased edges, fractional alpha at silhouettes

LIGHT = np.array([0.45, 0.3, 0.85]) / np.linalg.norm([0.45, 0.3, 0.85])
AMBIENT = 0.35
MISS = np.inf
# The box everything in SCENE lies in (data=builtin's data.scene_box; a test checks both agree).
SCENE_BOX = ((-1.2, -1.2, -1.2), (1.2, 1.2, 1.2))


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float]
    specular: float = 0.0


@dataclass(frozen=True)
class Cylinder:
    """Upright (z-axis) cylinder with flat caps."""

    centre_xy: tuple[float, float]
    radius: float
    z_min: float
    z_max: float
    colour: tuple[float, float, float]
    checker_top: bool = False


@dataclass(frozen=True)
class Box:
    """Box turned by `angle` radians about the vertical through its centre."""

    centre: tuple[float, float, float]
    half_size: tuple[float, float, float]
    angle: float
    colour: tuple[float, float, float]


SCENE: tuple[Sphere | Cylinder | Box, ...] = (
    Cylinder((0.0, 0.0), 1.15, -0.12, 0.0, (0.85, 0.8, 0.7), checker_top=True),
    Sphere((0.42, 0.38, 0.45), 0.45, (0.85, 0.15, 0.12), specular=0.6),
    Box((-0.42, -0.2, 0.35), (0.3, 0.3, 0.35), math.radians(30.0), (0.15, 0.3, 0.85)),
    Cylinder((0.55, -0.55), 0.035, 0.0, 1.0, (0.95, 0.8, 0.1)),
    Cylinder((0.15, -0.8), 0.035, 0.0, 0.75, (0.95, 0.8, 0.1)),
    Cylinder((-0.75, 0.5), 0.035, 0.0, 0.9, (0.95, 0.8, 0.1)),
    Sphere((0.55, -0.55, 1.0), 0.11, (0.2, 0.75, 0.25)),
    Sphere((0.15, -0.8, 0.75), 0.09, (0.2, 0.75, 0.25)),
    Sphere((-0.75, 0.5, 0.9), 0.1, (0.2, 0.75, 0.25)),
)


# --- intersections: each returns (t, normal) for the nearest hit with t > 0, t = inf on a miss ---


def _intersect_sphere(origins: np.ndarray, directions: np.ndarray, sphere: Sphere) -> tuple[np.ndarray, np.ndarray]:
    offset = origins - np.asarray(sphere.centre)
    b = np.einsum("ij,ij->i", offset, directions)
    c = np.einsum("ij,ij->i", offset, offset) - sphere.radius**2
    a = np.einsum("ij,ij->i", directions, directions)
    discriminant = b * b - a * c
    root = np.sqrt(np.maximum(discriminant, 0.0))
    near, far = (-b - root) / a, (-b + root) / a
    t = np.where(near > 1e-6, near, np.where(far > 1e-6, far, MISS))
    t = np.where(discriminant >= 0, t, MISS)
    normal = (origins + directions * np.where(np.isfinite(t), t, 0.0)[:, None] - sphere.centre) / sphere.radius
    return t, normal


def _intersect_cylinder(origins: np.ndarray, directions: np.ndarray, cylinder: Cylinder) -> tuple[np.ndarray, np.ndarray]:
    centre = np.asarray(cylinder.centre_xy)
    ox, oy = (origins[:, :2] - centre).T
    dx, dy = directions[:, 0], directions[:, 1]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - cylinder.radius**2
    discriminant = b * b - a * c
    root = np.sqrt(np.maximum(discriminant, 0.0))
    safe_a = np.where(a > 1e-12, a, 1.0)
    candidates, normals = [], []
    for t_side in ((-b - root) / safe_a, (-b + root) / safe_a):
        z = origins[:, 2] + t_side * directions[:, 2]
        valid = (discriminant >= 0) & (a > 1e-12) & (t_side > 1e-6) & (z >= cylinder.z_min) & (z <= cylinder.z_max)
        candidates.append(np.where(valid, t_side, MISS))
        hit_xy = origins[:, :2] + t_side[:, None] * directions[:, :2] - centre
        normals.append(np.concatenate([hit_xy / cylinder.radius, np.zeros_like(z)[:, None]], axis=1))
    safe_dz = np.where(np.abs(directions[:, 2]) > 1e-12, directions[:, 2], 1e-12)
    for z_cap, sign in ((cylinder.z_max, 1.0), (cylinder.z_min, -1.0)):
        t_cap = (z_cap - origins[:, 2]) / safe_dz
        hit_xy = origins[:, :2] + t_cap[:, None] * directions[:, :2] - centre
        valid = (t_cap > 1e-6) & (np.einsum("ij,ij->i", hit_xy, hit_xy) <= cylinder.radius**2)
        candidates.append(np.where(valid, t_cap, MISS))
        normals.append(np.broadcast_to([0.0, 0.0, sign], directions.shape))
    stacked = np.stack(candidates)
    nearest = np.argmin(stacked, axis=0)
    rows = np.arange(len(origins))
    return stacked[nearest, rows], np.stack(normals)[nearest, rows]


def _intersect_box(origins: np.ndarray, directions: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    cos, sin = math.cos(box.angle), math.sin(box.angle)
    to_local = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])  # rotation by −angle
    local_origins = (origins - np.asarray(box.centre)) @ to_local.T
    local_dirs = directions @ to_local.T
    safe = np.where(np.abs(local_dirs) > 1e-12, local_dirs, 1e-12)
    half = np.asarray(box.half_size)
    t1, t2 = (-half - local_origins) / safe, (half - local_origins) / safe
    t_enter = np.minimum(t1, t2).max(axis=1)
    t_exit = np.maximum(t1, t2).min(axis=1)
    axis = np.minimum(t1, t2).argmax(axis=1)
    hit = (t_enter <= t_exit) & (t_exit > 1e-6)
    t = np.where(hit, np.where(t_enter > 1e-6, t_enter, t_exit), MISS)
    local_normal = np.zeros_like(local_dirs)
    rows = np.arange(len(origins))
    local_normal[rows, axis] = -np.sign(safe[rows, axis])
    return t, local_normal @ to_local  # back to world: rotation by +angle


def _bounding_sphere(shape: Sphere | Cylinder | Box) -> tuple[np.ndarray, float]:
    if isinstance(shape, Sphere):
        return np.asarray(shape.centre), shape.radius
    if isinstance(shape, Cylinder):
        half_height = 0.5 * (shape.z_max - shape.z_min)
        centre = np.array([*shape.centre_xy, shape.z_min + half_height])
        return centre, math.hypot(shape.radius, half_height)
    return np.asarray(shape.centre), float(np.linalg.norm(shape.half_size))


def _intersect(origins: np.ndarray, directions: np.ndarray, shape: Sphere | Cylinder | Box) -> tuple[np.ndarray, np.ndarray]:
    """Exact intersection, computed only for the rays that pass near the shape (its bounding
    sphere): the thin poles cover a few percent of the image, and this makes rendering fast."""
    centre, radius = _bounding_sphere(shape)
    offset = centre - origins
    along = np.einsum("ij,ij->i", offset, directions) / np.einsum("ij,ij->i", directions, directions)
    closest = offset - along[:, None] * directions
    near = np.einsum("ij,ij->i", closest, closest) <= radius * radius * 1.0001
    t = np.full(len(origins), MISS)
    normal = np.zeros_like(directions)
    if near.any():
        intersect = {Sphere: _intersect_sphere, Cylinder: _intersect_cylinder, Box: _intersect_box}[type(shape)]
        t[near], normal[near] = intersect(origins[near], directions[near], shape)
    return t, normal


def trace(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the nearest surface (inf where the ray misses) and its shaded colour."""
    hits = [_intersect(origins, directions, shape) for shape in SCENE]
    distances = np.stack([t for t, _ in hits])
    nearest = np.argmin(distances, axis=0)
    rows = np.arange(len(origins))
    t = distances[nearest, rows]
    normal = np.stack([n for _, n in hits])[nearest, rows]
    hit = np.isfinite(t)
    points = origins + directions * np.where(hit, t, 0.0)[:, None]

    colour = np.zeros((len(origins), 3))
    for index, shape in enumerate(SCENE):
        mask = hit & (nearest == index)
        colour[mask] = shape.colour
        if isinstance(shape, Cylinder) and shape.checker_top:
            top = mask & (normal[:, 2] > 0.5)
            checks = (np.floor(points[top, 0] / 0.25) + np.floor(points[top, 1] / 0.25)) % 2
            colour[top] = np.where(checks[:, None] == 0, [0.92, 0.88, 0.78], [0.3, 0.28, 0.3])

    # Shadows: is anything between the point and the (directional) light?
    lit = np.zeros(len(origins), dtype=bool)
    if hit.any():
        shadow_origins = points[hit] + normal[hit] * 1e-4
        shadow_dirs = np.broadcast_to(LIGHT, shadow_origins.shape)
        blocked = np.stack([_intersect(shadow_origins, shadow_dirs, shape)[0] for shape in SCENE]).min(axis=0)
        lit[hit] = ~np.isfinite(blocked)
    # Rays start outside every object, so a normal facing away from the ray only happens at
    # grazing angles; flip it to keep shading smooth there.
    facing = np.einsum("ij,ij->i", normal, directions) > 0
    normal[facing] *= -1
    diffuse = np.clip(normal @ LIGHT, 0.0, None) * lit
    shaded = colour * (AMBIENT + (1 - AMBIENT) * diffuse[:, None])

    # A Phong highlight on glossy spheres moves with the viewer: view-dependent colour.
    view = -directions / np.linalg.norm(directions, axis=1, keepdims=True)
    reflected = 2 * (normal @ LIGHT)[:, None] * normal - LIGHT
    gloss = np.zeros(len(origins))
    for index, shape in enumerate(SCENE):
        if isinstance(shape, Sphere) and shape.specular > 0:
            gloss[hit & (nearest == index)] = shape.specular
    highlight = gloss * lit * np.clip(np.einsum("ij,ij->i", reflected, view), 0, None) ** 30
    return t, np.clip(shaded + highlight[:, None], 0.0, 1.0)


# --- cameras ---


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """Camera-to-world matrix (OpenGL: looks down −z, +y up) at `position`, facing the origin."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, -forward, position
    return pose


def camera_positions(split: str) -> np.ndarray:
    """Train and val: a Fibonacci lattice over the upper hemisphere (elevations 8°–80°, as in
    the Blender scenes' training views); test: an orbit at 30° elevation, as their test set."""
    count = SPLIT_SIZES[split]
    if split == "test":
        azimuth = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
        elevation = np.full(count, math.radians(30.0))
    else:
        offset = 0.5 if split == "train" else 0.25  # val views fall between the training views
        k = np.arange(count) + offset
        sin_low, sin_high = math.sin(math.radians(8.0)), math.sin(math.radians(80.0))
        elevation = np.arcsin(sin_low + (sin_high - sin_low) * k / count)
        azimuth = k * math.pi * (3.0 - math.sqrt(5.0)) + (0.0 if split == "train" else 1.0)
    return CAMERA_RADIUS * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=1
    )


def render_view(pose: np.ndarray, resolution: int) -> np.ndarray:
    """An RGBA float image (straight alpha) of the scene, `SUBSAMPLES²` rays a pixel."""
    focal = 0.5 * resolution / math.tan(0.5 * CAMERA_ANGLE_X)
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES
    rows = np.arange(resolution)[:, None, None, None] + offsets[None, None, :, None]
    cols = np.arange(resolution)[None, :, None, None] + offsets[None, None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    camera_dirs = np.stack(
        [(cols - 0.5 * resolution) / focal, -(rows - 0.5 * resolution) / focal, -np.ones_like(rows)], axis=-1
    ).reshape(-1, 3)
    directions = camera_dirs @ pose[:3, :3].T
    origins = np.broadcast_to(pose[:3, 3], directions.shape)
    t, colour = trace(origins, directions)
    coverage = np.isfinite(t).astype(np.float64)
    per_pixel = (resolution, resolution, SUBSAMPLES * SUBSAMPLES)
    alpha = coverage.reshape(per_pixel).mean(axis=-1)
    premultiplied = (colour * coverage[:, None]).reshape(*per_pixel, 3).mean(axis=-2)
    rgb = premultiplied / np.maximum(alpha, 1e-8)[..., None]
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def write_scene(folder: Path, resolution: int) -> None:
    """Render every split into `folder` in the Blender layout."""
    for split in SPLIT_SIZES:
        (folder / split).mkdir(parents=True, exist_ok=True)
        poses = [look_at_origin(position) for position in camera_positions(split)]

        def render_and_write(number: int) -> None:
            image = render_view(poses[number], resolution)
            iio.imwrite(folder / split / f"r_{number}.png", np.round(image * 255).astype(np.uint8))

        # NumPy releases the GIL inside its array loops, so views render in parallel threads.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(render_and_write, range(len(poses))))
        frames = [
            {"file_path": f"./{split}/r_{number}", "transform_matrix": pose.tolist()}
            for number, pose in enumerate(poses)
        ]
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (folder / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))


def builtin_scene_dir(cache_dir: str | Path, resolution: int) -> Path:
    return Path(cache_dir) / "scenes" / f"builtin-v{SCENE_VERSION}-{resolution}px"


def ensure_builtin_scene(cache_dir: str | Path, resolution: int) -> Path:
    """The built-in scene at `resolution` px, rendered into `cache_dir` on first use.

    Rendering goes to a temporary folder that is renamed into place when complete, so an
    interrupted render never leaves a scene that looks whole.
    """
    folder = builtin_scene_dir(cache_dir, resolution)
    if folder.parent.is_dir():
        remove_stale_partials(folder.parent)  # the folders of renders killed before they finished
    if (folder / "transforms_test.json").is_file():
        return folder
    try:
        with written_atomically(folder) as partial:
            write_scene(partial, resolution)
    except OSError:  # another process finished first (its scene is identical), or a fault
        if not (folder / "transforms_test.json").is_file():
            raise
    return folder
