"""Render a 360° orbit from a checkpoint: `python -m nerf_lab.render ckpt_path=<file>`.

The camera circles the training cameras' mean up direction through the scene's centre (`centre`, else the centre of
the run's `data.scene_box`) at the data set's cameras' mean distance from it (`radius`) and
their mean elevation (`elevation_deg`), looking at the centre, as the NeRF papers' videos do.

With `poses=<transforms JSON>`, the cameras of that file instead (a test split of poses
only, a path made in Blender): `pred/<name>.png` and `depth/<name>.npy` (float32, scene units;
far where nothing was hit) for each frame, named after its `file_path` (`r_0`), its images
not needed. Poses are read in the run's `data.camera_convention` and moved by its recorded
`data.scene_transform`, as its training cameras were; each frame is `resolution` wide (the
run's by default) and as tall as its image, else its JSON's `w`, `h`, else the training
images, make it. No ground truth is read: `nerf_lab.eval` scores a split with images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import imageio.v3 as iio
import numpy as np
import torch
from omegaconf import DictConfig

from nerf_lab.analysis.orbit import orbit_frames, show_progress, write_gif, write_mp4
from nerf_lab.data.blender import SplitIndex, read_frames
from nerf_lab.data.geometry import SceneTransform
from nerf_lab.data.images import image_size, output_height
from nerf_lab.nerf.marching import render_in_chunks
from nerf_lab.nerf.rays import image_rays
from nerf_lab.visuals.panels import to_uint8
from nerf_lab.cli import hydra_command, run_task
from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers before Hydra composes it)
from nerf_lab.runs.checkpoints import load_trained
from nerf_lab.runs.hydra_callbacks import take_prepared
from nerf_lab.config.compose import CONF_DIR
from nerf_lab.config.checks import RENDER_CHECKS, check_values
from nerf_lab.training.hardware import keep_freed_memory, resolve_device, resolve_precision


def read_poses(path: str, trained: Any) -> SplitIndex:
    """The frames of the transforms JSON `path` (`poses=`), checked, in the run's camera
    convention; their images need not exist. `DataError` naming the file."""
    convention = trained.run_config.data.get("camera_convention") or "opengl"
    return read_frames(Path(path), convention, images=False)


def _frame_size(frame: Any) -> tuple[int, int] | None:
    """(width, height) of a frame's image: the file's, else its JSON's `w`, `h`, else None."""
    if frame.path.is_file():
        return image_size(frame.path)
    if frame.intrinsics.w is not None and frame.intrinsics.h is not None:
        return round(frame.intrinsics.w), round(frame.intrinsics.h)
    return None


def render_cameras(cfg: DictConfig, trained: Any, device: torch.device, bf16: bool) -> dict[str, Any]:
    """`pred/<name>.png` and `depth/<name>.npy` for each camera of `cfg.poses`."""
    index = read_poses(cfg.poses, trained)
    data = trained.run_config.data
    datamodule = trained.datamodule(cfg.scene_dir)
    transform = SceneTransform.from_config(data.get("scene_transform"))
    poses = index.poses() if transform is None else transform.apply(index.poses())
    width = cfg.resolution if cfg.resolution is not None else data.resolution
    output_dir = Path(cfg.paths.output_dir)
    for folder in ("pred", "depth"):
        (output_dir / folder).mkdir(parents=True, exist_ok=True)
    module = trained.module.to(device)
    names = []
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for number, (frame, pose) in enumerate(zip(index.frames, poses)):
            show_progress("render", number, len(index.frames))
            # A frame with neither its image nor w, h: the size of the training images as stored.
            source = _frame_size(frame) or datamodule.source_size("train")
            height = output_height(*source, width)
            intrinsics = torch.tensor(frame.intrinsics.scaled(width, height, *source), dtype=torch.float64)
            pose = torch.from_numpy(pose).float().to(device)
            out = render_in_chunks(module.renderer, image_rays(pose, float(intrinsics[0]), height, width, intrinsics), module.chunk)
            name = frame.path.stem if len({f.path.stem for f in index.frames}) == len(index.frames) else f"{number:03d}_{frame.path.stem}"
            iio.imwrite(output_dir / "pred" / f"{name}.png", to_uint8(out.rgb.float()))
            np.save(output_dir / "depth" / f"{name}.npy", out.depth.float().cpu().numpy().astype(np.float32))
            names.append(name)
    show_progress("render", len(index.frames), len(index.frames))
    print(
        f"{len(names)} cameras of {cfg.poses} rendered {width} px wide: pred/ and depth/ in {output_dir}; "
        "no ground truth read: no PSNR/SSIM (nerf_lab.eval scores a split with images)"
    )
    return {"files": [str(output_dir / "pred" / f"{name}.png") for name in names]}


def render_orbit(cfg: DictConfig) -> dict[str, Any]:
    prepared = take_prepared(cfg)  # the model the check before the run loaded, if it ran
    if prepared is not None:
        trained = prepared.trained
    else:
        check_values(cfg, RENDER_CHECKS)
        trained = load_trained(cfg.ckpt_path, cfg.chunk)
    keep_freed_memory()
    precision = resolve_precision(cfg.precision, cfg.accelerator)
    if cfg.poses:
        return render_cameras(cfg, trained, resolve_device(cfg.accelerator), precision.startswith("bf16"))
    orbit = orbit_frames(
        trained,
        cfg.frames,
        cfg.elevation_deg,
        cfg.resolution,
        cfg.depth,
        cfg.scene_dir,
        device=resolve_device(cfg.accelerator),
        bf16=precision.startswith("bf16"),
        centre=None if cfg.centre is None else [float(x) for x in cfg.centre],
        radius=cfg.radius,
        progress="render",
    )
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [write_gif(output_dir / "orbit.gif", orbit.frames, cfg.fps)]
    video = write_mp4(output_dir / "orbit.mp4", orbit.frames, cfg.fps)
    if video is not None:
        written.append(video)
    print(
        f"orbit of {cfg.frames} frames at {orbit.width} px, radius {orbit.radius:.2f}, "
        f"elevation {orbit.elevation_deg:.0f}°: {', '.join(map(str, written))}"
    )
    return {"files": [str(path) for path in written], "radius": orbit.radius, "elevation_deg": orbit.elevation_deg}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="render")
def _main(cfg: DictConfig) -> None:
    run_task(render_orbit, cfg)


main = hydra_command(_main, own_keys_only="render")

if __name__ == "__main__":
    main()
