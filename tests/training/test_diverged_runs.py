"""A run whose loss or final metrics are not finite ends as failed: error.txt, a non-zero exit,
no metrics.json; a sweep lists such a job as failed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES
from torchmetrics.image import StructuralSimilarityIndexMeasure
from user_commands import run_command

from nerf_lab.errors import TrainingDiverged
from nerf_lab.train import train
from nerf_lab.runs.records import read_run, read_sweep

# Adam's first step moves every weight by about lr: with lr = 1e30 the second step's loss is
# NaN (a finite value, so it passes the config checks, as a too-high rate does in practice).
EXPLODING = ["optim.lr=1e30"]


def test_a_nan_loss_in_a_run_shorter_than_the_logging_interval_fails_the_run(tmp_path, cache_dir):
    overrides = [o for o in FAST_OVERRIDES if not o.startswith(("trainer.max_steps", "trainer.log_every", "trainer.val_check"))]
    result = run_command(
        "nerf_lab.train", *overrides, *EXPLODING, "trainer.max_steps=2", "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=50", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: the loss was NaN or infinite by step 2")
    run = read_run(tmp_path / "run")
    assert run.status == "failed" and run.error.startswith("TrainingDiverged: the loss was NaN or infinite")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_loss_that_diverges_between_two_checks_stops_the_run_at_the_next(make_cfg):
    """Each step adds to a flag on the device; the host reads it (a sync) at steps 3, 6, … and
    when training ends: the NaN of step 2 stops the run at step 3, not at step 2."""
    cfg = make_cfg(*EXPLODING, "trainer.max_steps=5", "trainer.log_every_n_steps=3", "trainer.val_check_interval=5")
    with pytest.raises(TrainingDiverged, match=r"by step 3: expected a finite loss \(try a lower optim.lr, now 1e\+30\)"):
        train(cfg)


def test_finite_loss_but_nan_metrics_fail_the_run(make_cfg, monkeypatch):
    # SSIM of NaN: what a model whose whole-view renders are NaN scores, while its loss on
    # random rays is finite.
    monkeypatch.setattr(StructuralSimilarityIndexMeasure, "compute", lambda self: torch.tensor(math.nan))
    cfg = make_cfg()
    with pytest.raises(TrainingDiverged, match=r"val/ssim nan.*expected finite metrics"):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


@pytest.mark.slow
def test_a_sweep_lists_a_diverged_job_as_failed_and_finishes_the_others(tmp_path, cache_dir):
    overrides = [o for o in FAST_OVERRIDES if not o.startswith(("trainer.max_steps", "trainer.val_check"))]
    result = run_command(
        "nerf_lab.train", "-m", "optim.lr=1e30,5e-3", *overrides, "trainer.max_steps=4", "trainer.val_check_interval=4",
        "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    jobs = read_sweep(tmp_path / "sweep")
    assert [job.status for job in jobs] == ["failed", "completed"]
    assert "failed: TrainingDiverged: the loss was NaN or infinite" in (tmp_path / "sweep" / "summary.md").read_text()
    assert math.isfinite(jobs[1].metrics["test/psnr"])
