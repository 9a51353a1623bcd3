"""Hydra callbacks: check a run's config before its folder is made; summarise a sweep."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nerf_lab.errors import NerfLabError, environment_fault, user_error_exit
from nerf_lab.config.resolvers import release_claims
from nerf_lab.runs.folders import check_run_folder, check_sweep_folder
from nerf_lab.runs.records import read_sweep, sweep_table, write_json_atomically

log = logging.getLogger("nerf_lab")


class CheckConfigBeforeRun(Callback):
    """Bad input ends a single run with one line naming the key or file, before the run folder
    exists and before any image is decoded: a bad value (`model.depth=0`, `optim.lr=inf`), a
    missing or malformed scene, or a checkpoint that is missing, unsafe, not ours or (to resume
    from) of another model's shape; and a run or sweep folder that already holds another run
    (`nerf_lab.runs.folders`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = None
        try:
            check_before_run(config)
            if config.get("task_name") in RUN_TASKS:
                # After the checks: resolving a default hydra.run.dir claims (creates) it.
                run_dir = config.hydra.run.dir
                check_run_folder(run_dir, config.get("ckpt_path"))
        except NerfLabError as error:
            run_dir = None
            raise user_error_exit(error) from None
        except Exception as error:  # noqa: BLE001 (a folder that cannot be made: a fault of the machine, else re-raised)
            run_dir = None
            raise _fault_exit(error) from None
        finally:
            release_claims(keep=run_dir)  # folders claimed while Hydra composed the config

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = None
        try:
            check_job_folders(config)
            sweep_dir = config.hydra.sweep.dir
            check_sweep_folder(sweep_dir)
        except NerfLabError as error:
            sweep_dir = None
            raise user_error_exit(error) from None
        except Exception as error:  # noqa: BLE001 (re-raised unless a fault of the machine)
            sweep_dir = None
            raise _fault_exit(error) from None
        finally:
            release_claims(keep=sweep_dir)


# The job keys a sweep's subdir may name: what each job's folder can be told apart by.
JOB_KEYS = {"num", "id", "override_dirname", "name"}


def check_job_folders(config: DictConfig) -> None:
    """`ConfigError` before a sweep's first job when two of its jobs would share a folder
    (`hydra.sweep.subdir=job`, or one that names only keys the sweep does not vary): the
    second would overwrite the first. The jobs are listed as Hydra's basic sweeper lists them
    (the cartesian product of the command line's sweeps); a subdir that names anything but
    `hydra.job.{num,id,override_dirname,name}`, or sweeps that cannot be listed, are not checked."""
    import itertools
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from nerf_lab.errors import ConfigError

    node = config.hydra.sweep._get_node("subdir")
    raw = str(node._value())
    names = re.findall(r"hydra\.job\.(\w+)", raw)
    if "num" in names or "id" in names or (set(names) - JOB_KEYS) or re.search(r"\$\{(?!hydra\.job\.|nerf_lab\.job_dir_name:)", raw):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        choices = [
            [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
            else [o.input_line] for o in parsed
        ]
    except Exception:  # noqa: BLE001 (a sweep the basic sweeper's listing does not cover)
        return
    excluded = set(config.hydra.job.config.override_dirname.get("exclude_keys", []))
    seen: dict[str, int] = {}
    for number, job in enumerate(itertools.product(*choices)):
        kept = sorted(line for line in job if line.split("=", 1)[0].lstrip("+~") not in excluded)
        job_node = {"num": number, "id": str(number), "override_dirname": ",".join(kept), "name": config.hydra.job.name}
        folder = str(OmegaConf.create({"hydra": {"job": job_node}, "subdir": raw}).subdir) if "${" in raw else raw
        if folder in seen:
            raise ConfigError(
                f"hydra.sweep.subdir={raw} gives jobs {seen[folder]} and {number} the same folder ({folder}): the second would "
                "overwrite the first; expected a subdir with ${hydra.job.num} in it, e.g. hydra.sweep.subdir=${hydra.job.num}",
                key="hydra.sweep.subdir",
            )
        seen[folder] = number


def _fault_exit(error: Exception) -> BaseException:
    fault = environment_fault(error)
    return error if fault is None else user_error_exit(fault)


# The commands whose folder holds a run's record (checkpoints, metrics.json): one run a folder.
RUN_TASKS = ("train", "bench")


@dataclass
class Prepared:
    """What the check before a run built, handed to the command so that nothing is built or
    read twice: a training run's objects (`run`, and `resume` with `ckpt_path`), or eval's and
    render's trained model (`trained`)."""

    config: Any  # the command's config (Hydra's node left out), as plain unresolved data
    run: Any = None  # nerf_lab.config.build.Run
    resume: Any = None  # nerf_lab.runs.checkpoints.Resume
    trained: Any = None  # nerf_lab.runs.checkpoints.Trained


# The one run this process checked and built, until its command takes it (`take_prepared`).
_prepared: list[Prepared] = []


def _plain(config: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(config, resolve=False)
    plain.pop("hydra", None)
    return plain


def take_prepared(config: DictConfig) -> Prepared | None:
    """What the check before this run built for `config`, once; None when the run was not
    checked here (a sweep's job, or `train(cfg)` called directly): the command builds it."""
    found = _prepared.pop() if _prepared else None
    return found if found is not None and found.config == _plain(config) else None


def check_before_run(config: DictConfig) -> Prepared | None:
    """Every check a command's config gets before anything is written; what it built is kept
    for the command (`take_prepared`)."""
    # Imported here: keeps `--help` fast.
    from omegaconf import OmegaConf, open_dict

    from nerf_lab.config.build import build_run
    from nerf_lab.config.checks import COMMAND_CHECKS, check_values
    from nerf_lab.runs.checkpoints import check_resumable, load_trained

    _prepared.clear()
    task = config.get("task_name")
    prepared = None
    if task == "train":
        # The run folder is not chosen yet: the objects do not depend on it.
        buildable = OmegaConf.create(_plain(config))
        with open_dict(buildable):
            buildable.paths.output_dir = "."
        run = build_run(buildable, check_files=True)
        resume = check_resumable(config, run.module) if config.get("ckpt_path") else None
        prepared = Prepared(_plain(config), run=run, resume=resume)
    elif task == "bench":
        from nerf_lab.config.build import validate_config
        from nerf_lab.config.checks import BENCH_CHECKS
        from nerf_lab.runs.checkpoints import read_checkpoint

        check_values(config, BENCH_CHECKS)
        validate_config(config, check_files=True)
        if config.bench.get("init_from"):
            read_checkpoint(config.bench.init_from, "bench.init_from")
    elif task in COMMAND_CHECKS:
        check_own_keys(config, task)
        check_values(config, COMMAND_CHECKS[task])
        # Rebuilt as the command will (today's config, the stored values as data, the tensors
        # checked, finite): a checkpoint that cannot be is refused before any folder exists.
        trained = load_trained(config.ckpt_path, config.get("chunk"))
        if task == "eval":
            trained.check_scene(config.get("scene_dir"), ("test",), test_views=config.get("views"), resolution=config.get("resolution"))
        else:  # render: the training images' size; the test cameras' poses only (the orbit's elevation)
            orbit_elevation = not config.get("poses") and config.get("elevation_deg") is None  # the test cameras' mean
            trained.check_scene(config.get("scene_dir"), ("train",), cameras_only=("test",) if orbit_elevation else ())
            if config.get("poses"):  # the cameras to render instead: their JSON, checked
                from nerf_lab.data.blender import read_frames

                read_frames(Path(config.poses), trained.run_config.data.get("camera_convention") or "opengl", images=False)
        if task == "eval" and config.get("resolution") is not None:
            check_eval_resolution(config, trained.run_config)
        prepared = Prepared(_plain(config), trained=trained)
    if prepared is not None:
        _prepared.append(prepared)
    return prepared


def command_keys(task: str) -> set[str]:
    """The top-level keys a command's config (`conf/<task>.yaml`) has."""
    from omegaconf import OmegaConf

    from nerf_lab.config.compose import CONF_DIR

    return set(OmegaConf.load(CONF_DIR / f"{task}.yaml")) - {"defaults"} | {"paths", "hydra"}


def check_own_keys(config: DictConfig, task: str) -> None:
    """`ConfigError` for a top-level key the command does not read (a sweep's job, or a
    config composed elsewhere; the command line is checked by `cli.foreign_key_error`)."""
    from nerf_lab.errors import ConfigError

    own = command_keys(task)
    for key in config:
        if key not in own:
            raise ConfigError(
                f"{key} is not read by nerf_lab.{task}: the run's own settings come from its checkpoint; "
                f"expected one of {', '.join(sorted(own - {'paths', 'hydra', 'task_name'}))}"
            )


def check_eval_resolution(config: DictConfig, run_config: dict) -> None:
    """`DataError` when `resolution` is wider than the test images of the checkpoint's scene."""
    from nerf_lab.data.blender import read_split_index
    from nerf_lab.data.images import image_size
    from nerf_lab.errors import DataError

    scene_dir = config.get("scene_dir") or run_config["data"].get("scene_dir")
    if scene_dir is None:  # the built-in scene is rendered at any resolution
        return
    index = read_split_index(Path(scene_dir), "test", run_config["data"].get("camera_convention") or "opengl")
    width = min(image_size(frame.path)[0] for frame in index.frames)
    if config.resolution > width:
        raise DataError(f"resolution={config.resolution} is larger than the test images ({width} px wide, {index.frames[0].path}): expected at most {width}")


class SweepSummary(Callback):
    """After a sweep: a table of its jobs and their metrics, printed and written to
    `summary.md` / `summary.json` in the sweep folder; exit status 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        release_claims(keep=sweep_dir)  # Hydra's sweeper composed each job's config here too
        if sweep_dir.is_dir() and write_summary(sweep_dir):
            raise SystemExit(1)


def write_summary(sweep_dir: Path) -> bool:
    """Print the sweep's table and write `summary.md` and `summary.json`; True if any of its
    jobs did not complete. (Also called by a sweep stopped by a signal, before it exits.)"""
    jobs = read_sweep(sweep_dir)
    table = sweep_table(jobs)
    (sweep_dir / "summary.md").write_text(table + "\n")
    write_json_atomically(
        sweep_dir / "summary.json",
        [{"job": job.path.name, "overrides": job.overrides, "status": job.status, "error": job.error, **job.metrics} for job in jobs],
    )
    print(f"\nsweep {sweep_dir}: {len(jobs)} jobs\n{table}")
    failed = [job for job in jobs if job.status != "completed"]
    if failed:
        print(f"{len(failed)} of {len(jobs)} jobs did not complete: see error.txt in their folders", file=sys.stderr)
    return bool(failed)
