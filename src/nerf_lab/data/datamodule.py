"""LightningDataModules for Blender-layout scenes: random rays to train on, whole views to
validate and test on (the batches themselves: `nerf_lab.data.batches`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nerf_lab.data.batches import RandomRayBatches, ViewDataset
from nerf_lab.data.blender import SceneSplit, check_images, load_split, read_split_index
from nerf_lab.data.builtin_scene import builtin_scene_dir, ensure_builtin_scene
from nerf_lab.errors import ConfigError, DataError


# The splits each stage of Lightning's (`TrainerFn`) reads.
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("NERF_LAB_CACHE", Path.home() / ".cache" / "nerf_lab"))


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
        """Check every split's JSON and poses, every image's PNG header, and that `resolution`
        fits them, without decoding any image: bad data fails before a run starts."""
        for split in ("train", "val", "test"):
            index = read_split_index(Path(self.scene_dir), split)
            check_images(index, self.white_background)
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
        # Runs once per machine: fills the cache, so every rank's setup() only reads it; only
        # the splits this stage uses (testing never decodes the train split).
        stage = self.trainer.state.fn if self.trainer is not None else None
        for split in STAGE_SPLITS.get(str(stage.value) if stage is not None else "", ("train", "val", "test")):
            self.load(split)

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        wanted = STAGE_SPLITS[stage]
        for split in wanted:
            if split not in self.splits:
                loaded = self.load(split)
                self.splits[split] = SceneSplit(
                    loaded.images.to(device), loaded.poses.to(device), loaded.focal, loaded.file_paths
                )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # Batches, not optimiser steps: with accumulate_grad_batches = k a step takes k batches,
        # and a resumed run goes on from the batch after the last one it used.
        per_step = trainer.accumulate_grad_batches if trainer is not None else 1
        batches = RandomRayBatches(
            self.splits["train"],
            self.batch_rays,
            self.ray_sampling,
            self.precrop_steps * per_step,
            self.precrop_frac,
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            first_step=trainer.global_step * per_step if trainer is not None else 0,
            last_step=trainer.max_steps * per_step if trainer is not None and trainer.max_steps > 0 else None,
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

