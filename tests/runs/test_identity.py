"""A run's identity and folders: a resume goes on only on the scene it trained on, a checkpoint
Lightning cannot resume is refused in one line, and a sweep is refused before its first job
when two jobs would share a folder or a swept key does not exist; none leaves a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES, _lego_absent, compose_config, lego_dir
from own_scenes import make_small_lego
from user_commands import one_line_error, run_command

from nerf_lab.errors import ConfigError


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["model.detph=2,4"], "model.detph=2,4: model has no key detph; nearest keys: model.depth"),
        (["seed=0,1", "hydra.sweep.subdir=job"], "hydra.sweep.subdir=job gives jobs 0 and 1 the same folder (job)"),
        (["seed=0,1", "hydra.sweep.subdir=."], "hydra.sweep.subdir=. gives jobs 0 and 1 the same folder (.)"),
        # the job folders' names leave paths out: two scenes, one name
        (["data=blender", "data.scene_dir=a,b", "hydra.sweep.subdir=${hydra.job.override_dirname}"], "gives jobs 0 and 1 the same folder (data=blender)"),
    ],
)
def test_a_sweep_that_cannot_run_is_one_line_before_any_folder(tmp_path, cache_dir, arguments, expected):
    result = run_command("nerf_lab.train", "-m", *arguments, "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir)
    assert expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_without_lightnings_version_is_refused_before_the_run(trained_run, tmp_path):
    from nerf_lab.config.build import build_run
    from nerf_lab.runs.checkpoints import check_resumable

    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    del checkpoint["pytorch-lightning_version"]
    path = tmp_path / "copied.ckpt"
    torch.save(checkpoint, path)
    cfg = compose_config([*FAST_OVERRIDES, "trainer.max_steps=20", f"ckpt_path={path}"], tmp_path / "run")
    with pytest.raises(ConfigError) as caught:
        check_resumable(cfg, build_run(cfg).module)
    message = str(caught.value)
    assert "is not a Lightning training checkpoint (no pytorch-lightning_version)" in message and "\n" not in message
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """A two-step run on a small Lego, and its scene."""
    from nerf_lab.train import train

    root = tmp_path_factory.mktemp("scene_run")
    scene = make_small_lego(lego_dir(), root / "scene")
    cfg = compose_config(["data=blender", f"data.scene_dir={scene}", *FAST_OVERRIDES, "data.resolution=16", "trainer.max_steps=2",
                          "trainer.val_check_interval=2", "test=false"], root / "run", cache_dir)
    train(cfg)
    return root / "run" / "checkpoints" / "last.ckpt", scene


def _resume(checkpoint: Path, scene: Path, tmp_path: Path, *overrides: str):
    from nerf_lab.config.build import build_run
    from nerf_lab.runs.checkpoints import check_resumable

    cfg = compose_config(["data=blender", f"data.scene_dir={scene}", *FAST_OVERRIDES, "data.resolution=16", "trainer.max_steps=4",
                          "trainer.val_check_interval=2", "test=false", f"ckpt_path={checkpoint}", *overrides], tmp_path / "resumed")
    return check_resumable(cfg, build_run(cfg).module).changes


@pytest.mark.lego
@_lego_absent
def test_a_resume_on_the_same_scene_moved_elsewhere_goes_on(scene_run, tmp_path):
    checkpoint, scene = scene_run
    moved = shutil.copytree(scene, tmp_path / "moved")
    assert any("data.scene_dir" in change for change in _resume(checkpoint, moved, tmp_path))


@pytest.mark.lego
@_lego_absent
def test_a_resume_on_another_scene_is_refused_unless_told(scene_run, tmp_path):
    checkpoint, scene = scene_run
    other = shutil.copytree(scene, tmp_path / "other")
    meta = json.loads((other / "transforms_train.json").read_text())
    meta["frames"] = meta["frames"][1:]  # another capture: other cameras
    (other / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError) as caught:
        _resume(checkpoint, other, tmp_path)
    message = str(caught.value)
    assert f"was trained on {scene.resolve()} (25 train views" in message and "holds another scene (24 train views" in message
    assert "resume_other_scene=true" in message and "\n" not in message
    _resume(checkpoint, other, tmp_path, "resume_other_scene=true")


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("bench.render_views=0", "bench.render_views=0 is not allowed: expected a positive integer"),
        ("bench.steps=0", "bench.steps=0 is not allowed"),
        ("bench.init_from=missing.ckpt", "bench.init_from=missing.ckpt does not exist"),
        ("model.depth=0", "model.depth=0 is not allowed"),
    ],
)
def test_bench_checks_its_values_before_its_folder(tmp_path, cache_dir, argument, expected):
    result = run_command("nerf_lab.bench", argument, "hydra.run.dir=bench", cwd=tmp_path, cache=cache_dir)
    assert expected in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_a_non_ascii_path_unquoted_is_one_line_with_the_fix(tmp_path, cache_dir):
    result = run_command("nerf_lab.train", "data=blender", "data.scene_dir=/data/légo_数据", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    line = one_line_error(result)
    assert "data.scene_dir=/data/légo_数据: Hydra reads unquoted values as ASCII only and stops at 'é'" in line
    assert "quote the value: \"data.scene_dir='/data/légo_数据'\"" in line
    assert list(tmp_path.iterdir()) == []


def test_make_tensorboard_shows_every_validation_image():
    """TensorBoard keeps 10 images a tag by default: a run of 1000 steps validated every 100
    shows 11 validations, a study's longer runs more; `make tensorboard` keeps them all."""
    import re
    import subprocess

    from conftest import REPO_ROOT

    command = subprocess.run(["make", "-n", "tensorboard"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    kept = re.search(r"--samples_per_plugin[ =]images=(\d+)", command)
    assert kept is not None and int(kept.group(1)) >= 10_000, command
