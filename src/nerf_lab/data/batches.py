"""What the model trains and is scored on: batches of random training rays, and whole views."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from nerf_lab.data.blender import SceneSplit
from nerf_lab.errors import DataError
from nerf_lab.nerf.rays import camera_rays, image_rays

RAY_SAMPLING = ("all_images", "one_image")
Batch = dict[str, torch.Tensor]


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

    Where the split has `masks`, rays are drawn among the pixels that count only: candidates
    are drawn as above and those on masked pixels dropped, until the batch is full. A view
    whose window (the whole image, or its centre while cropping) holds no pixel that counts
    is never drawn; `DataError` when no view has one.
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
        # Views with a pixel that counts, in the whole image and in the centre crop, and the
        # share of each view's window that counts (how many candidates a batch needs).
        self.drawable, self.counted_share = None, None
        if split.masks is not None:
            shares = {}
            for cropped in (False, True):
                window = self._window(split.masks, cropped)
                (top, bottom), (left, right) = self._crop_ranges(*split.masks.shape[1:]) if cropped else ((0, window.shape[1]), (0, window.shape[2]))
                shares[cropped] = window.flatten(1).sum(1).double().cpu() / ((bottom - top) * (right - left))
            self.counted_share = shares
            self.drawable = {cropped: torch.nonzero(share > 0).flatten().to(split.masks.device) for cropped, share in shares.items()}
        if self.drawable is not None and len(self.drawable[False]) == 0:
            raise DataError("every pixel of the training views is masked out (frames[i].mask_path): nothing to train on")

    def _window(self, masks: torch.Tensor, cropped: bool) -> torch.Tensor:
        """`masks` outside the drawing window (the centre crop when `cropped`) set False."""
        if not cropped:
            return masks
        (top, bottom), (left, right) = self._crop_ranges(*masks.shape[1:])
        window = torch.zeros_like(masks)
        window[:, top:bottom, left:right] = masks[:, top:bottom, left:right]
        return window

    def _crop_ranges(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        half_h = max(1, round(0.5 * self.precrop_frac * height))
        half_w = max(1, round(0.5 * self.precrop_frac * width))
        return (height // 2 - half_h, height // 2 + half_h), (width // 2 - half_w, width // 2 + half_w)

    def __len__(self) -> int:
        """The batches of the whole run, counted from step 0, although a resumed stream yields
        only those from `first_step` on: Lightning restores how many batches of its one epoch
        were done and ends the epoch at this length. (Counted from `first_step`, the resumed
        epoch would end `first_step` batches early and the next epoch would replay this stream's
        batches from `first_step`, so a resumed run would no longer match an uninterrupted one.)"""
        if self.last_step is None:
            raise TypeError("an endless stream of batches has no length")
        return self.last_step

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator(device=self.split.images.device)
        step = self.first_step
        while self.last_step is None or step < self.last_step:
            seed = np.random.SeedSequence([self.seed, self.rank, step]).generate_state(1)[0]
            generator.manual_seed(int(seed))
            yield self.batch(step, generator)
            step += 1

    def batch(self, step: int, generator: torch.Generator) -> Batch:
        images = self.split.images
        n_views, height, width = images.shape[:3]
        device = images.device
        cropped = step < self.precrop_steps
        row_range, col_range = self._crop_ranges(height, width) if cropped else ((0, height), (0, width))

        def draw(low: int, high: int, size: int) -> torch.Tensor:
            return torch.randint(low, high, (size,), generator=generator, device=device)

        n = self.batch_rays
        if self.drawable is None:
            views = draw(0, n_views, 1).expand(n) if self.ray_sampling == "one_image" else draw(0, n_views, n)
            rows, cols = draw(*row_range, n), draw(*col_range, n)
        else:
            views, rows, cols = self._draw_counted(n, draw, row_range, col_range, cropped)
        rays = camera_rays(self.split.poses[views], rows, cols, self.intrinsics[views])
        return {"origins": rays.origins, "directions": rays.directions, "rgb": images[views, rows, cols]}

    def _draw_counted(
        self, n: int, draw: Callable[[int, int, int], torch.Tensor], row_range: tuple[int, int], col_range: tuple[int, int], cropped: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`n` (view, row, column) among the pixels that count (`split.masks`), by rejection:
        candidates drawn uniformly in the window, those on masked pixels dropped, until `n`."""
        if not len(self.drawable[cropped]):  # the crop holds no pixel that counts: the whole images
            cropped = False
            row_range, col_range = (0, self.split.images.shape[1]), (0, self.split.images.shape[2])
        drawable, shares = self.drawable[cropped], self.counted_share[cropped]
        one_view = drawable[draw(0, len(drawable), 1)] if self.ray_sampling == "one_image" else None
        # The share of candidates that land on a pixel that counts: a round draws enough for the
        # batch at that rate (at least twice what is missing), so a sparse mask takes few rounds.
        share = float(shares[int(one_view)] if one_view is not None else shares[drawable.cpu()].mean())
        kept: list[torch.Tensor] = []
        found = 0
        while found < n:
            size = min(2 * math.ceil((n - found) / share) + 64, 1 << 24)
            views = one_view.expand(size) if one_view is not None else drawable[draw(0, len(drawable), size)]
            rows, cols = draw(*row_range, size), draw(*col_range, size)
            counts = self.split.masks[views, rows, cols]
            kept.append(torch.stack([views, rows, cols])[:, counts])
            found += int(counts.sum())
        views, rows, cols = torch.cat(kept, dim=1)[:, :n]
        return views, rows, cols


class ViewDataset(Dataset):
    """Whole views: every pixel's ray and colour, shaped (height, width, 3)."""

    def __init__(self, split: SceneSplit, view_indices: list[int]) -> None:
        self.split = split
        self.view_indices = view_indices

    def __len__(self) -> int:
        return len(self.view_indices)

    def __getitem__(self, item: int) -> Batch:
        """The view's rays and colours, (height, width, 3), `height` its own; with "mask",
        (height, width) bool, where some of its pixels do not count (`SceneSplit.masks`)."""
        view = self.view_indices[item]
        split = self.split
        height = split.view_height(view)
        rays = image_rays(split.poses[view], split.focal, height, split.width, split.intrinsics[view])
        batch = {
            "origins": rays.origins,
            "directions": rays.directions,
            "rgb": split.images[view, :height],
            "view": torch.tensor(view),
        }
        if split.masks is not None and not bool(split.masks[view, :height].all()):
            batch["mask"] = split.masks[view, :height]
        return batch
