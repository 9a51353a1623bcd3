"""Checkpoints, read without running code; and a trained model with its scene, rebuilt from one.

A nerf_lab checkpoint holds only tensors, numbers, strings and plain containers (the run's
config is stored as a plain dict), so every read here uses `torch.load(weights_only=True)`:
a pickle that names any other global (`os.system`, a class of ours) is refused, never called.
Resuming (`Trainer.fit(ckpt_path=..., weights_only=True)`), `nerf_lab.eval`, `nerf_lab.render`
and the report's figures all come through here, after `read_checkpoint` checked the file.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from nerf_lab.data.blender import check_images, read_split_index
from nerf_lab.errors import ConfigError, DataError
from nerf_lab.config.build import build_datamodule, build_module
from nerf_lab.training.module import GRID_PREFIX, RENDERER_PREFIX, NeRFLitModule, upgrade_state_dict
from nerf_lab.config.stored import config_from_checkpoint


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, loaded with `weights_only=True` and `mmap=True` on the CPU (its
    tensors are mapped, not read, until used); `ConfigError` (one line naming `key` and the
    file) if it is missing, damaged, not a checkpoint, holds compressed tensors (torch.save
    never writes them: a small file could unpack to any size), or holds anything but tensors
    and plain containers (whose loading could run code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist: expected a checkpoint such as <run>/checkpoints/last.ckpt", key=key)
    _refuse_compressed_records(path, key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types for a file that is not a checkpoint)
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if unsafe:
            raise ConfigError(
                f"{key}={path} refused: it names {unsafe.group(1)}, and loading it could run code; "
                "a nerf_lab checkpoint holds only tensors and plain containers",
                key=key,
            ) from None
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(f"{key}={path} is damaged or not a checkpoint ({reason}): expected a .ckpt written by nerf_lab.train", key=key) from None
    config = checkpoint.get("hyper_parameters", {}).get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{key}={path} is not a nerf_lab checkpoint: expected a run's config and model weights in it", key=key)
    # Weights under today's names, whichever nerf_lab wrote them.
    checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"])
    return checkpoint


def _refuse_compressed_records(path: Path, key: str) -> None:
    """torch.save writes a zip of stored (uncompressed) records; one compressed is refused
    before anything is unpacked, so the file's size bounds what loading it reads."""
    if not zipfile.is_zipfile(path):
        return  # torch.load says what it is
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ConfigError(f"{key}={path} is damaged or not a checkpoint ({error}): expected a .ckpt written by nerf_lab.train", key=key) from None
    packed = [record for record in records if record.compress_type != zipfile.ZIP_STORED]
    if packed:
        unpacked = sum(record.file_size for record in records)
        raise ConfigError(
            f"{key}={path} refused: its records are compressed ({path.stat().st_size / 2**20:.1f} MiB on disk, "
            f"{unpacked / 2**20:.1f} MiB unpacked, e.g. {packed[0].filename}); torch.save writes them uncompressed",
            key=key,
        )


@dataclass
class Resume:
    """What resuming a run needs, read from its checkpoint once."""

    changes: list[str]  # the keys changed from the checkpoint's run that apply (`check_resume_changes`)
    start_step: int  # the step the checkpoint was written at


def check_resumable(cfg: DictConfig, module: NeRFLitModule) -> Resume:
    """For training with `ckpt_path`: the file is a safe nerf_lab checkpoint whose tensors fit
    `module` (the one this config built), its run and this config differ only in keys that may
    change mid-run, and `trainer.max_steps` leaves steps to train (checked before the run
    folder is made; see `nerf_lab.runs.resume`). The file is read once, here."""
    from nerf_lab.runs.resume import check_resume_changes

    checkpoint = read_checkpoint(cfg.ckpt_path)
    missing = [key for key in LIGHTNING_KEYS if key not in checkpoint]
    if missing:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is not a Lightning training checkpoint (no {', '.join(missing)}): it can be evaluated "
            "(nerf_lab.eval) but not resumed; expected a checkpoint that nerf_lab.train wrote, e.g. <run>/checkpoints/last.ckpt",
            key="ckpt_path",
        )
    changes = check_resume_changes(cfg, checkpoint)
    check_same_scene(cfg, checkpoint)
    check_tensors(checkpoint, module, cfg.ckpt_path, finite=False)
    return Resume(changes, int(checkpoint.get("global_step", 0)))


# What Lightning reads to resume a run, beyond the weights (its migration reads the version unguarded).
LIGHTNING_KEYS = ("pytorch-lightning_version", "global_step", "loops", "optimizer_states", "lr_schedulers")
# hyper_parameters.scene: the scene a run trained on (`BlenderDataModule.scene_identity`).
SCENE_KEY = "scene"


def check_same_scene(cfg: DictConfig, checkpoint: dict[str, Any]) -> None:
    """A resume's scene is the one the checkpoint's run trained on: the same training cameras
    (their digest), wherever the folder now is; `ConfigError` in one line otherwise, unless
    `resume_other_scene=true`. (A checkpoint written before scenes were recorded is not checked.)"""
    recorded = checkpoint.get("hyper_parameters", {}).get(SCENE_KEY)
    if not isinstance(recorded, dict) or cfg.get("resume_other_scene"):
        return
    given = build_datamodule(cfg).scene_identity()
    if given["cameras"] == recorded.get("cameras"):
        return
    raise ConfigError(
        f"ckpt_path={cfg.ckpt_path} was trained on {recorded.get('scene_dir')} ({recorded.get('train_views')} train views, cameras "
        f"{recorded.get('cameras')}); data.scene_dir={cfg.data.get('scene_dir')} holds another scene ({given['train_views']} train "
        f"views, cameras {given['cameras']}): resume with data.scene_dir={recorded.get('scene_dir')}, or resume_other_scene=true "
        "to go on with this one",
        key="data.scene_dir",
    )


def check_tensors(checkpoint: dict[str, Any], module: NeRFLitModule, path: str | Path, finite: bool = True) -> None:
    """The checkpoint's weights have exactly the names, shapes and dtypes of `module`'s (an
    occupancy grid's buffers included), read from the mapped file's headers before any tensor
    is read; all of its tensors together are no larger than those weights (three times, with
    the optimizer's moments) and a MiB; then, with `finite`, every weight is finite and a grid
    is one the run could have left. `ConfigError` naming the file and the tensor otherwise."""
    expected = module.state_dict()
    stored = checkpoint["state_dict"]
    for name in sorted(expected.keys() | stored.keys()):
        want, got = expected.get(name), stored.get(name)
        if not isinstance(got, torch.Tensor) or want is None or got.shape != want.shape or got.dtype != want.dtype:
            raise ConfigError(
                f"ckpt_path={path} holds a model of another shape ({name}: {_describe(got)} in the checkpoint, "
                f"{_describe(want)} for its config): expected the checkpoint of a run with the same model, encoding and sampling settings"
            )
    weights = sum(tensor.nbytes for tensor in expected.values())
    allowed = 3 * weights + 2**20  # the weights, Adam's two moments, and the small rest
    total = sum(storage.nbytes() for storage in _storages(checkpoint))
    if total > allowed:
        raise ConfigError(
            f"ckpt_path={path} refused: its tensors hold {total / 2**20:.1f} MiB where its model's weights and "
            f"optimizer state are {allowed / 2**20:.1f} MiB at most"
        )
    if finite:
        for name, tensor in stored.items():  # the renderer's (a metric's running max starts at -inf)
            if name.startswith(RENDERER_PREFIX) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ConfigError(
                    f"ckpt_path={path} holds non-finite weights ({name} has NaN or infinite values; the run diverged): "
                    "expected a checkpoint of a run that trained, e.g. an earlier best.ckpt"
                )
        _check_grid(module, stored, path)


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    """Every distinct tensor storage in a loaded checkpoint (mapped: sizes only are read)."""
    found: dict[int, torch.UntypedStorage] = {}
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            found[storage.data_ptr()] = storage
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return list(found.values())


def _check_grid(module: NeRFLitModule, stored: dict[str, torch.Tensor], path: str | Path) -> None:
    """An occupancy grid is either open (every cell) or exactly what its densities say,
    occupied ⇔ 1 − exp(−ρ·step) > threshold (cells within 1e-5 of it excepted), with at least
    `min_occupied` of its cells; a run leaves no other (`OccupancyGrid.update`)."""
    for prefix, grid in module.named_modules():
        if not hasattr(grid, "occupied") or not hasattr(grid, "threshold"):
            continue
        occupied, density = stored[f"{prefix}.occupied"], stored[f"{prefix}.density"]
        if bool(occupied.all()):
            continue
        opacity = 1.0 - torch.exp(-density.float().clamp(min=0) * grid.step_size)
        disagree = (occupied != (opacity > grid.threshold)) & ((opacity - grid.threshold).abs() > 1e-5)
        fraction = float(occupied.float().mean())
        if bool((density < 0).any()) or bool(disagree.any()) or fraction < grid.min_occupied:
            raise ConfigError(
                f"ckpt_path={path} holds an occupancy grid its run could not have left ({prefix}.occupied: "
                f"{fraction:.2%} occupied, {int(disagree.sum())} cells disagree with {prefix}.density): "
                "expected the grid the run saved"
            )


def _describe(tensor: Any) -> str:
    if not isinstance(tensor, torch.Tensor):
        return "absent" if tensor is None else type(tensor).__name__
    return f"{_shape(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def _shape(shape: torch.Size | None) -> str:
    return "absent" if shape is None else "×".join(map(str, shape)) or "scalar"


@dataclass
class Trained:
    module: NeRFLitModule
    run_config: DictConfig  # today's config for the training run, its stored values overlaid (`run_config`)
    # The data modules built so far, by (scene_dir, test_views, resolution): the check before
    # eval or render builds the one the command then uses.
    _datamodules: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def datamodule(self, scene_dir: str | None = None, test_views: int | None = None, resolution: int | None = None):
        """The training run's data module, optionally reading the scene from elsewhere, or at
        another `resolution` (image width in pixels); built once for each set of arguments.
        `ConfigError` naming `scene_dir` when it is set for a model of the built-in scene."""
        key = (scene_dir, test_views, resolution)
        if key not in self._datamodules:
            with open_dict(self.run_config):
                if resolution is not None:
                    self.run_config.data.resolution = resolution
                if scene_dir is not None:
                    if self.run_config.data.get("scene_dir") is None:
                        raise ConfigError("scene_dir is set, but this model was trained on the built-in scene", key="scene_dir")
                    self.run_config.data.scene_dir = scene_dir
                self.run_config.data.test_views = test_views
            self._datamodules[key] = build_datamodule(self.run_config)
        return self._datamodules[key]

    def check_scene(
        self,
        scene_dir: str | None,
        splits: tuple[str, ...] = ("test",),
        cameras_only: tuple[str, ...] = (),
        test_views: int | None = None,
        resolution: int | None = None,
    ) -> None:
        """The scene eval and render read (`scene_dir`, else the training run's folder), through
        the data module they will use (`datamodule` with the same arguments, so built here
        once): each of `splits`' JSON and PNG headers, nothing decoded, and the JSON of each of
        `cameras_only` (its images need not exist); `DataError` naming eval's and render's own
        key, `scene_dir`."""
        datamodule = self.datamodule(scene_dir, test_views, resolution)
        if self.run_config.data.get("scene_dir") is None:
            return  # the built-in scene, rendered on first use
        folder = Path(datamodule.scene_dir)
        if not folder.is_dir():
            where = " (where the training run read it)" if scene_dir is None else ""
            raise DataError(
                f"scene folder {folder}{where} does not exist: "
                "expected scene_dir=<the scene's folder on this machine>, holding transforms_test.json and its images"
            )
        convention = self.run_config.data.get("camera_convention") or "opengl"
        for split in splits:
            check_images(read_split_index(folder, split, convention))
        for split in cameras_only:
            read_split_index(folder, split, convention, images=False)


def load_trained(ckpt_path: str | Path, chunk: int | None = None) -> Trained:
    """The one way nerf_lab loads a trained model: read by `read_checkpoint` (`weights_only=True`),
    rebuilt from today's config for the run it recorded, its stored values overlaid as data
    (`run_config.config_from_checkpoint`: nothing stored is called), its tensors checked
    against that model (`check_tensors`: names, shapes, dtypes, sizes, finite, the grid), then
    given the trained weights."""
    checkpoint = read_checkpoint(ckpt_path)
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ConfigError(f"chunk={chunk!r} is not allowed: expected a positive integer (rays a chunk), or null")
    cfg = config_from_checkpoint(checkpoint, ckpt_path)
    try:
        module = build_module(cfg)
    except (RuntimeError, KeyError, TypeError, ValueError, OmegaConfBaseException) as error:
        raise ConfigError(f"ckpt_path={ckpt_path} could not be rebuilt as a nerf_lab model: {error}".splitlines()[0]) from None
    check_tensors(checkpoint, module, ckpt_path)
    module.load_state_dict(checkpoint["state_dict"])
    if chunk is not None:
        module.chunk = chunk
    module.eval()
    return Trained(module, cfg)


def load_initial_weights(module: NeRFLitModule, path: str, key: str) -> None:
    """Start from a checkpoint's fields (and grid, where both have one), so that the timed
    steps are those of a trained field: a grid is only sparse once the field has learned
    where the scene is. The grid refreshes from the first step, as it would in that run."""
    state = read_checkpoint(path, key)["state_dict"]
    grid = getattr(module.renderer.sampler, "grid", None)
    if grid is None or not any(GRID_PREFIX in name for name in state):
        state = {name: value for name, value in state.items() if GRID_PREFIX not in name}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or any(GRID_PREFIX not in name for name in missing):
        raise ConfigError(f"{key}={path}: its model does not match this config's (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if grid is not None:
        grid.open_until.zero_()
