"""Images for people: depth maps in colour and side-by-side panels."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from matplotlib import colormaps
from torch import Tensor


def colourise_depth(
    depth: Float[Tensor, "height width"],
    opacity: Float[Tensor, "height width"],
    near: float,
    far: float,
) -> Float[Tensor, "height width 3"]:
    """Depth as colour (turbo: near is blue, far is red) over white where the ray sees nothing.

    The scale is fixed by the scene's [near, far] rather than stretched to each image, so depth
    maps from different steps and runs compare directly.
    """
    scaled = ((depth - near) / (far - near)).clamp(0, 1).cpu().numpy()
    coloured = torch.from_numpy(colormaps["turbo"](scaled)[..., :3]).float()
    weight = opacity.clamp(0, 1).cpu()[..., None]
    return weight * coloured + (1 - weight)


def validation_panel(
    target: Float[Tensor, "height width 3"],
    prediction: Float[Tensor, "height width 3"],
    depth: Float[Tensor, "height width"],
    opacity: Float[Tensor, "height width"],
    near: float,
    far: float,
) -> np.ndarray:
    """Ground truth | prediction | depth, side by side, as 8-bit RGB."""
    return side_by_side(target, prediction, colourise_depth(depth.float(), opacity.float(), near, far))


def side_by_side(*images: Float[Tensor, "height width 3"]) -> np.ndarray:
    """Images of one height, left to right, as 8-bit RGB."""
    return to_uint8(torch.cat([image.float().clamp(0, 1).cpu() for image in images], dim=1))


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    array = image.detach().float().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image, dtype=np.float32)
    return (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
