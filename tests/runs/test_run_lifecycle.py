"""A run's record is the truth: one run a folder, stops recorded and resumable bit for bit,
a killed sweep job failing alone. Commands run as a user runs them (exit status, printed line,
files left behind)."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import FAST_OVERRIDES, REPO_ROOT
from user_commands import one_line_error, run_command

from nerf_lab.config.resolvers import fresh_dir
from nerf_lab.runs.records import finish_record, read_run, read_sweep, record_failure, start_record

QUICK = [o for o in FAST_OVERRIDES if not o.startswith(("trainer.max_steps", "trainer.val_check_interval", "callbacks.last"))]


@pytest.fixture
def tests_on_path(monkeypatch):
    """The test callbacks (tests/recording_callbacks.py) importable by the commands."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), (key, (wa[key].float() - wb[key].float()).abs().max())


# --- one folder, one run ---


def test_two_runs_into_one_folder_the_second_is_refused_and_the_first_resumes_into_it(tmp_path, cache_dir):
    first = run_command("nerf_lab.train", *QUICK, "trainer.max_steps=2", "test=false", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    second = run_command("nerf_lab.train", *QUICK, "trainer.max_steps=2", "seed=1", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    line = one_line_error(second)
    assert "hydra.run.dir=run already holds a run" in line and "ckpt_path=run/checkpoints/last.ckpt" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # and no other folder

    # Resuming that run into its own folder is the one way in; its record keeps every metric.
    resumed = run_command(
        "nerf_lab.train", *QUICK, "trainer.max_steps=4", "test=false", "hydra.run.dir=run", "ckpt_path=run/checkpoints/last.ckpt",
        cwd=tmp_path, cache=cache_dir,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["status"] == "completed"
    assert {"val/psnr", "val/psnr_best", "val/ssim", "train/loss", "train/psnr"} <= metrics.keys()
    assert not (run / "error.txt").exists() and not list(run.glob(".metrics*"))


def test_default_folders_started_in_the_same_second_are_two(tmp_path):
    base = str(tmp_path / "outputs" / "2026-01-01" / "12-00-00")
    claimed = [fresh_dir(base) for _ in range(3)]
    assert claimed == [base, f"{base}_2", f"{base}_3"]
    assert all(Path(folder).is_dir() for folder in claimed)


def test_a_failing_resume_of_a_finished_run_leaves_the_failure_and_not_the_old_metrics(tmp_path):
    run = tmp_path / "run"
    finish_record(run, {"val/psnr": 20.0, "train/loss": 0.01, "steps": 10, "status": "completed"})
    earlier = start_record(run)  # the run is resumed into its folder
    assert earlier["val/psnr"] == 20.0 and not (run / "metrics.json").exists()
    record_failure(run, RuntimeError("out of luck"))
    job = read_run(run)
    assert (job.status, job.error) == ("failed", "RuntimeError: out of luck")
    assert not (run / "metrics.json").exists()
    # A failure recorded beside a stale metrics.json is a failure too: error.txt wins.
    (run / "metrics.json").write_text(json.dumps({"steps": 10}))
    assert read_run(run).status == "failed"


# --- stops ---


def test_sigterm_at_step_30_saves_step_30_exits_143_and_resumes_to_the_uninterrupted_weights(tmp_path, cache_dir, tests_on_path):
    steps = [*QUICK, "trainer.max_steps=34", "trainer.val_check_interval=15", "test=false"]  # validations at 15 and 30
    stopped = run_command(
        "nerf_lab.train", *steps, "+callbacks.stop._target_=recording_callbacks.SignalAt", "+callbacks.stop.step=30",
        "hydra.run.dir=stopped", cwd=tmp_path, cache=cache_dir,
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    run = tmp_path / "stopped"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 30
    reason = (run / "error.txt").read_text().splitlines()[0]
    assert reason.startswith("RunInterrupted: interrupted by SIGTERM at step 30; resume with: python -m nerf_lab.train")
    assert f"ckpt_path={last}" in reason and f"hydra.run.dir={run}" in reason
    assert not (run / "metrics.json").exists()
    assert read_run(run).status == "interrupted"

    # The printed command, as a user would paste it (less the test's own signal callback).
    command = reason.split("resume with: python -m nerf_lab.train ", 1)[1].split()
    command = [word for word in command if "callbacks.stop" not in word]
    resumed = run_command("nerf_lab.train", *command, cwd=tmp_path, cache=cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_run(run).status == "completed" and not (run / "error.txt").exists()

    whole = run_command("nerf_lab.train", *steps, "hydra.run.dir=whole", cwd=tmp_path, cache=cache_dir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    _assert_same_weights(tmp_path / "whole/checkpoints/last.ckpt", last)


def test_a_stop_during_a_validation_resumes_to_the_uninterrupted_run(tmp_path, cache_dir, tests_on_path):
    """SIGTERM after the first of two validation views at step 30: `last.ckpt` at step 30;
    the resumed run ends with the uninterrupted run's weights, its validations (curve.csv: the
    interrupted one done again, once) and its best validation."""
    steps = [*QUICK, "trainer.max_steps=34", "trainer.val_check_interval=15", "data.val_views=2", "test=false"]
    stopped = run_command(
        "nerf_lab.train", *steps, "+callbacks.stop._target_=recording_callbacks.SignalAt", "+callbacks.stop.step=30",
        "+callbacks.stop.during_validation=true", "hydra.run.dir=stopped", cwd=tmp_path, cache=cache_dir,
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    run = tmp_path / "stopped"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 30
    resumed = run_command("nerf_lab.train", *steps, f"ckpt_path={last}", f"hydra.run.dir={run}", cwd=tmp_path, cache=cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = run_command("nerf_lab.train", *steps, "hydra.run.dir=whole", cwd=tmp_path, cache=cache_dir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    _assert_same_weights(tmp_path / "whole/checkpoints/last.ckpt", last)

    def validations(folder):
        return [(row["step"], row["val_psnr"]) for row in csv.DictReader((folder / "curve.csv").open())]

    assert validations(run) == validations(tmp_path / "whole")
    kept, expected = (json.loads((folder / "metrics.json").read_text()) for folder in (run, tmp_path / "whole"))
    assert kept["val/psnr_best"] == expected["val/psnr_best"]


@pytest.mark.slow  # three runs of 130 steps
def test_resume_is_bit_for_bit_across_validation_grid_refreshes_and_a_signal(tmp_path, cache_dir, tests_on_path):
    """100 steps past the stop at step 30: validations every 20 steps, the occupancy grid
    refreshed every 4 steps after its warm-up of 12, bf16-mixed; stopped by SIGINT."""
    steps = [
        *QUICK, "sampling=occupancy", "sampling.n_c=16", "sampling.grid.resolution=16", "sampling.grid.update_every=4",
        "sampling.grid.warmup_steps=12", "trainer.max_steps=130", "trainer.val_check_interval=20", "trainer.precision=bf16-mixed",
        "test=false",
    ]
    stopped = run_command(
        "nerf_lab.train", *steps, "+callbacks.stop._target_=recording_callbacks.SignalAt", "+callbacks.stop.step=30",
        "+callbacks.stop.signal=SIGINT", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir,
    )
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    last = tmp_path / "run/checkpoints/last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 30
    resumed = run_command("nerf_lab.train", *steps, f"ckpt_path={last}", "hydra.run.dir=run", cwd=tmp_path, cache=cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = run_command("nerf_lab.train", *steps, "hydra.run.dir=whole", cwd=tmp_path, cache=cache_dir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    _assert_same_weights(tmp_path / "whole/checkpoints/last.ckpt", last)


@pytest.mark.slow  # a sweep of two jobs
def test_a_sweep_stopped_by_sigterm_marks_the_job_interrupted_writes_its_summary_and_exits_143(tmp_path, cache_dir, tests_on_path):
    result = run_command(
        "nerf_lab.train", "-m", *QUICK, "trainer.max_steps=6", "test=false", "seed=0,1,2",
        "+callbacks.stop._target_=recording_callbacks.SignalAt", "+callbacks.stop.step=3", "+callbacks.stop.job=1",
        "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    summary = json.loads((tmp_path / "sweep/summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed", "interrupted"]  # job 2 never started
    assert "interrupted by SIGTERM at step 3" in summary[1]["error"]


@pytest.mark.slow  # a parallel sweep of three jobs
def test_a_parallel_sweep_with_one_job_killed_fails_that_job_alone(tmp_path, cache_dir, tests_on_path):
    result = run_command(
        "nerf_lab.train", "-m", *QUICK, "trainer.max_steps=6", "test=false", "seed=0,1,2", "hydra/launcher=parallel",
        "+callbacks.stop._target_=recording_callbacks.SignalAt", "+callbacks.stop.step=3", "+callbacks.stop.job=1",
        "+callbacks.stop.signal=SIGKILL", "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 3 jobs did not complete" in result.stderr
    jobs = read_sweep(tmp_path / "sweep")
    assert [job.status for job in jobs] == ["completed", "failed", "completed"]
    assert jobs[1].error.startswith("JobKilled: killed by SIGKILL")
    assert all(job.metrics["steps"] == 6 for job in (jobs[0], jobs[2]))


def test_a_sweep_into_a_folder_that_holds_a_sweep_is_refused(tmp_path, cache_dir):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}\n")
    result = run_command("nerf_lab.train", "-m", *QUICK, "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir)
    assert "hydra.sweep.dir=sweep already holds a sweep (multirun.yaml)" in one_line_error(result)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["multirun.yaml"]


def _submitit_sweep_stopped_at_step_3(tmp_path, cache_dir, signal_name, then=None):
    return run_command(
        "nerf_lab.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *QUICK, "trainer.max_steps=6",
        "test=false", "seed=0,1", "+callbacks.stop._target_=recording_callbacks.SignalAt", "+callbacks.stop.step=3",
        f"+callbacks.stop.signal={signal_name}", "+callbacks.stop.job=1", *([f"+callbacks.stop.then={then}"] if then else []),
        "hydra.sweep.dir=sweep", cwd=tmp_path, cache=cache_dir,
    )


@pytest.mark.slow  # a sweep of two jobs through submitit
def test_a_submitit_job_sent_sigterm_is_recorded_interrupted_and_the_sweep_summarised(tmp_path, cache_dir, tests_on_path):
    """submitit ignores SIGTERM in its jobs; while a run trains, nerf_lab's handler owns it,
    as SIGTERM in a run: the job stops after the step, recorded, and is not requeued."""
    result = _submitit_sweep_stopped_at_step_3(tmp_path, cache_dir, "SIGTERM")
    assert result.returncode == 1, result.stderr[-3000:]
    jobs = read_sweep(tmp_path / "sweep")
    assert [job.status for job in jobs] == ["completed", "interrupted"]
    assert "interrupted by SIGTERM at step 3" in jobs[1].error
    assert torch.load(jobs[1].path / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 3


@pytest.mark.slow  # a sweep of two jobs through submitit, one of them twice
@pytest.mark.parametrize(("first", "then"), [("SIGUSR2", None), ("SIGTERM", "SIGUSR2")], ids=["time-out", "pre-emption"])
def test_a_preempted_submitit_job_is_requeued_and_resumes_where_it_stopped(tmp_path, cache_dir, tests_on_path, first, then):
    """SIGUSR2 is submitit's pre-emption and time-out signal (SLURM sends it alone before a
    job's time runs out, and after SIGTERM when it pre-empts the job): the run stops after the
    step with last.ckpt and its record, submitit requeues the job with its first arguments,
    and the requeued job resumes the run from that checkpoint into the same folder. Had it
    started again from step 0, the callback would stop it at step 3 again, and again."""
    result = _submitit_sweep_stopped_at_step_3(tmp_path, cache_dir, first, then)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = read_sweep(tmp_path / "sweep")
    assert [job.status for job in jobs] == ["completed", "completed"]
    assert [job.metrics["steps"] for job in jobs] == [6, 6]
    assert not (jobs[1].path / "error.txt").exists()  # the stop's record went when the run went on
    logs = "".join(path.read_text(errors="replace") for path in (tmp_path / "sweep" / ".submitit").rglob("*_log.*"))
    assert logs.count(f"interrupted by {first} at step 3") == 1  # stopped once, requeued once
    assert "resuming the run in" in logs and f"{jobs[1].path.name}/checkpoints/last.ckpt" in logs


class _CrashAt:
    """A run that dies at the start of step `step` (as a SIGKILL would: nothing more is written)."""

    def __new__(cls, step: int):
        import pytorch_lightning as pl

        class CrashAt(pl.Callback):
            def on_train_batch_start(self, trainer, *args) -> None:
                if trainer.global_step == step:
                    raise RuntimeError("the machine went away")

        return CrashAt()


@pytest.mark.parametrize(
    ("overrides", "saved_step"),
    [
        # the first validation (step 5) writes last.ckpt, long before every_n_train_steps
        (["trainer.val_check_interval=5", "callbacks.last_checkpoint.every_n_train_steps=1000"], 5),
        # the wall-clock interval (here 6 ms: every step) writes it with no validation at all
        pytest.param(
            ["trainer.val_check_interval=1000", "callbacks.last_checkpoint.every_n_train_steps=1000",
             "callbacks.timed_checkpoint.train_time_interval.minutes=0.0001"], 7, marks=pytest.mark.slow,
        ),
    ],
)
def test_a_run_that_dies_resumes_from_the_first_validation_or_the_timed_checkpoint(make_cfg, overrides, saved_step):
    from omegaconf import open_dict

    from nerf_lab.train import train

    cfg = make_cfg("trainer.max_steps=9", *overrides)
    with open_dict(cfg):
        cfg.callbacks.crash = {"_target_": "test_run_lifecycle._CrashAt", "step": 7}
    with pytest.raises(RuntimeError, match="the machine went away"):
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == saved_step
