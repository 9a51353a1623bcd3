"""Camera intrinsics as the field writes them in a `transforms.json`.

The Blender synthetic scenes give the horizontal field of view `camera_angle_x` (radians);
instant-ngp's `colmap2nerf.py` and nerfstudio's `ns-process-data` also write the focal lengths
and the principal point in pixels, `fl_x`, `fl_y`, `cx`, `cy`, of an image `w` × `h` pixels
(and `camera_angle_y`). Each key may stand at the top level or in a frame; a frame's own value
wins. Pixel values (`fl_*`, `c*`) win over angles: they also hold the principal point and
differ from the angle only by rounding, which is said once when it exceeds a pixel.

Pixel values refer to the JSON's `w`, `h` (else the image file's size) and are scaled to the
size the image is loaded at: f_x, c_x by W_out / w and f_y, c_y by H_out / h. With no `fl_y`
nor `camera_angle_y`, f_y = f_x (square pixels); with no `cx`, `cy`, the image centre.
Lens distortion (`k1`, `k2`, `k3`, `k4`, `p1`, `p2`) is not modelled: a scene with a non-zero
coefficient is refused, as are camera models other than the pinhole (fisheye, equirectangular).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from nerf_lab.errors import DataError
from nerf_lab.nerf.rays import focal_from_fov

log = logging.getLogger("nerf_lab")

PIXEL_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
ANGLE_KEYS = ("camera_angle_x", "camera_angle_y")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_warned: set[str] = set()  # files whose focal-length disagreement was said already


@dataclass(frozen=True)
class Intrinsics:
    """A frame's intrinsics as its JSON states them (None: not given). Pixel values are in
    pixels of an image `w` × `h` (None: the image file's own size); angles in radians."""

    camera_angle_x: float | None = None
    camera_angle_y: float | None = None
    fl_x: float | None = None
    fl_y: float | None = None
    cx: float | None = None
    cy: float | None = None
    w: float | None = None
    h: float | None = None
    own: bool = False  # the frame states intrinsics of its own

    def scaled(self, width: int, height: int, source_width: int, source_height: int) -> tuple[float, float, float, float]:
        """(f_x, f_y, c_x, c_y) in pixels of the image as loaded, `width` × `height`, from a
        file `source_width` × `source_height` pixels. For a frame with `camera_angle_x` alone
        this is (f, f, W/2, H/2) with f = ½ W / tan(½ camera_angle_x), the Blender scenes'."""
        ref_w = self.w if self.w is not None else source_width
        ref_h = self.h if self.h is not None else source_height
        sx, sy = width / ref_w, height / ref_h
        if self.fl_x is not None:
            fx = self.fl_x * sx
        elif self.camera_angle_x is not None:
            fx = focal_from_fov(self.camera_angle_x, width)
        elif self.fl_y is not None:
            fx = self.fl_y * sx
        else:
            fx = focal_from_fov(self.camera_angle_y, height)
        if self.fl_y is not None:
            fy = self.fl_y * sy
        elif self.camera_angle_y is not None and self.fl_x is None:
            fy = focal_from_fov(self.camera_angle_y, height)
        else:
            fy = fx
        cx = self.cx * sx if self.cx is not None else 0.5 * width
        cy = self.cy * sy if self.cy is not None else 0.5 * height
        return fx, fy, cx, cy


def _number(where: str, key: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low < value < high:
        bounds = f"in ({low:g}, π)" if high == math.pi else f"> {low:g}" if math.isinf(high) else f"in ({low:g}, {high:g})"
        raise DataError(f"{where}: {key} must be a number {bounds}, got {value!r}")
    return float(value)


def read_intrinsics(where: str, top: dict[str, Any], frame: dict[str, Any]) -> Intrinsics:
    """The intrinsics of one frame (`frame`'s keys over `top`'s); `DataError` naming `where`
    and the key for a value out of range, a non-zero distortion coefficient, a non-pinhole
    camera model, or no focal length at all."""
    values: dict[str, float] = {}
    for source, place in ((top, where.split(": frames[")[0]), (frame, where)):
        model = source.get("camera_model")
        if isinstance(model, str) and model.upper() not in PINHOLE_MODELS:
            raise DataError(f"{place}: camera_model {model} is not modelled by nerf_lab: expected a pinhole camera (OPENCV, PINHOLE) with undistorted images")
        for key in DISTORTION_KEYS:
            value = source.get(key)
            if value is not None and value != 0:
                raise DataError(
                    f"{place}: {key}={value} is lens distortion, which nerf_lab does not model: expected undistorted images "
                    "with k1, k2, p1, p2 = 0 (undistort them first, e.g. with colmap image_undistorter)"
                )
        for key in ANGLE_KEYS:
            if source.get(key) is not None:
                values[key] = _number(place, key, source[key], 0.0, math.pi)
        for key in PIXEL_KEYS:
            if source.get(key) is not None:
                values[key] = _number(place, key, source[key], 0.0 if key in ("fl_x", "fl_y", "w", "h") else -math.inf)
    if not any(key in values for key in ("fl_x", "fl_y", *ANGLE_KEYS)):
        raise DataError(f"{where}: no focal length: expected camera_angle_x (radians) or fl_x (pixels), at the top level or in the frame")
    own = any(key in frame for key in (*ANGLE_KEYS, *PIXEL_KEYS))
    intrinsics = Intrinsics(**values, own=own)
    _say_if_focal_lengths_disagree(where.split(": frames[")[0], intrinsics)
    return intrinsics


def _say_if_focal_lengths_disagree(json_path: str, k: Intrinsics) -> None:
    if k.fl_x is None or k.camera_angle_x is None or k.w is None or json_path in _warned:
        return
    from_angle = focal_from_fov(k.camera_angle_x, round(k.w))
    if abs(from_angle - k.fl_x) > 1.0:
        _warned.add(json_path)
        log.warning(
            "%s: fl_x=%.2f px and camera_angle_x=%.4f (a focal length of %.2f px at w=%g) disagree by more than a pixel: using fl_x",
            json_path, k.fl_x, k.camera_angle_x, from_angle, k.w,
        )
