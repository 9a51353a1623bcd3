"""The GPU scripts (benchmarks/gpu_run.py): their budget arithmetic, and a rehearsal on the CPU
(`--toy`) whose clock runs out inside steps, showing that what was measured still comes back."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tarfile

import pytest

from conftest import REPO_ROOT, requires_lego
from user_commands import run_script

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from gpu_budget import Measured, best_plan, plan_run  # noqa: E402

# The H200 of 2026-11-29 (../shared/gpu-runs/2026-11-29-h200): the eager bench.
H200_EAGER = {"train_steps_per_s": 29.10, "render_s_per_view": 1.804, "timed_steps": 30, "compile": False}


def test_startup_is_the_bench_wall_time_less_its_timed_steps_and_view(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(H200_EAGER))
    measured = Measured.from_bench(path, wall_s=23.0)
    assert measured.startup_s == pytest.approx(23.0 - 30 / 29.10 - 1.804)
    assert (measured.steps_per_s, measured.s_per_view, measured.compile_s) == (29.10, 1.804, 0.0)
    # A compiled bench 63 s long, set against the eager start-up: the rest is compilation.
    path.write_text(json.dumps({**H200_EAGER, "train_steps_per_s": 36.25, "render_s_per_view": 1.748, "compile": True}))
    compiled = Measured.from_bench(path, wall_s=63.0, eager_startup_s=measured.startup_s)
    assert compiled.startup_s == measured.startup_s
    assert compiled.compile_s == pytest.approx(63.0 - 30 / 36.25 - 1.748 - measured.startup_s)
    path.write_text(json.dumps({**H200_EAGER, "train_steps_per_s": 0.0}))
    with pytest.raises(ValueError, match="train_steps_per_s"):
        Measured.from_bench(path, wall_s=10.0)


def test_a_run_trains_for_what_is_left_after_startup_validation_test_and_margin():
    """For every budget from 30 s to 1000 s: the plan's parts (start-up, training, its
    validations, the test, the margin) fill the budget exactly; it trains every whole step its
    training time holds; a longer budget never trains fewer steps; at most 7 validations; its
    clock (max_time) leaves the test and half the margin outside; too little time: no plan."""
    measured = Measured(steps_per_s=29.10, s_per_view=1.804, startup_s=20.0, compile_s=0.0)
    steps = 0
    for available in range(30, 1001, 5):
        plan = plan_run(float(available), measured, val_views=1, test_views=5, validations=6)
        if plan is None:
            assert steps == 0, f"{available} s: no plan after a plan of {steps} steps"
            continue
        parts = plan.startup_s + plan.compile_s + plan.train_s + plan.validation_s + plan.test_s + plan.margin_s
        assert parts == pytest.approx(available, abs=0.05)
        # every whole step of train_s (recorded to 0.01 s: ±0.15 of a step at 29.1 steps/s)
        assert plan.train_s * 29.10 - 1.15 < plan.max_steps <= plan.train_s * 29.10 + 0.15
        assert plan.max_steps >= steps and plan.max_steps // plan.val_check_interval <= 7
        assert plan.max_time_s == math.floor(available - plan.startup_s - plan.test_s - plan.margin_s / 2)
        steps = plan.max_steps
    assert steps > 0
    plan = plan_run(165.0, measured, val_views=1, test_views=5, validations=6)
    assert plan.limit_s == 165
    assert plan.overrides() == [f"trainer.max_steps={plan.max_steps}", f"trainer.val_check_interval={plan.val_check_interval}",
                                f"trainer.max_time=00:00:02:{plan.max_time_s - 120:02d}"]
    # The paper's 4.5 minutes cap the training; the compilation is paid before it.
    paper = plan_run(470.0, Measured(36.25, 1.748, 20.0, 40.0), val_views=1, test_views=25, train_cap_s=270)
    assert paper.train_s == 270 and paper.max_steps == math.floor(270 * 36.25)
    # gpu_budget's docstring example: the H200's eager bench, an arm of 165 s.
    h200 = plan_run(165.0, Measured(29.10, 1.804, 23.0 - 30 / 29.10 - 1.804), val_views=1, test_views=5)
    assert (h200.max_steps, h200.val_check_interval) == (3104, 517)
    # Fewer steps than validations: a validation every step, no more than budgeted.
    few = plan_run(200.0, Measured(0.33, 2.0, 20.0), val_views=1, test_views=5, validations=20, train_cap_s=60)
    assert (few.max_steps, few.val_check_interval) == (19, 1)
    # A validation at most 5 steps apart: their time comes out of the training's, in closed form.
    often = plan_run(1000.0, Measured(3.0, 1.0, 20.0), val_views=1, test_views=2, validations=20, max_val_interval=5)
    train_s = (1000.0 - 20.0 - 2.0 - 100.0 - 1.0) / (1 + 3.0 * 1.0 / 5)
    assert often.train_s == pytest.approx(train_s, abs=0.01) and often.max_steps == math.floor(train_s * 3.0)
    assert often.val_check_interval == 5
    assert often.train_s + often.validation_s == pytest.approx(1000.0 - 20.0 - 2.0 - 100.0, abs=0.02)
    # Too little time: no run, rather than a run that cannot test.
    assert plan_run(60.0, Measured(29.10, 1.804, 20.0, 40.0), 1, 25) is None


def test_compiling_pays_only_when_the_run_is_long_enough():
    """best_plan takes the path that trains more steps: compiled only once its faster steps
    make up for the 40 s of compilation. With views of 2 s (7 validations, 5 test views) and a
    10 % margin, the compiled run trains 0.9 T − 60 − 24 s and the eager one 0.9 T − 20 − 24:
    equal steps at T = (36.25 · 84 − 29.10 · 44) / (0.9 · 7.15) ≈ 274.2 s."""
    paths = {"eager": Measured(29.10, 2.0, 20.0), "compile": Measured(36.25, 2.0, 20.0, 40.0)}
    break_even = (36.25 * 84 - 29.10 * 44) / (0.9 * (36.25 - 29.10))
    assert best_plan(break_even - 2, paths, 1, 5)[0] == "eager"
    assert best_plan(break_even + 2, paths, 1, 5)[0] == "compile"
    name, plan = best_plan(1000.0, {"eager": paths["eager"], "compile": None}, 1, 5)
    assert name == "eager" and plan == plan_run(1000.0, paths["eager"], 1, 5)
    assert best_plan(30.0, paths, 1, 5) is None  # no path fits


def test_seeds_sharing_the_gpu_are_each_planned_at_a_share_of_the_bench():
    """`white`: 3 seeds of an arm train at once, each planned at a third of the speed its bench
    measured alone and with views three times as slow. With the H200's paper-model bench of
    2026-12-04 (28.32 steps/s, 1.915 s a view, 22.2 s of start-up) and an arm of 143 s: 5 test
    views and 4 + 1 validations of one view at 5.745 s, a 14.3 s margin, so each seed trains
    143 − 22.2 − 10 · 5.745 − 14.3 = 49.05 s at 9.44 steps/s: 463 steps."""
    import gpu_run

    alone = Measured(28.32, 1.915, 22.2)
    shared, plan = gpu_run.shared_plan(143.0, alone, 3, gpu_run.GPU)
    assert (shared.steps_per_s, shared.s_per_view, shared.startup_s) == pytest.approx((9.44, 5.745, 22.2))
    assert plan.train_s == pytest.approx(143 - 22.2 - 10 * 5.745 - 14.3, abs=0.01)
    assert plan.max_steps == 463 and plan.val_check_interval == 463 // 4
    assert gpu_run.shared_plan(60.0, alone, 3, gpu_run.GPU)[1] is None  # no training time left: not run
    assert [arm[0] for arm in gpu_run.WHITE_ARMS] == ["lite_pe", "lite_pe_raw", "paper_pe"]


@pytest.mark.slow
@requires_lego
def test_a_toy_rehearsal_cut_inside_its_steps_still_returns_what_it_measured(tmp_path, cache_dir):
    """`study --toy` on this CPU with the clock running out inside steps: the compiled and grid
    benches after 1 s, the γ(p) arm after 90 s (mid-training: the part's 3000 s plan it for
    over 1000 s, validating at least every 5 steps), the γ(p) + xyz arm after 1 s.
    The out folder, and the archive packed into $OUT, hold the tests' output, the eager bench's
    figures, the arms' budget and the cut arm's partial curve.csv and TensorBoard events;
    never a checkpoint."""
    out, ship = tmp_path / "study", tmp_path / "OUT"
    env = {"OUT": str(ship), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "GPU_BUDGET_S": "3000", "GPU_GRACE_S": "10", "GPU_LIMIT_BENCH_COMPILE": "1", "GPU_LIMIT_BENCH_GRID": "1",
           "GPU_LIMIT_WHITE_PE": "90", "GPU_LIMIT_WHITE_PE_RAW": "1"}
    result = run_script(REPO_ROOT / "benchmarks/gpu_run.py", "study", "--toy", "--out", str(out), "--work", str(tmp_path / "work"),
                        cwd=tmp_path, cache=cache_dir, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    steps = {step["step"]: step["status"] for step in json.loads((out / "steps.json").read_text())}
    assert steps == {"tests": "done", "bench_eager": "done", "bench_compile": "stopped at its limit",
                     "bench_grid": "stopped at its limit", "3_white_pe": "stopped at its limit", "3_white_pe_raw": "stopped at its limit"}
    assert "skipped" in (out / "1_gpu_tests.txt").read_text()  # no CUDA here: every gpu test skips, with its reason
    assert json.loads((out / "2_bench_eager.json").read_text())["train_steps_per_s"] > 0
    assert not (out / "2_bench_compile.json").exists()
    budget = json.loads((out / "budget_white_arm.json").read_text())
    with (out / "3_white_pe" / "curve.csv").open() as file:
        curve = list(csv.DictReader(file))
    steps_seen = [int(row["step"]) for row in curve]
    assert steps_seen and steps_seen == sorted(steps_seen) and steps_seen[-1] < budget["max_steps"]  # cut mid-run
    assert all(int(step) % budget["val_check_interval"] == 0 for step in steps_seen)
    assert list((out / "3_white_pe" / "tensorboard").rglob("events.out.tfevents.*"))
    summary = (out / "summary.md").read_text()
    assert "3_white_pe: stopped at its limit" in summary and "bench_eager: " in summary
    assert not list(out.rglob("*.ckpt"))

    with tarfile.open(ship / "study.tgz") as archive:
        names = archive.getnames()
    assert {"study/2_bench_eager.json", "study/3_white_pe/curve.csv", "study/summary.md"} <= set(names)
    assert not [name for name in names if name.endswith(".ckpt")]
    assert (ship / "study_summary.md").read_text() == summary


@pytest.mark.slow
@requires_lego
def test_a_toy_white_rehearsal_returns_each_seeds_records_and_the_count_of_stuck_runs(tmp_path, cache_dir):
    """`white --toy` with the paper model's bench cut after 1 s (so its arm is not run, saying
    why) and the second arm after 1 s: the first arm's three seeds train at once and each
    comes back with its curve and test record; the summary counts the stuck runs of every
    arm that ran; no checkpoint comes back."""
    out, ship = tmp_path / "white", tmp_path / "OUT"
    env = {"OUT": str(ship), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "GPU_BUDGET_S": "1200", "GPU_GRACE_S": "10", "GPU_LIMIT_BENCH_PAPER": "1", "GPU_LIMIT_WHITE_LITE_PE_RAW": "1"}
    result = run_script(REPO_ROOT / "benchmarks/gpu_run.py", "white", "--toy", "--out", str(out), "--work", str(tmp_path / "work"),
                        cwd=tmp_path, cache=cache_dir, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = {step["step"]: step["status"] for step in json.loads((out / "steps.json").read_text())}
    assert steps["bench_lite"] == "done" and steps["bench_paper"] == "stopped at its limit"
    assert steps["white_lite_pe"] == "done" and steps["white_lite_pe_raw"] == "stopped at its limit"
    for seed in range(3):
        record = out / f"2_white_lite_pe_seed{seed}"
        assert (record / "curve.csv").is_file() and (record / "test_views.csv").is_file()
        assert json.loads((record / "metrics.json").read_text())["protocol"]["views"] == 2
    summary = (out / "summary.md").read_text()
    assert "the paper's model, γ(p) alone: not run (its bench measured nothing)" in summary
    assert "runs stuck an arm: the original study's model, γ(p) alone: " in summary
    assert not list(out.rglob("*.ckpt"))
    with tarfile.open(ship / "white.tgz") as archive:
        assert "white/2_white_lite_pe_seed2/metrics.json" in archive.getnames()


def test_a_step_past_its_limit_is_stopped_and_what_it_wrote_comes_back(tmp_path):
    """A step that writes a run's curve and then hangs, ignoring SIGTERM: at its limit it gets
    SIGTERM, then SIGKILL after the grace; its records (no checkpoint) were copied into the out
    folder and packed into the ship folder while it ran."""
    from gpu_steps import Part

    run = tmp_path / "work" / "run"
    hang = (f"import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); run = pathlib.Path({str(run)!r}); "
            "(run / 'checkpoints').mkdir(parents=True); (run / 'checkpoints' / 'last.ckpt').write_text('weights'); "
            "(run / 'curve.csv').write_text('step,wall_s,val_psnr,val_ssim\\n10,1.0,12.5,0.5\\n'); time.sleep(60)")
    part = Part("study", tmp_path / "out", tmp_path / "work", budget_s=60, grace_s=1, ship_every_s=0.5, ship_to=tmp_path / "OUT")
    part.runs["3_white_pe"] = run
    assert part.run_step("white_pe", [sys.executable, "-c", hang], limit_s=3) == "stopped at its limit"
    assert (tmp_path / "out" / "3_white_pe" / "curve.csv").read_text().endswith("10,1.0,12.5,0.5\n")
    assert not list((tmp_path / "out").rglob("*.ckpt"))
    [record] = json.loads((tmp_path / "out" / "steps.json").read_text())
    assert record["status"] == "stopped at its limit" and 3 <= record["seconds"] < 10 and record["exit_code"] == -9
    with tarfile.open(tmp_path / "OUT" / "study.tgz") as archive:
        assert "out/3_white_pe/curve.csv" in archive.getnames()
    assert "white_pe: stopped at its limit" in (tmp_path / "OUT" / "study_summary.md").read_text()
    assert part.run_step("quick", [sys.executable, "-c", "pass"], limit_s=10) == "done"
    assert part.run_step("late", [sys.executable, "-c", "pass"], limit_s=0) == "skipped"


def test_runs_side_by_side_in_one_step_each_record_themselves_when_stopped(tmp_path):
    """`white` runs an arm's seeds at once in one step: at the limit each gets the SIGTERM and,
    taking a moment to record itself (as a training run writes error.txt and last.ckpt), still
    does so before the shell ends the step."""
    import shlex

    from gpu_run import side_by_side
    from gpu_steps import Part

    def run(index: int) -> str:
        code = (f"import pathlib, signal, sys, time\n"
                f"def stop(*_):\n    time.sleep(1); pathlib.Path({str(tmp_path)!r}, 'error{index}.txt').write_text('stopped'); sys.exit(143)\n"
                f"signal.signal(signal.SIGTERM, stop)\ntime.sleep(60)")
        return shlex.join([sys.executable, "-c", code])

    part = Part("white", tmp_path / "out", tmp_path / "work", budget_s=60, grace_s=10, ship_every_s=0.5)
    assert part.run_step("white_lite_pe", side_by_side([run(i) for i in range(3)]), limit_s=3) == "stopped at its limit"
    assert sorted(path.name for path in tmp_path.glob("error*.txt")) == ["error0.txt", "error1.txt", "error2.txt"]
    [record] = json.loads((tmp_path / "out" / "steps.json").read_text())
    assert record["seconds"] < 10  # ended when the runs had recorded themselves, not at the SIGKILL


def test_an_archive_too_large_to_return_is_packed_without_the_events(tmp_path, monkeypatch):
    """The device returns no file over 16 MiB: an out folder whose archive would be larger is
    packed without its TensorBoard events (and says so once), its other records kept."""
    import gpu_steps

    run = tmp_path / "work" / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(os.urandom(4096))
    (run / "curve.csv").write_text("step,wall_s,val_psnr,val_ssim\n5,1.0,10.0,0.3\n")
    monkeypatch.setattr(gpu_steps, "SHIP_LIMIT_BYTES", 2048)
    part = gpu_steps.Part("paper", tmp_path / "out", tmp_path / "work", budget_s=60, ship_to=tmp_path / "OUT")
    part.runs["2_paper"] = run
    part.ship()
    part.ship()
    with tarfile.open(tmp_path / "OUT" / "paper.tgz") as archive:
        names = archive.getnames()
    assert "out/2_paper/curve.csv" in names and not [name for name in names if "tensorboard" in name]
    assert list((tmp_path / "out" / "2_paper" / "tensorboard").iterdir())  # still in the out folder itself
    assert (tmp_path / "out" / "summary.md").read_text().count("packed without them") == 1


def test_a_given_out_folder_holding_files_is_refused_with_one_line(tmp_path, cache_dir):
    from user_commands import one_line_error

    out = tmp_path / "study"
    out.mkdir()
    (out / "summary.md").write_text("an earlier run's\n")
    result = run_script(REPO_ROOT / "benchmarks/gpu_run.py", "study", "--toy", "--out", str(out), "--work", str(tmp_path / "work"),
                        cwd=tmp_path, cache=cache_dir, env={"PYTHONPATH": str(REPO_ROOT / "src")}, timeout=120)
    assert one_line_error(result) == f"error: --out {out} already holds files: give a fresh folder"
    assert [path.name for path in out.iterdir()] == ["summary.md"] and not (tmp_path / "work").exists()


@pytest.mark.slow
@requires_lego
def test_the_fast_part_rehearsed_returns_the_ngp_bench_run_and_a_cut_two_pass_bench(tmp_path, cache_dir):
    """`fast --toy` on this CPU: the bench of model=ngp, a short model=ngp run with its test
    (the toy's 25 test views at 32 px), then the two-pass bench cut after 1 s. The out folder
    holds the bench's figures (field evaluations a ray, seconds a view), the run's budget,
    curve.csv and metrics, the cut step named as such; never a checkpoint."""
    out = tmp_path / "fast"
    env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "GPU_BUDGET_S": "1500", "GPU_GRACE_S": "10", "GPU_LIMIT_BENCH_TWO_PASS": "1"}
    result = run_script(REPO_ROOT / "benchmarks/gpu_run.py", "fast", "--toy", "--out", str(out), "--work", str(tmp_path / "work"),
                        cwd=tmp_path, cache=cache_dir, env=env, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    steps = {step["step"]: step["status"] for step in json.loads((out / "steps.json").read_text())}
    assert steps["bench_ngp"] == "done" and steps["2_ngp"] == "done" and steps["bench_two_pass"] == "stopped at its limit"
    bench = json.loads((out / "1_bench_ngp.json").read_text())
    assert bench["config"]["model"]["_target_"].endswith("NGPField") and 0 < bench["field_evals_per_ray"] <= 32
    assert bench["render_s_per_view"] > 0
    budget = json.loads((out / "budget_ngp.json").read_text())
    metrics = json.loads((out / "2_ngp" / "metrics.json").read_text())
    assert metrics["steps"] <= budget["max_steps"] and "test/psnr" in metrics
    assert (out / "2_ngp" / "curve.csv").is_file() and not (out / "3_bench_two_pass.json").exists()
    summary = (out / "summary.md").read_text()
    assert "model=ngp (" in summary and "test PSNR" in summary and "bench_two_pass: stopped at its limit" in summary
    assert not list(out.rglob("*.ckpt"))
