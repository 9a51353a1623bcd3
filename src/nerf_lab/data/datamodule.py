"""LightningDataModules for Blender-layout scenes: random rays to train on, whole views to
validate and test on (the batches themselves: `nerf_lab.data.batches`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nerf_lab.data.backgrounds import background_colour, check_background, is_colour
from nerf_lab.data.batches import RAY_SAMPLING, RandomRayBatches, ViewDataset
from nerf_lab.data.blender import SceneSplit, check_images, load_split, read_split_index
from nerf_lab.data.builtin_scene import builtin_scene_dir, ensure_builtin_scene
from nerf_lab.data.geometry import SceneTransform, check_geometry, derived_bounds, normalizing_transform
from nerf_lab.data.images import image_size, output_height
from nerf_lab.errors import ConfigError, DataError
from nerf_lab.nerf.parameters import is_box, is_int, is_number, require


# The splits each stage of Lightning's (`TrainerFn`) reads.
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("NERF_LAB_CACHE", Path.home() / ".cache" / "nerf_lab"))


def _loader(dataset: Dataset) -> DataLoader:
    # A generator of its own: creating a DataLoader's iterator draws a seed from its generator,
    # and drawing it from the global one would shift the sampling noise of a resumed run.
    return DataLoader(dataset, batch_size=None, num_workers=0, generator=torch.Generator())


def _is_transform(value: Any) -> bool:
    return (
        isinstance(value, dict) and set(value) == {"centre", "scale"}
        and isinstance(value["centre"], list) and len(value["centre"]) == 3 and all(is_number(x) for x in value["centre"])
        and is_number(value["scale"]) and value["scale"] > 0
    )


# Each parameter of the data modules: its check and what it accepts (`require`: a
# `ParameterError`, which the config layer reports under the user's key, `data.<parameter>`).
PARAMETER_CHECKS: list[tuple[str, Any, str]] = [
    ("scene_box", lambda v: v is None or is_box(v), "[[x, y, z]_min, [x, y, z]_max] with min < max, or null"),
    # SSIM's Gaussian window (torchmetrics: 11 pixels, σ 1.5, as Wang et al. 2004) must fit in a view.
    ("resolution", lambda v: is_int(v) and v >= 11, "a positive integer of at least 11 (image width in pixels: SSIM's 11-pixel window must fit)"),
    ("batch_rays", lambda v: is_int(v) and v >= 1, "a positive integer (rays a training batch)"),
    ("ray_sampling", lambda v: v in RAY_SAMPLING, f"one of {', '.join(RAY_SAMPLING)}"),
    ("white_background", lambda v: isinstance(v, bool), "true or false"),
    ("background_color", lambda v: v is None or is_colour(v), "[r, g, b], each in [0, 1], or null (data.white_background's)"),
    ("precrop_steps", lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    ("precrop_frac", lambda v: is_number(v) and 0 < v <= 1, "a fraction in (0, 1]"),
    ("train_views", lambda v: v is None or (is_int(v) and v >= 1), "a positive integer (training views, evenly spaced over the split), or null for the whole train split"),
    ("val_views", lambda v: is_int(v) and v >= 1, "a positive integer"),
    ("test_views", lambda v: v is None or (is_int(v) and v >= 1), "a positive integer, or null for the whole test split"),
    # Scenes from captures (nerf_lab.data.geometry); None (a config without the key) means the default.
    ("camera_convention", lambda v: v in (None, "opengl", "opencv"), "opengl (Blender, nerfstudio, instant-ngp) or opencv (COLMAP)"),
    ("normalize", lambda v: v is None or isinstance(v, bool), "true or false"),
    ("scene_transform", lambda v: v is None or _is_transform(v), "{centre: [x, y, z], scale: s > 0} (recorded by a normalised run), or null"),
]


def _evenly_spaced(count: int | None, available: int) -> list[int]:
    if count is None or count >= available:
        return list(range(available))
    return np.linspace(0, available - 1, count).round().astype(int).tolist()


class BlenderDataModule(pl.LightningDataModule):
    """A scene in the Blender layout (`nerf_lab.data.blender`) at any resolution.

    `resolution` is the image width in pixels (the study uses 100 and 800); `train_views`
    views of the train split are trained on (all when None), evenly spaced over the split as
    the paper's Table 2 rows with 25 and 50 images take them; `val_views` views
    of the val split are rendered at each validation, evenly spaced (the first is the one shown
    in TensorBoard); `test_views` views of the test split (all when None) are evaluated at the
    end. Decoded images are cached under `cache_dir`. Each parameter is checked here
    (`PARAMETER_CHECKS`): `ParameterError` naming it and what it accepts.

    `camera_convention` is the poses' (opengl or opencv, converted when read). With
    `normalize`, the scene is centred on the training cameras' focus point and scaled so they
    sit where the Blender scenes' do, and near, far and the box are derived
    (`nerf_lab.data.geometry`); `scene_transform` ({centre, scale}), when given, is that
    transform as a run recorded it, used as it is (eval, render, resume).
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
        train_views: int | None = None,
        val_views: int = 1,
        test_views: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        scene_box: Sequence[Any] | None = None,
        camera_convention: str = "opengl",
        normalize: bool = False,
        scene_transform: Mapping[str, Any] | None = None,
        background_color: Sequence[Any] | None = None,
    ) -> None:
        super().__init__()
        values = locals()
        for parameter, check, expected in PARAMETER_CHECKS:
            require(check(values[parameter]), parameter, values[parameter], expected)
        self.camera_convention = camera_convention
        self.normalize = normalize
        self.transform = SceneTransform.from_config(scene_transform)
        self.scene_box = scene_box  # the box the scene lies in (the geometry check; the occupancy grid covers it)
        self.scene_dir = scene_dir
        self.resolution = resolution
        self.white_background = white_background
        self.background_color = None if background_color is None else tuple(float(c) for c in background_color)
        self.near, self.far = near, far
        self.batch_rays = batch_rays
        self.ray_sampling = ray_sampling
        self.precrop_steps, self.precrop_frac = precrop_steps, precrop_frac
        self.train_views, self.val_views, self.test_views = train_views, val_views, test_views
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.seed = seed
        self.splits: dict[str, SceneSplit] = {}

    @property
    def background(self) -> tuple[float, float, float]:
        """The colour images with alpha are composited onto, and the renderer's."""
        return background_colour(self.white_background, self.background_color)

    def load(self, split: str) -> SceneSplit:
        """One split, decoded (or read from the cache), on the CPU."""
        return load_split(
            self.scene_dir, split, self.resolution, self.background, self.cache_dir / "images",
            self.camera_convention, self.scene_geometry()["scene_transform"],
        )

    def scene_geometry(self) -> dict[str, Any]:
        """The values the run uses: near, far, scene_box and the scene transform (None when the
        scene is read as it is). With `normalize` and no recorded transform, they are derived
        from the training cameras (and this module's `near`, `far`, `scene_box` set to them);
        otherwise they are the configured ones."""
        if self.normalize and self.transform is None:
            self.transform = normalizing_transform(self._index("train").poses())
            self.near, self.far, self.scene_box = derived_bounds(self.transform.apply(self._index("train").poses()))
        box = None if self.scene_box is None else [[float(x) for x in corner] for corner in self.scene_box]
        return {"near": float(self.near), "far": float(self.far), "scene_box": box, "scene_transform": self.transform}

    def scene_identity(self) -> dict[str, Any]:
        """What a resume checks its scene against (`records.checkpoints.check_same_scene`): the
        folder (absolute), the training views' count and a SHA-256 digest (16 hex digits) of
        their cameras as the JSON states them (poses after the convention's conversion, and
        each frame's intrinsics), so a scene moved to another folder is the same scene and
        another capture is not; with masks (`mask_path`), their files' contents too.""" 
        import dataclasses
        import hashlib

        index = self._index("train")
        digest = hashlib.sha256(np.ascontiguousarray(index.poses(), dtype=np.float64).tobytes())
        for frame in index.frames:
            digest.update(repr(dataclasses.astuple(frame.intrinsics)).encode())
            if frame.mask is not None:  # masks change what is trained on (a scene without them: as before)
                digest.update(hashlib.sha256(frame.mask.read_bytes()).digest())
        return {"scene_dir": str(Path(self.scene_dir).resolve()), "train_views": len(index.frames), "cameras": digest.hexdigest()[:16]}

    def _index(self, split: str, images: bool = True):
        return read_split_index(Path(self.scene_dir), split, self.camera_convention, images)

    def poses(self, split: str) -> torch.Tensor:
        """A split's camera-to-world poses as the run sees them (converted, normalised), float32
        (views, 4, 4), from its JSON alone: its images need not exist."""
        poses = self._index(split, images=False).poses()
        transform = self.scene_geometry()["scene_transform"]
        return torch.from_numpy(poses if transform is None else transform.apply(poses)).float()

    def check_scene(self, splits: Sequence[str] = ("train", "val", "test")) -> None:
        """Check the JSON, poses and intrinsics of each of `splits` (a run with `test=false`
        needs no test split), every image's header, that `resolution` fits them, and the
        training cameras' geometry against near, far and the box
        (`nerf_lab.data.geometry.check_geometry`), without decoding any image: bad data
        fails before a run starts."""
        for split in splits:
            index = self._index(split)
            width = min(width for width, _ in check_images(index))
            if self.resolution > width:
                raise DataError(
                    f"data.resolution={self.resolution} is larger than the source images "
                    f"({index.frames[0].path} is {width} wide): expected at most {width}"
                )
        self.check_background()
        geometry = self.scene_geometry()
        poses = self._index("train").poses()
        if geometry["scene_transform"] is not None:
            poses = geometry["scene_transform"].apply(poses)
        check_geometry(poses, geometry["near"], geometry["far"], geometry["scene_box"], self.camera_convention, self.normalize)

    def check_background(self, views: int = 3) -> None:
        """The first `views` training images' background against the renderer's
        (`nerf_lab.data.backgrounds.check_background`: `DataError` naming the key that fixes a
        mismatch)."""
        frames = self._index("train").frames[:views]
        check_background([frame.path for frame in frames], self.white_background, self.background_color)

    def cameras(self, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """A split's camera-to-world poses (as the run sees them: converted, normalised),
        float32 (views, 4, 4); their intrinsics (f_x, f_y, c_x, c_y) at `resolution`, float64
        (views, 4); and the (height, width) of its images at `resolution`: from the JSON and
        the image headers alone."""
        index = self._index(split)
        sizes = [image_size(frame.path) for frame in index.frames]
        intrinsics = [
            frame.intrinsics.scaled(self.resolution, output_height(*size, self.resolution), *size) for frame, size in zip(index.frames, sizes)
        ]
        out_height = output_height(*sizes[0], self.resolution)
        return self.poses(split), torch.tensor(intrinsics, dtype=torch.float64), (out_height, self.resolution)

    def source_size(self, split: str) -> tuple[int, int]:
        """(width, height) of the first image of `split` as stored (not resized)."""
        return image_size(self._index(split).frames[0].path)

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
                if split == "train" and self.train_views is not None and self.train_views < len(loaded):
                    loaded = loaded.select(_evenly_spaced(self.train_views, len(loaded)))
                self.splits[split] = loaded.to(device)

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

    def check_scene(self, splits: Sequence[str] = ("train", "val", "test")) -> None:
        pass  # rendered on first use, always whole

    def _index(self, split: str, images: bool = True):
        ensure_builtin_scene(self.cache_dir, self.resolution)
        return super()._index(split, images)

    def load(self, split: str) -> SceneSplit:
        ensure_builtin_scene(self.cache_dir, self.resolution)
        return super().load(split)

