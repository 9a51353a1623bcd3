"""The background a scene's images show where nothing is, and the renderer's.

Images with alpha are composited onto the renderer's background colour (white or black,
`data.white_background`, or any colour, `data.background_color`); images without alpha keep
the background they were photographed or saved with. Where the two differ, the network learns
to paint empty space with density, so a run refuses it before it starts (`check_background`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nerf_lab.data.images import DEPTHS, decode
from nerf_lab.errors import DataError
from nerf_lab.nerf.parameters import is_number

# A border whose every channel is within this of 0 (or 1) is a black (or white) background,
# and one whose channels spread by no more than this is of one colour.
BLANK_BORDER = 0.05
# A border of one colour further than this from the renderer's background, in any channel, is
# refused (a near-white backdrop at 0.92 under white passes; grey at 0.5 does not).
BACKGROUND_MISMATCH = 0.1


def background_colour(white_background: bool, background_color: Sequence[Any] | None = None) -> tuple[float, float, float]:
    """The colour images with alpha are composited onto, and the renderer's (`data.*`), RGB in
    [0, 1]: `background_color` where given, else white or black (`white_background`)."""
    if background_color is not None:
        r, g, b = (float(c) for c in background_color)
        return (r, g, b)
    return (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)


def is_colour(value: Any) -> bool:
    """Whether `value` is [r, g, b], each a number in [0, 1]."""
    return isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3 and all(is_number(c) and 0 <= c <= 1 for c in value)


def border_colour(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean colour, in [0, 1] (3,), of the one-pixel border of the images at `paths`
    (decoded), and each channel's standard deviation over those pixels (3,); None when any of
    them has alpha (its background is composited, not photographed)."""
    rings = []
    for path in paths:
        image = decode(path)
        if image.shape[2] == 4:
            return None
        pixels = image.astype(np.float64) / DEPTHS[image.dtype]
        rings += [pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]]
    if not rings:
        return None
    pixels = np.concatenate(rings)
    return pixels.mean(0), pixels.std(0)


def check_background(paths: Sequence[Path], white_background: bool, background_color: Sequence[float] | None) -> None:
    """From the one-pixel border of the images at `paths` (decoded): a border of one colour
    (every channel's spread within `BLANK_BORDER`) more than `BACKGROUND_MISMATCH` from the
    renderer's background (`background_colour`) is a `DataError` in one line naming the key
    that fixes it (`data.white_background` for black or white, else `data.background_color`
    with the measured colour). Nothing for images with alpha or a photographed background (a
    border of many colours)."""
    border = border_colour(paths)
    if border is None:
        return
    measured, spread = border
    renderer = np.array(background_colour(white_background, background_color))
    if bool((spread > BLANK_BORDER).any()) or bool((np.abs(measured - renderer) <= BACKGROUND_MISMATCH).all()):
        return
    black, white = bool((measured < BLANK_BORDER).all()), bool((measured > 1 - BLANK_BORDER).all())
    if black or white:
        name, fix = ("black" if black else "white"), f"data.white_background={str(white).lower()}"
    else:
        name, fix = "uniform", "data.background_color=[" + ",".join(f"{x:.2f}" for x in measured) + "]"  # one shell word
    if background_color is not None:
        setting = "data.background_color=[" + ",".join(f"{x:g}" for x in background_color) + "]"
        fix += " and data.background_color=null" if black or white else ""
    else:
        setting = f"data.white_background={str(white_background).lower()}"
    raise DataError(
        f"{setting}, but the training images have no alpha and a {name} background (mean border colour "
        f"{', '.join(f'{x:.2f}' for x in measured)} in {paths[0]} and the next {len(paths) - 1}): "
        f"set {fix} so that the renderer's background is the images'"
    )
