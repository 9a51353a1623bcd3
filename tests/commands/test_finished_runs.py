"""Every command a user can point at a finished run (eval, render, resume with more steps, the
report, bench's init_from) works on a run trained with each data option that records derived
values: data.normalize=true (scene_transform, near, far, scene_box), data.camera_convention=
opencv, intrinsics with a principal point off the centre, JPEG frames. One toy run (16 px, four
steps) combines all four, so each command is shown on each option at the cost of one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import _lego_absent, lego_dir
from own_scenes import jpeg, make_small_lego, opencv, pixel_intrinsics, shifted, variant
from user_commands import run_command

pytestmark = [pytest.mark.lego, _lego_absent, pytest.mark.slow]


def _capture_frame(frame: dict) -> None:
    shifted((2.5, 0.0, 0.0))(frame)  # off-centre: data.normalize=true is needed
    opencv(frame)


def _principal_point_off_centre(meta: dict) -> None:
    pixel_intrinsics(meta)
    meta.update(cx=430.0, cy=380.0)


DATA = ["data=blender", "data.normalize=true", "data.camera_convention=opencv", "data.resolution=16", "data.batch_rays=64",
        "sampling.n_c=8", "data.val_views=1", "data.test_views=2", "trainer.accelerator=cpu", "trainer.precision=32-true",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir) -> tuple[Path, list[str]]:
    """A completed run (in a sweep-like folder, for the report) and its data overrides."""
    root = tmp_path_factory.mktemp("finished")
    small = make_small_lego(lego_dir(), root / "small")
    scene = variant(small, root / "capture", edit_frame=_capture_frame, edit_top=_principal_point_off_centre, image=jpeg)
    data = [f"data.scene_dir={scene}", *DATA]
    run = root / "sweep" / "0_run"
    result = run_command("nerf_lab.train", *data, "trainer.max_steps=4", "trainer.val_check_interval=2", f"hydra.run.dir={run}",
                         cwd=root, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((run / "metrics.json").read_text())
    assert recorded["status"] == "completed"
    return run, data


def test_eval_scores_the_run_as_training_tested_it(finished, tmp_path, cache_dir):
    """The same weights on the same two test views: the scene transform, bounds and cameras
    eval rebuilds are the run's, so the PSNR is the one the run recorded."""
    run, _ = finished
    result = run_command("nerf_lab.eval", f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "views=2", "accelerator=cpu",
                         "precision=32-true", "hydra.run.dir=eval", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scored["psnr"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test/psnr"], abs=0.05)  # as test_commands: same model, same views


def test_render_draws_the_orbit(finished, tmp_path, cache_dir):
    run, _ = finished
    result = run_command("nerf_lab.render", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "frames=2", "accelerator=cpu",
                         "precision=32-true", "hydra.run.dir=render", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "render" / "orbit.gif").stat().st_size > 0
    assert "render: 2/2 frames" in result.stderr  # progress while it renders


def test_resume_trains_more_steps(finished, tmp_path, cache_dir):
    run, data = finished
    result = run_command("nerf_lab.train", *data, "trainer.max_steps=6", "trainer.val_check_interval=2",
                         f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "hydra.run.dir=resumed", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["steps"] == 6


def test_the_report_renders_the_run(finished, tmp_path, cache_dir):
    run, _ = finished
    result = run_command("nerf_lab.report", str(run.parent), "--out", str(tmp_path / "report"), "--no-orbit", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "report: test view 0 of" in result.stderr  # progress while it renders
    assert "error" not in result.stderr.lower(), result.stderr[-2000:]
    assert any(path.suffix == ".png" for path in (tmp_path / "report").iterdir()), summary


def test_bench_starts_from_the_run(finished, tmp_path, cache_dir):
    run, data = finished
    result = run_command("nerf_lab.bench", *data, f"bench.init_from={run / 'checkpoints' / 'last.ckpt'}", "bench.warmup_steps=1",
                         "bench.steps=2", "hydra.run.dir=bench", cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "bench" / "bench.json").read_text())["timed_steps"] == 2
