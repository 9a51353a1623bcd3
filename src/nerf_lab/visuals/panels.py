"""Images for people: depth maps in colour, and labelled panels of a view.

A panel is a grid of tiles, each under its label, scaled up by whole pixels (nearest
neighbour: a 100 px render stays sharp, each pixel a block) to at least `MIN_TILE` px, with a
colour bar under the depth and opacity tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# Smallest tile side in pixels: a 100 px view is shown 3× (300 px), a 32 px one 8×.
MIN_TILE = 256
# Sized to stay legible where TensorBoard shrinks a panel to its card (about 340 px wide).
LABEL_HEIGHT = 30
BAR_HEIGHT = 38  # the colour bar (12 px) and its numbers


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


@dataclass
class Tile:
    """An image under a label, and optionally a colour bar: (colours from left to right,
    the number at its left end, the number at its right end)."""

    label: str
    image: np.ndarray  # (height, width, 3) uint8
    bar: tuple[np.ndarray, str, str] | None = None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font (FreeType)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def labelled_grid(tiles: list[Tile], columns: int) -> np.ndarray:
    """Tiles of one size in rows of `columns`, each under its label, as 8-bit RGB."""
    height, width = tiles[0].image.shape[:2]
    scale = max(1, math.ceil(MIN_TILE / max(height, width)))
    tile_w, tile_h = width * scale, height * scale
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    row_heights = [LABEL_HEIGHT + tile_h + (BAR_HEIGHT if any(t.bar for t in row) else 0) for row in rows]
    gap = 4
    canvas = Image.new("RGB", (columns * tile_w + (columns - 1) * gap + 2, sum(row_heights) + 1), "white")
    draw, font, small = ImageDraw.Draw(canvas), _font(22), _font(18)
    top = 0
    for row, row_height in zip(rows, row_heights):
        for column, tile in enumerate(row):
            left = 1 + column * (tile_w + gap)
            draw.text((left + 2, top + 2), tile.label, fill="black", font=font)
            scaled = Image.fromarray(tile.image).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(scaled, (left, top + LABEL_HEIGHT))
            # A hairline frame: a white background would otherwise merge with the page.
            draw.rectangle((left - 1, top + LABEL_HEIGHT - 1, left + tile_w, top + LABEL_HEIGHT + tile_h), outline=(200, 200, 200))
            if tile.bar is not None:
                colours, low, high = tile.bar
                bar_top = top + LABEL_HEIGHT + tile_h + 4
                strip = Image.fromarray(colours[None]).resize((tile_w, 12), Image.NEAREST)
                canvas.paste(strip, (left, bar_top))
                draw.text((left, bar_top + 13), low, fill="black", font=small)
                draw.text((left + tile_w - draw.textlength(high, font=small), bar_top + 13), high, fill="black", font=small)
        top += row_height
    return np.asarray(canvas)


def _bar(colours: np.ndarray) -> np.ndarray:
    return (np.clip(colours[:, :3], 0, 1) * 255 + 0.5).astype(np.uint8)


def depth_tile(depth: Float[Tensor, "height width"], opacity: Float[Tensor, "height width"], near: float, far: float) -> Tile:
    colours = _bar(colormaps["turbo"](np.linspace(0, 1, 256)))
    image = to_uint8(colourise_depth(depth.float(), opacity.float(), near, far))
    return Tile("depth (white: empty)", image, (colours, f"{near:g} (near)", f"{far:g} (far)"))


def opacity_tile(opacity: Float[Tensor, "height width"]) -> Tile:
    grey = to_uint8(opacity.float().clamp(0, 1)[..., None].expand(*opacity.shape, 3))
    return Tile("opacity", grey, (_bar(np.linspace(0, 1, 256)[:, None].repeat(3, axis=1)), "0 (empty)", "1 (solid)"))


def view_panel(
    target: Float[Tensor, "height width 3"],
    prediction: Float[Tensor, "height width 3"],
    depth: Float[Tensor, "height width"],
    opacity: Float[Tensor, "height width"],
    near: float,
    far: float,
    title: str = "prediction",
) -> np.ndarray:
    """Ground truth, prediction (labelled `title`, e.g. with its PSNR) / depth with its colour
    bar, opacity: the panel TensorBoard shows for a validation or test view, 8-bit RGB."""
    return labelled_grid(
        [Tile("ground truth", to_uint8(target)), Tile(title, to_uint8(prediction)), depth_tile(depth, opacity, near, far), opacity_tile(opacity)],
        columns=2,
    )


def comparison_strip(
    prediction: Float[Tensor, "height width 3"],
    target: Float[Tensor, "height width 3"],
    depth: Float[Tensor, "height width"],
    opacity: Float[Tensor, "height width"],
    near: float,
    far: float,
    title: str = "prediction",
) -> np.ndarray:
    """Prediction | ground truth | depth in one labelled row (`nerf_lab.eval`'s view files)."""
    return labelled_grid([Tile(title, to_uint8(prediction)), Tile("ground truth", to_uint8(target)), depth_tile(depth, opacity, near, far)], columns=3)


def side_by_side(*images: Float[Tensor, "height width 3"]) -> np.ndarray:
    """Images of one height, left to right, as 8-bit RGB."""
    return to_uint8(torch.cat([image.float().clamp(0, 1).cpu() for image in images], dim=1))


def to_uint8(image: Tensor | np.ndarray) -> np.ndarray:
    array = image.detach().float().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image, dtype=np.float32)
    return (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
