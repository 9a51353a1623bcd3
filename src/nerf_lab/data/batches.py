"""What the model trains and is scored on: batches of random training rays, and whole views."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from nerf_lab.data.blender import SceneSplit
from nerf_lab.errors import DataError
from nerf_lab.nerf.rays import RayBundle, camera_rays, image_rays


@dataclass
class RayBatch:
    """A training batch: `rays` random rays (camera-to-world, OpenGL convention) and the
    colours of their pixels in [0, 1]."""

    origins: Float[Tensor, "rays 3"]
    directions: Float[Tensor, "rays 3"]
    rgb: Float[Tensor, "rays 3"]

    @property
    def rays(self) -> RayBundle:
        return RayBundle(self.origins, self.directions)


@dataclass
class ViewBatch:
    """A whole view: the ray and colour of each of its pixels, shaped (height, width), its index
    `view` in the split, and `mask`, the pixels that count (None: all of them)."""

    origins: Float[Tensor, "height width 3"]
    directions: Float[Tensor, "height width 3"]
    rgb: Float[Tensor, "height width 3"]
    view: int
    mask: Bool[Tensor, "height width"] | None = None

    @property
    def rays(self) -> RayBundle:
        return RayBundle(self.origins, self.directions)


RAY_SAMPLING = ("all_images", "one_image")
# With masks, the share of a window's pixels that count below which rays are drawn from their
# indices rather than by rejection (at most 1 / DENSE candidates a ray).
DENSE = 0.05


class RandomRayBatches(IterableDataset):
    """Batches of `batch_rays` random training rays with their pixel colours.

    Drawn where the images are (the model's device), so a step moves no data between host and
    device. The draw of step k depends only on (seed, rank, k): data-parallel ranks see
    different rays, and a run resumed at step k draws exactly the rays it would have drawn.

    `ray_sampling`: "all_images" draws each ray from any training view (default);
    "one_image" draws a whole batch from one random view, as the authors' code does.
    During the first `precrop_steps` steps, pixels come from the central `precrop_frac` of
    each image only: the authors' guard against the white local minimum, where a model
    that sees mostly white background learns to predict nothing.

    Where the split has `masks`, rays are drawn uniformly among the pixels that count in the
    window (each image, or its own centre while cropping; where no centre holds one, the whole
    images): by rejection, or from their indices where they are few (`DENSE`). A view whose
    window holds none is never drawn; `DataError` when no training pixel counts.
    """

    def __init__(
        self,
        split: SceneSplit,
        batch_rays: int,
        ray_sampling: str = "all_images",
        precrop_steps: int = 0,
        precrop_frac: float = 0.5,
        seed: int = 0,
        rank: int = 0,
        first_step: int = 0,
        last_step: int | None = None,
    ) -> None:
        self.split = split
        # Rounded to float32 here as `camera_rays` would round them, and kept where the images are.
        self.intrinsics = split.intrinsics.float().to(split.images.device)
        self.batch_rays = batch_rays
        self.ray_sampling = ray_sampling
        self.precrop_steps = precrop_steps
        self.precrop_frac = precrop_frac
        self.seed = seed
        self.rank = rank
        self.first_step = first_step
        self.last_step = last_step
        # With masks: the pixels each view may give, whole and while cropping (its own centre),
        # how many a view has, and (for sparse masks) their indices, made when first needed.
        self.windows: dict[bool, torch.Tensor] | None = None
        if split.masks is not None:
            if not bool(split.masks.any()):
                raise DataError("every pixel of the training views is masked out (frames[i].mask_path): nothing to train on")
            crops = self._centre_crops(split.masks)
            self.windows = {False: split.masks, True: crops if bool(crops.any()) else split.masks}
            self.counts = {cropped: window.flatten(1).sum(1).cpu() for cropped, window in self.windows.items()}
            self._indices: dict[bool, torch.Tensor] = {}

    def _crop_ranges(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The rows and columns of the central `precrop_frac` of an image `height` × `width`."""
        half_h = max(1, round(0.5 * self.precrop_frac * height))
        half_w = max(1, round(0.5 * self.precrop_frac * width))
        return (max(0, height // 2 - half_h), min(height, height // 2 + half_h)), (max(0, width // 2 - half_w), min(width, width // 2 + half_w))

    def _centre_crops(self, masks: torch.Tensor) -> torch.Tensor:
        """`masks` with every pixel outside its view's central `precrop_frac` set False (each
        view's centre at its own height)."""
        crops = torch.zeros_like(masks)
        for view in range(masks.shape[0]):
            (top, bottom), (left, right) = self._crop_ranges(self.split.view_height(view), masks.shape[2])
            crops[view, top:bottom, left:right] = masks[view, top:bottom, left:right]
        return crops

    def __len__(self) -> int:
        """The batches of the whole run, counted from step 0, although a resumed stream yields
        only those from `first_step` on: Lightning restores how many batches of its one epoch
        were done and ends the epoch at this length. (Counted from `first_step`, the resumed
        epoch would end `first_step` batches early and the next epoch would replay this stream's
        batches from `first_step`, so a resumed run would no longer match an uninterrupted one.)"""
        if self.last_step is None:
            raise TypeError("an endless stream of batches has no length")
        return self.last_step

    def __iter__(self) -> Iterator[RayBatch]:
        generator = torch.Generator(device=self.split.images.device)
        step = self.first_step
        while self.last_step is None or step < self.last_step:
            seed = np.random.SeedSequence([self.seed, self.rank, step]).generate_state(1)[0]
            generator.manual_seed(int(seed))
            yield self.batch(step, generator)
            step += 1

    def batch(self, step: int, generator: torch.Generator) -> RayBatch:
        images = self.split.images
        n_views, height, width = images.shape[:3]
        device = images.device
        cropped = step < self.precrop_steps
        row_range, col_range = self._crop_ranges(height, width) if cropped else ((0, height), (0, width))

        def draw(low: int, high: int, size: int) -> torch.Tensor:
            return torch.randint(low, high, (size,), generator=generator, device=device)

        n = self.batch_rays
        if self.windows is None:
            views = draw(0, n_views, 1).expand(n) if self.ray_sampling == "one_image" else draw(0, n_views, n)
            rows, cols = draw(*row_range, n), draw(*col_range, n)
        else:
            views, rows, cols = self._draw_counted(n, draw, cropped)
        rays = camera_rays(self.split.poses[views], rows, cols, self.intrinsics[views])
        return RayBatch(rays.origins, rays.directions, images[views, rows, cols])

    def _draw_counted(
        self, n: int, draw: Callable[[int, int, int], torch.Tensor], cropped: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n` (view, row, column) uniformly among the pixels that count in the drawing window
        (`windows[cropped]`): by rejection (candidates drawn over the whole images, those
        outside the window dropped, until `n`) where the window is at least `DENSE` of the
        images; else from the window's pixel indices."""
        window, counts = self.windows[cropped], self.counts[cropped]
        _, height, width = window.shape
        if self.ray_sampling == "one_image":
            drawable = torch.nonzero(counts).flatten()
            view = int(drawable[int(draw(0, len(drawable), 1))])
            if counts[view] < DENSE * height * width:  # few pixels: drawn from their indices
                pixels = torch.nonzero(window[view].flatten()).flatten()
                chosen = pixels[draw(0, len(pixels), n)]
                return torch.full_like(chosen, view), chosen // width, chosen % width
            views, share = torch.full((1,), view, device=window.device), float(counts[view]) / (height * width)
        else:
            share = float(counts.sum()) / counts.numel() / (height * width)
            if share < DENSE:
                if cropped not in self._indices:
                    self._indices[cropped] = torch.nonzero(window.flatten()).flatten()
                chosen = self._indices[cropped][draw(0, len(self._indices[cropped]), n)]
                return chosen // (height * width), chosen // width % height, chosen % width
            views = None
        kept: list[torch.Tensor] = []
        found = 0
        while found < n:
            size = 2 * math.ceil((n - found) / share) + 64
            candidates = views.expand(size) if views is not None else draw(0, window.shape[0], size)
            rows, cols = draw(0, height, size), draw(0, width, size)
            inside = window[candidates, rows, cols]
            kept.append(torch.stack([candidates, rows, cols])[:, inside])
            found += int(inside.sum())
        views, rows, cols = torch.cat(kept, dim=1)[:, :n]
        return views, rows, cols


class ViewDataset(Dataset):
    """Whole views: every pixel's ray and colour, shaped (height, width, 3)."""

    def __init__(self, split: SceneSplit, view_indices: list[int]) -> None:
        self.split = split
        self.view_indices = view_indices

    def __len__(self) -> int:
        return len(self.view_indices)

    def __getitem__(self, item: int) -> ViewBatch:
        """The view at its own height, with its mask where some of its pixels do not count
        (`SceneSplit.masks`)."""
        view = self.view_indices[item]
        split = self.split
        height = split.view_height(view)
        rays = image_rays(split.poses[view], split.focal, height, split.width, split.intrinsics[view])
        counted = None if split.masks is None else split.masks[view, :height]
        mask = None if counted is None or bool(counted.all()) else counted
        return ViewBatch(rays.origins, rays.directions, split.images[view, :height], view, mask)
