"""Lego variants as users bring them (scaled, off-centre, OpenCV poses, JPEG frames, pixel
intrinsics) train, with data.normalize or the convention set, to within 0.5 dB of the
unmodified scene at equal steps; a normalised run records its transform and the values used.
Each run is 150 steps at 32 px: slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import lego_dir, requires_lego
from own_scenes import jpeg, make_small_lego, opencv, pixel_intrinsics, scaled, shifted, variant
from user_commands import run_command


@pytest.fixture(scope="module")
def small_lego(tmp_path_factory) -> Path:
    return make_small_lego(lego_dir(), tmp_path_factory.mktemp("lego") / "lego")


def _train(scene: Path, folder: Path, cache_dir: Path, *overrides: str) -> dict:
    args = ["data=blender", f"data.scene_dir={scene}", "data.resolution=32", "data.batch_rays=256", "trainer.max_steps=150",
            "trainer.val_check_interval=150", "data.val_views=1", "data.test_views=4", "trainer.accelerator=cpu",
            "trainer.precision=32-true", "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}", *overrides]
    result = run_command("nerf_lab.train", *args, cwd=folder.parent, cache=cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reference_psnr(small_lego, tmp_path_factory, cache_dir) -> float:
    return _train(small_lego, tmp_path_factory.mktemp("runs") / "reference", cache_dir)["test/psnr"]


TRAINED_VARIANTS = [
    pytest.param("scaled", {"edit_frame": scaled(2.0)}, ["data.normalize=true"], marks=pytest.mark.slow),
    pytest.param("off_centre", {"edit_frame": shifted((2.5, 0, 0))}, ["data.normalize=true"], marks=pytest.mark.slow),
    pytest.param("opencv", {"edit_frame": opencv}, ["data.camera_convention=opencv"], marks=pytest.mark.slow),
    pytest.param("jpeg", {"image": jpeg}, [], marks=pytest.mark.slow),
    pytest.param("pixel_intrinsics", {"edit_top": pixel_intrinsics}, [], marks=pytest.mark.slow),
]


@requires_lego
@pytest.mark.parametrize(("name", "edits", "overrides"), TRAINED_VARIANTS)
def test_a_variant_trains_as_the_unmodified_scene(small_lego, tmp_path, cache_dir, reference_psnr, name, edits, overrides):
    scene = variant(small_lego, tmp_path / name, **edits)
    run = tmp_path / "run"
    metrics = _train(scene, run, cache_dir, *overrides)
    assert abs(metrics["test/psnr"] - reference_psnr) < 0.5, (metrics["test/psnr"], reference_psnr)
    if "data.normalize=true" in overrides:  # the run records the transform and the values it used
        config = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]["data"]
        transform = config["scene_transform"]
        assert transform["scale"] == pytest.approx(0.5 if name == "scaled" else 1.0, rel=0.01)
        assert transform["centre"] == pytest.approx([2.5, 0, 0] if name == "off_centre" else [0, 0, 0], abs=0.05)
        assert config["near"] == pytest.approx(2.03, abs=0.02) and config["far"] == pytest.approx(6.04, abs=0.02)
        # .hydra/config.yaml was written before the scene was read; the run's log says what it derived.
        assert f"near {config['near']:.4g}, far {config['far']:.4g}" in (run / "train.log").read_text()
