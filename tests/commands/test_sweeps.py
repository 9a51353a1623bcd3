"""Real Hydra multiruns: job folders, the summary of a sweep with a failed job, and the report."""

import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from conftest import FAST_OVERRIDES
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from user_commands import run_command

from nerf_lab.analysis.curves import remove_gaps, splice_resumed
from nerf_lab.analysis.report import build_report, render_markdown
from nerf_lab.analysis.stats import group_into_arms
from nerf_lab.analysis.summary import from_json
from nerf_lab.runs.records import JobResult, read_sweep

SWEEP_OVERRIDES = [o for o in FAST_OVERRIDES if not o.startswith("sampling.n_c")] + ["trainer.max_steps=6", "trainer.val_check_interval=3"]


@pytest.mark.slow  # a real multirun: several training processes
def test_the_promised_sweep_makes_four_complete_job_folders(tmp_path, cache_dir):
    result = run_command(
        "nerf_lab.train", "-m", "model.depth=2,4", "sampling.n_c=8,16", *SWEEP_OVERRIDES, "hydra.sweep.dir=sweep",
        cwd=tmp_path, cache=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = read_sweep(tmp_path / "sweep")
    assert len(jobs) == 4
    for job in jobs:
        assert job.status == "completed" and job.metrics["steps"] == 6
        events = EventAccumulator(str(job.path / "tensorboard"))
        events.Reload()
        assert "val/psnr" in events.Tags()["scalars"]
    swept = {tuple(o for o in job.overrides if o.startswith(("model.depth", "sampling.n_c"))) for job in jobs}
    assert swept == {(f"model.depth={d}", f"sampling.n_c={n}") for d in (2, 4) for n in (8, 16)}
    # Folders are numbered and name their overrides, cut short (with a hash) past 120 characters.
    names = [job.path.name for job in jobs]
    assert [name.split("_", 1)[0] for name in names] == ["0", "1", "2", "3"]
    assert len(set(names)) == 4 and max(map(len, names)) <= 120
    assert "| job" in result.stdout and (tmp_path / "sweep" / "summary.md").is_file()


@pytest.fixture(scope="module")
def sweep_with_a_failure(tmp_path_factory, cache_dir) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("sweep")
    result = run_command(
        "nerf_lab.train", "-m", "model.depth=0,1,2", "seed=0,1", *SWEEP_OVERRIDES, "hydra.sweep.dir=sweep",
        cwd=folder, cache=cache_dir,
    )
    return folder / "sweep", result


@pytest.mark.slow  # a real multirun: several training processes
def test_a_failed_job_is_reported_and_the_others_still_run(sweep_with_a_failure):
    sweep, result = sweep_with_a_failure
    assert result.returncode == 1  # the sweep says something failed
    jobs = read_sweep(sweep)
    assert [job.status for job in jobs] == ["failed", "failed", "completed", "completed", "completed", "completed"]
    assert "model.depth=0 is not allowed" in jobs[0].error
    summary = (sweep / "summary.md").read_text()
    assert summary.count("failed: ConfigError: model.depth=0 is not allowed") == 2
    assert "2 of 6 jobs did not complete" in result.stderr


@pytest.mark.slow  # a real multirun: several training processes
def test_report_of_a_sweep_with_two_arms_and_a_failed_one(sweep_with_a_failure, tmp_path):
    sweep, _ = sweep_with_a_failure
    summary = build_report(sweep, tmp_path / "report", title="depth")
    arms = {arm["name"]: arm for arm in summary["arms"]}
    assert set(arms) == {"model.depth=0", "model.depth=1", "model.depth=2"}
    assert arms["model.depth=0"]["completed"] == 0
    assert [run["state"] for run in summary["runs"] if run["arm"] == "model.depth=0"] == ["failed", "failed"]

    # The table's numbers are the runs' own: best val/psnr is the best point of their curves,
    # and the early comparison reads each curve's first point.
    for arm in ("model.depth=1", "model.depth=2"):
        bests, firsts = [], []
        for job in arms[arm]["jobs"]:
            events = EventAccumulator(str(sweep / job / "tensorboard"))
            events.Reload()
            curve = events.Scalars("val/psnr")
            bests.append(max(event.value for event in curve))
            firsts.append(curve[0].value)
            assert curve[0].step == summary["early"]["step"]
        assert arms[arm]["stats"]["val/psnr_best"]["mean"] == pytest.approx(sum(bests) / 2, abs=1e-4)
        assert arms[arm]["stats"]["val/psnr_best"]["n"] == 2
        assert summary["early"]["arms"][arm]["mean"] == pytest.approx(sum(firsts) / 2, abs=1e-4)

    report = (tmp_path / "report" / "report.md").read_text()
    # report.json is the summary returned, and it alone renders report.md again, byte for byte.
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == summary
    assert render_markdown(from_json(summary)) == report
    assert re.search(r"\| model.depth=1 +\| 2/2 +\| \d+\.\d\d ± \d+\.\d\d", report)
    assert "model.depth=0" in report and "failed" in report
    assert len(summary["comparisons"]) == 1 and "Welch's t-test" in summary["comparisons"][0]["verdict"]
    assert len(summary["early"]["comparisons"]) == 1 and "Early convergence" in report
    for figure in ("curves.png", "test_view.png"):
        image = iio.imread(tmp_path / "report" / figure)
        assert image.ndim == 3 and image.shape[0] > 30
    orbit = iio.imread(tmp_path / "report" / "orbit.gif", index=None)
    # two arms side by side, each rendered at 32 px and shown at 256 (MIN_TILE) under its name
    from nerf_lab.visuals.panels import LABEL_HEIGHT

    assert orbit.shape[0] == 24 and orbit.shape[1] == LABEL_HEIGHT + 256 + 1 and orbit.shape[2] >= 2 * 256
    assert (orbit[0, :LABEL_HEIGHT, :256] < 100).any()  # the label's dark text
    grid = iio.imread(tmp_path / "report" / "test_view.png")
    assert grid.shape[1] > grid.shape[0]  # ground truth and two arms side by side


def test_report_command_on_a_missing_folder_is_one_line(tmp_path, cache_dir):
    result = run_command("nerf_lab.report", str(tmp_path / "nothing"), cwd=tmp_path, cache=cache_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: sweep folder {tmp_path / 'nothing'} does not exist"


def test_a_resumed_runs_curve_drops_the_redone_steps_and_the_time_it_was_down():
    # Steps 0-40 every 10 s; killed after step 40, resumed from step 20 an hour later.
    first = [(step, 10.0 * step / 10, 1.0) for step in range(0, 50, 10)]
    second = [(step, 3600.0 + 10.0 * (step - 20) / 10, 2.0) for step in range(30, 70, 10)]
    kept, gaps = splice_resumed(np.array(first + second))
    assert kept[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60]
    assert kept[:, 2].tolist() == [1, 1, 1, 2, 2, 2, 2]  # steps 30 and 40 from the resumed run
    (resumed_at, lost), = gaps
    assert resumed_at == 3610.0 and lost == pytest.approx(3610.0 - 30.0)
    # Without the hour it was down, the resumed run's steps keep the pace of 1 step/s.
    assert remove_gaps(kept, gaps)[:, 1].tolist() == pytest.approx([0, 10, 20, 30, 40, 50, 60])


def test_a_run_resumed_in_its_folder_stays_in_its_arm():
    def job(name, *overrides):
        return JobResult(Path(name), list(overrides), "completed")

    jobs = [
        job("0", "sampling.n_c=64", "seed=0", "trainer.enable_progress_bar=False"),
        job("1", "sampling.n_c=128", "seed=0", "trainer.enable_progress_bar=False"),
        # resumed: Hydra recorded the resume's command line in the job's folder
        job("2", "sampling.n_c=128", "seed=1", "trainer.enable_progress_bar=false", "ckpt_path='2/checkpoints/last.ckpt'", "hydra.run.dir='2'"),
    ]
    arms, shared = group_into_arms(jobs)
    assert [(arm.name, [j.path.name for j in arm.jobs]) for arm in arms] == [
        ("sampling.n_c=64", ["0"]),
        ("sampling.n_c=128", ["1", "2"]),
    ]
    assert shared == []  # run-only settings are neither arms nor shared settings
