"""Render a 360° orbit from a checkpoint: `python -m nerf_lab.render ckpt_path=<file>`.

The camera circles the training cameras' mean up direction through the scene's centre (`centre`, else the centre of
the run's `data.scene_box`) at the data set's cameras' mean distance from it (`radius`) and
their mean elevation (`elevation_deg`), looking at the centre, as the NeRF papers' videos do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from nerf_lab.analysis.orbit import orbit_frames, write_gif, write_mp4
from nerf_lab.cli import hydra_command, run_task
from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers before Hydra composes it)
from nerf_lab.runs.checkpoints import load_trained
from nerf_lab.runs.hydra_callbacks import take_prepared
from nerf_lab.config.build import CONF_DIR, RENDER_CHECKS, check_values
from nerf_lab.training.hardware import keep_freed_memory, resolve_device, resolve_precision


def render_orbit(cfg: DictConfig) -> dict[str, Any]:
    prepared = take_prepared(cfg)  # the model the check before the run loaded, if it ran
    if prepared is not None:
        trained = prepared.trained
    else:
        check_values(cfg, RENDER_CHECKS)
        trained = load_trained(cfg.ckpt_path, cfg.chunk)
    keep_freed_memory()
    precision = resolve_precision(cfg.precision, cfg.accelerator)
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
