"""LightningDataModules for Blender-layout scenes: random rays to train on, whole views to
validate and test on."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from nerf_lab.data.blender import SceneSplit, load_split, read_split_index
from nerf_lab.data.builtin_scene import builtin_scene_dir, ensure_builtin_scene
from nerf_lab.errors import ConfigError, DataError
from nerf_lab.nerf.rays import image_rays, pixel_rays

RAY_SAMPLING = ("all_images", "one_image")
Batch = dict[str, torch.Tensor]


def default_cache_dir() -> Path:
    return Path(os.environ.get("NERF_LAB_CACHE", Path.home() / ".cache" / "nerf_lab"))


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
        self.batch_rays = batch_rays
        self.ray_sampling = ray_sampling
        self.precrop_steps = precrop_steps
        self.precrop_frac = precrop_frac
        self.seed = seed
        self.rank = rank
        self.first_step = first_step
        self.last_step = last_step

    def __len__(self) -> int:
        if self.last_step is None:
            raise TypeError("an endless stream of batches has no length")
        return max(0, self.last_step - self.first_step)

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
        row_range, col_range = (0, height), (0, width)
        if step < self.precrop_steps:
            half_h = max(1, round(0.5 * self.precrop_frac * height))
            half_w = max(1, round(0.5 * self.precrop_frac * width))
            row_range = (height // 2 - half_h, height // 2 + half_h)
            col_range = (width // 2 - half_w, width // 2 + half_w)

        def draw(low: int, high: int, size: int) -> torch.Tensor:
            return torch.randint(low, high, (size,), generator=generator, device=device)

        n = self.batch_rays
        views = draw(0, n_views, 1).expand(n) if self.ray_sampling == "one_image" else draw(0, n_views, n)
        rows, cols = draw(*row_range, n), draw(*col_range, n)
        rays = pixel_rays(self.split.poses[views], rows, cols, self.split.focal, height, width)
        return {"origins": rays.origins, "directions": rays.directions, "rgb": images[views, rows, cols]}


class ViewDataset(Dataset):
    """Whole views: every pixel's ray and colour, shaped (height, width, 3)."""

    def __init__(self, split: SceneSplit, view_indices: list[int]) -> None:
        self.split = split
        self.view_indices = view_indices

    def __len__(self) -> int:
        return len(self.view_indices)

    def __getitem__(self, item: int) -> Batch:
        view = self.view_indices[item]
        rays = image_rays(self.split.poses[view], self.split.focal, self.split.height, self.split.width)
        return {
            "origins": rays.origins,
            "directions": rays.directions,
            "rgb": self.split.images[view],
            "view": torch.tensor(view),
        }


def _loader(dataset: Dataset) -> DataLoader:
    # A generator of its own: creating a DataLoader's iterator draws a seed from its generator,
    # and drawing it from the global one would shift the sampling noise of a resumed run.
    return DataLoader(dataset, batch_size=None, num_workers=0, generator=torch.Generator())


def _evenly_spaced(count: int | None, available: int) -> list[int]:
    if count is None or count >= available:
        return list(range(available))
    return np.linspace(0, available - 1, count).round().astype(int).tolist()


class BlenderDataModule(pl.LightningDataModule):
    """A scene in the Blender layout (`nerf_lab.data.blender`) at any resolution.

    `resolution` is the image width in pixels (the study uses 100 and 800); `val_views` views
    of the val split are rendered at each validation, evenly spaced (the first is the one shown
    in TensorBoard); `test_views` views of the test split (all when None) are evaluated at the
    end. Decoded images are cached under `cache_dir`. The values are checked, with their
    config keys named, by `nerf_lab.training.config.validate_config`.
    """

    def __init__(
        self,
        scene_dir: str | None,
        resolution: int = 100,
        white_background: bool = True,
        near: float = 2.0,
        far: float = 6.0,
        batch_rays: int = 1024,
        ray_sampling: str = "all_images",
        precrop_steps: int = 0,
        precrop_frac: float = 0.5,
        val_views: int = 1,
        test_views: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        scene_box: Sequence[Any] | None = None,
    ) -> None:
        super().__init__()
        self.scene_box = scene_box  # the box the scene lies in (for sampling.clip_to_box and the grid)
        self.scene_dir = scene_dir
        self.resolution = resolution
        self.white_background = white_background
        self.near, self.far = near, far
        self.batch_rays = batch_rays
        self.ray_sampling = ray_sampling
        self.precrop_steps, self.precrop_frac = precrop_steps, precrop_frac
        self.val_views, self.test_views = val_views, test_views
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.seed = seed
        self.splits: dict[str, SceneSplit] = {}

    @property
    def background(self) -> tuple[float, float, float]:
        return (1.0, 1.0, 1.0) if self.white_background else (0.0, 0.0, 0.0)

    def load(self, split: str) -> SceneSplit:
        """One split, decoded (or read from the cache), on the CPU."""
        return load_split(self.scene_dir, split, self.resolution, self.background, self.cache_dir / "images")

    def check_scene(self) -> None:
        """Check every split's JSON, that its images exist, and that `resolution` fits them,
        without decoding any image: bad data fails before a run starts."""
        for split in ("train", "val", "test"):
            index = read_split_index(Path(self.scene_dir), split)
        width = iio.improps(index.frames[0].path).shape[1]
        if self.resolution > width:
            raise DataError(
                f"data.resolution={self.resolution} is larger than the source images "
                f"({index.frames[0].path} is {width} wide): expected at most {width}"
            )

    def cameras(self, split: str) -> tuple[torch.Tensor, float]:
        """A split's camera-to-world poses and horizontal field of view, from its JSON alone."""
        index = read_split_index(Path(self.scene_dir), split)
        return torch.tensor([frame.pose for frame in index.frames]), index.camera_angle_x

    def prepare_data(self) -> None:
        # Runs once per machine: fills the cache, so every rank's setup() only reads it.
        for split in ("train", "val", "test"):
            self.load(split)

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}[stage]
        for split in wanted:
            if split not in self.splits:
                loaded = self.load(split)
                self.splits[split] = SceneSplit(
                    loaded.images.to(device), loaded.poses.to(device), loaded.focal, loaded.file_paths
                )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        batches = RandomRayBatches(
            self.splits["train"],
            self.batch_rays,
            self.ray_sampling,
            self.precrop_steps,
            self.precrop_frac,
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            first_step=trainer.global_step if trainer is not None else 0,
            last_step=trainer.max_steps if trainer is not None and trainer.max_steps > 0 else None,
        )
        # batch_size=None: the dataset yields whole batches. No workers: the batches are
        # gathered on the device from tensors already there; a worker could only copy them.
        return _loader(batches)

    def val_dataloader(self) -> DataLoader:
        split = self.splits["val"]
        return _loader(ViewDataset(split, self._this_ranks_share(_evenly_spaced(self.val_views, len(split)))))

    def test_dataloader(self) -> DataLoader:
        split = self.splits["test"]
        return _loader(ViewDataset(split, self._this_ranks_share(list(range(len(split)))[: self.test_views])))

    def _this_ranks_share(self, views: list[int]) -> list[int]:
        """With several ranks, each renders every world_size-th view: each view exactly once
        (a DistributedSampler would pad with repeats), and the metrics, reduced over ranks by
        torchmetrics, average over the views themselves. Rank 0 always has the first view."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return views
        return views[trainer.global_rank :: trainer.world_size]


class BuiltinSceneDataModule(BlenderDataModule):
    """The built-in scene (`nerf_lab.data.builtin_scene`), rendered on first use at
    `resolution` px into the cache folder: the default data set, needing no download."""

    def __init__(
        self, scene_dir: str | None = None, resolution: int = 100, cache_dir: str | None = None, **kwargs: Any
    ) -> None:
        if scene_dir is not None:
            raise ConfigError(
                f"data.scene_dir={scene_dir!r} is set, but data=builtin renders its own scene: "
                "expected data=blender to read a scene folder"
            )
        super().__init__(scene_dir=None, resolution=resolution, cache_dir=cache_dir, **kwargs)
        self.scene_dir = str(builtin_scene_dir(self.cache_dir, resolution))

    def check_scene(self) -> None:
        pass  # rendered on first use, always whole

    def cameras(self, split: str) -> tuple[torch.Tensor, float]:
        ensure_builtin_scene(self.cache_dir, self.resolution)
        return super().cameras(split)

    def load(self, split: str) -> SceneSplit:
        ensure_builtin_scene(self.cache_dir, self.resolution)
        return super().load(split)

