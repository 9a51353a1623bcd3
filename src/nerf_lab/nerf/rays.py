"""Rays of a pinhole camera in the Blender / OpenGL convention.

The camera looks down its −z axis with +x right and +y up; a pose is the camera-to-world
matrix [R | t] (3×4 or 4×4). The ray through pixel (row i, column j) leaves the camera
centre t along

    d = R · ((j + ½ − c_x) / f_x,  −(i + ½ − c_y) / f_y,  −1)

through the pixel's centre, where (f_x, f_y, c_x, c_y) are the intrinsics in pixels (the focal
lengths and the principal point, measured from the image's top-left corner, as instant-ngp's and
nerfstudio's `transforms.json` give them). A camera with its principal point at the image
centre (c_x, c_y) = (W/2, H/2) and f_x = f_y = f, as in the Blender scenes, is `pixel_rays`. d is deliberately not normalised: its camera-space z component is
−1, so a distance t along the ray is a depth along the optical axis, and `near`/`far` bound
depth as in the authors' code. Renderers scale by |d| to get metric distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass(frozen=True)
class RayBundle:
    """Ray origins and (unnormalised) directions with a common leading shape."""

    origins: Float[Tensor, "*batch 3"]
    directions: Float[Tensor, "*batch 3"]

    @property
    def shape(self) -> torch.Size:
        return self.origins.shape[:-1]

    def reshape(self, *shape: int) -> RayBundle:
        return RayBundle(self.origins.reshape(*shape, 3), self.directions.reshape(*shape, 3))

    def __getitem__(self, index: slice | Tensor) -> RayBundle:
        return RayBundle(self.origins[index], self.directions[index])

    def to(self, device: torch.device | str) -> RayBundle:
        return RayBundle(self.origins.to(device), self.directions.to(device))


def focal_from_fov(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels of a camera `width` pixels wide with horizontal field of view
    `camera_angle_x` (radians): f = ½ W / tan(½ camera_angle_x)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def centred_intrinsics(focal: float, height: int, width: int) -> Float[Tensor, "4"]:
    """(f_x, f_y, c_x, c_y) of a camera with square pixels of focal length `focal` and its
    principal point at the centre of a `height` × `width` image (float64)."""
    return torch.tensor([focal, focal, 0.5 * width, 0.5 * height], dtype=torch.float64)


def camera_rays(
    poses: Float[Tensor, "*batch 3 4"] | Float[Tensor, "*batch 4 4"],
    rows: Int[Tensor, "*batch"] | Float[Tensor, "*batch"],
    cols: Int[Tensor, "*batch"] | Float[Tensor, "*batch"],
    intrinsics: Float[Tensor, "*batch 4"] | Float[Tensor, "4"],
) -> RayBundle:
    """Rays through the centres of pixels (rows, cols), each with its own camera-to-world pose
    and intrinsics (f_x, f_y, c_x, c_y) in pixels (one row for all rays, or one a ray).

    The pixel arithmetic is done in the dtype of `rows` (the default dtype for integer rows),
    with the intrinsics rounded to it, so a centred camera gives `pixel_rays`' rays bit for bit.
    The rotation is applied in the poses' dtype whatever the autocast context: under bf16
    autocast a matrix product would round the directions to bfloat16 (8 bits of mantissa, a
    few pixels' error at 800 px), and rendering a view inside one must not move its rays.
    """
    dtype = rows.dtype if rows.is_floating_point() else torch.get_default_dtype()
    k = intrinsics.to(device=rows.device, dtype=dtype)
    x = (cols + 0.5 - k[..., 2]) / k[..., 0]
    y = -(rows + 0.5 - k[..., 3]) / k[..., 1]
    camera_dirs = torch.stack([x, y, -torch.ones_like(x)], dim=-1).to(poses.dtype)
    rotation = poses[..., :3, :3]
    with torch.autocast(device_type=poses.device.type, enabled=False):
        directions = (rotation @ camera_dirs[..., None])[..., 0]
    origins = poses[..., :3, 3].expand_as(directions)
    return RayBundle(origins, directions)


def pixel_rays(
    poses: Float[Tensor, "*batch 3 4"] | Float[Tensor, "*batch 4 4"],
    rows: Int[Tensor, "*batch"] | Float[Tensor, "*batch"],
    cols: Int[Tensor, "*batch"] | Float[Tensor, "*batch"],
    focal: float,
    height: int,
    width: int,
) -> RayBundle:
    """Rays through the centres of pixels (rows, cols), each with its own camera-to-world pose.

    `poses` has the same leading shape as `rows` and `cols` (gather per-ray poses first), so
    a training batch drawn across many views is one call. The principal point is the image
    centre; `camera_rays` takes any.
    """
    return camera_rays(poses, rows, cols, centred_intrinsics(focal, height, width))


def image_rays(
    pose: Float[Tensor, "3 4"] | Float[Tensor, "4 4"],
    focal: float,
    height: int,
    width: int,
    intrinsics: Float[Tensor, "4"] | None = None,
) -> RayBundle:
    """Rays through every pixel of one view, shaped (height, width): a camera of focal length
    `focal` centred on the image, or with `intrinsics` (f_x, f_y, c_x, c_y) when given."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=pose.device, dtype=pose.dtype),
        torch.arange(width, device=pose.device, dtype=pose.dtype),
        indexing="ij",
    )
    poses = pose[:3, :4].expand(height, width, 3, 4)
    k = centred_intrinsics(focal, height, width) if intrinsics is None else intrinsics
    return camera_rays(poses, rows, cols, k)


def look_at(position: Float[Tensor, "3"], target: Float[Tensor, "3"] | None = None, up: Float[Tensor, "3"] | None = None) -> Float[Tensor, "4 4"]:
    """Camera-to-world pose at `position` looking at `target` (the origin), with `up` (world
    +z, the Blender scenes' convention) up in the image."""
    target = torch.zeros(3, dtype=position.dtype) if target is None else target
    up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype) if up is None else up.to(position.dtype)
    forward = torch.nn.functional.normalize(target - position, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=0)
    up = torch.linalg.cross(right, forward)
    pose = torch.eye(4, dtype=position.dtype)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, -forward, position
    return pose


def ray_box_intersection(
    origins: Float[Tensor, "*rays 3"],
    directions: Float[Tensor, "*rays 3"],
    box: Float[Tensor, "2 3"],
    near: float,
    far: float,
) -> tuple[Float[Tensor, "*rays"], Float[Tensor, "*rays"], Bool[Tensor, "*rays"]]:
    """The part [t_min, t_max] of [near, far] where the ray o + t·d lies inside the box (slab
    method), and whether there is one (`hit`).

    On each axis k the ray is between the box's planes for t between (b_min,k − o_k) / d_k and
    (b_max,k − o_k) / d_k; it is inside the box on the intersection of the three intervals,
    t_enter = max_k min(…), t_exit = min_k max(…), then clipped to [near, far]. A ray parallel
    to an axis (d_k = 0) is inside that slab for every t or for none. Rays that miss get
    t_min = t_max = far (zero-length, so they render the background and read as far).

    Example: o = (0, 0, −4), d = (0, 0, 1), box [−1, 1]³, near 2, far 6 → t ∈ [3, 5], hit.
    """
    # 1/d with ±inf for d = 0; the nan of 0·inf (origin on a plane) is removed below.
    inverse = 1.0 / directions
    t_low = (box[0] - origins) * inverse
    t_high = (box[1] - origins) * inverse
    t_in = torch.minimum(t_low, t_high).nan_to_num(nan=-math.inf)
    t_out = torch.maximum(t_low, t_high).nan_to_num(nan=math.inf)
    t_min = t_in.amax(dim=-1).clamp_min(near)
    t_max = t_out.amin(dim=-1).clamp_max(far)
    hit = t_max > t_min
    far_t = torch.full_like(t_min, far)
    return torch.where(hit, t_min, far_t), torch.where(hit, t_max, far_t), hit
