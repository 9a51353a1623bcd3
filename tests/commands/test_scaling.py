"""Beyond one process: data-parallel training on CPU ranks, parallel and submitit sweeps."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES, REPO_ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from user_commands import run_command

# Each test starts several training processes (DDP ranks, joblib or submitit jobs): `make test-full`.
pytestmark = pytest.mark.slow

SMALL = [o for o in FAST_OVERRIDES if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=6", "trainer.val_check_interval=3"]


@pytest.fixture
def tests_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))


def test_ddp_on_two_cpu_processes(tmp_path, cache_dir, tests_on_path):
    record = tmp_path / "record"
    result = run_command(
        "nerf_lab.train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *SMALL,
        "data.val_views=2", "data.test_views=3",
        "+callbacks.record._target_=recording_callbacks.RecordRays", f"+callbacks.record.folder={record}",
        "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]  # two real processes
    rays = [torch.load(record / f"rays_rank{r}.pt") for r in (0, 1)]
    assert not torch.allclose(rays[0], rays[1])  # each rank draws its own rays

    run_dir = tmp_path / "run"
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert len(list(run_dir.glob("metrics.json"))) == 1
    assert not list(tmp_path.glob("lightning_logs"))  # one set of logs, in the run folder
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/psnr")] == [3, 6]  # logged once, not once a rank
    assert len(events.Images("val/view_0")) == 2  # rank 0 logs the view it rendered, at each validation


def _assert_complete_jobs(sweep: Path, count: int) -> None:
    jobs = sorted(path for path in sweep.iterdir() if (path / ".hydra").is_dir())
    assert len(jobs) == count
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        assert list((job / "tensorboard").glob("events.*")) and (job / "checkpoints" / "last.ckpt").is_file()


def test_parallel_sweep_with_joblib_shares_the_cores(tmp_path, cache_dir, tests_on_path):
    record = tmp_path / "record"
    result = run_command(
        "nerf_lab.train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "model.depth=1,2", *SMALL,
        "+callbacks.record._target_=recording_callbacks.RecordRays", f"+callbacks.record.folder={record}/${{hydra:job.num}}",
        "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_complete_jobs(tmp_path / "sweep", 2)
    cores = len(os.sched_getaffinity(0))
    for number in (0, 1):
        assert json.loads((record / str(number) / "rank0.json").read_text())["threads"] == max(1, cores // 2)


def test_sweep_through_submitit_local(tmp_path, cache_dir):
    result = run_command(
        "nerf_lab.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "model.depth=1,2", *SMALL,
        "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_complete_jobs(tmp_path / "sweep", 2)
    assert "| job" in result.stdout  # the sweep's summary table
