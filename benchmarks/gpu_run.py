"""The GPU checks in four parts, each within 9 minutes, that always return what they measured.

    python benchmarks/gpu_run.py study [--toy] [--out DIR]    # (bash benchmarks/gpu.sh study …)
    python benchmarks/gpu_run.py paper [--toy] [--out DIR]
    python benchmarks/gpu_run.py white [--toy] [--out DIR]
    python benchmarks/gpu_run.py fast [--toy] [--out DIR]

study: 1. the `gpu` tests → 1_gpu_tests.txt; 2. nerf_lab.bench of experiment=paper_lego sampling=hierarchical (the paper's dense samples), eager,
compiled and with the occupancy grid (two passes) → 2_bench_{eager,compile,grid}.json; 3. the
white-minimum study, experiment=original_800_pe_only (800 px, no centre crop, dense), γ(p) alone
(3_white_pe/) then γ(p) + xyz (3_white_pe_raw/), one after the other with the same steps, each
given half of what is left; 4. the report with its images → 3_white_report/, and the verdict.
white: the white minimum settled: 1. nerf_lab.bench, eager, of the original study's own model
(experiment=original_lite_800_pe_only: 8 × 128, one pass of 128 samples, 512 rays) and of the
paper's (experiment=original_800_pe_only) → 1_bench_{lite,paper}.json; 2. three arms one after
the other, each of 3 seeds training at once on the GPU (one step: the seeds share the device, each
planned at a third of its bench's speed), 800 px, no centre crop, dense: the original model with
γ(p) alone, then with γ(p) + xyz, then the paper's model with γ(p) alone → 2_white_<arm>_seed<n>/;
3. the report → 3_white_report/, and per arm the runs stuck in the white minimum.
paper: 1. nerf_lab.bench of experiment=paper_lego sampling=hierarchical, eager and compiled → 1_bench_{eager,compile}.json;
2. that config for 4.5 minutes of training (less if the clock is short) on the path
that trains more steps, then its test over the 25 test views → 2_paper/; 3. its report →
3_paper_report/.
fast: 1. nerf_lab.bench of experiment=ngp_lego at 800 px (hash grid, fine steps through the
occupancy grid) → 1_bench_ngp.json; 2. experiment=ngp_lego at 800 px for 5 minutes of training
(less if the clock is short), then its test over the 25 test views → 2_ngp/; 3. the paper's
two-pass model on occupied space (experiment=paper_lego sampling=occupied_two_pass at a 128³ grid,
timed after the grid's warm-up: steps/s, field evaluations a ray, seconds a view) →
3_bench_two_pass.json; 4. the ngp run's report → 4_ngp_report/.

Each training run's path (eager or compiled) and steps come from gpu_budget.best_plan on the
measured speeds. Every step runs
under a limit (the part's clock, or GPU_LIMIT_<STEP> seconds from the environment, e.g.
GPU_LIMIT_WHITE_PE=40: a kill limit only, the plan stays the same): see gpu_steps.Part. The out
folder gets summary.md, log.txt, steps.json, budget_<run>.json and the runs' records (no
checkpoints; those stay under --work). With $OUT set, it is packed there after every copy.
--toy: toy sizes and a CPU's times, to rehearse everything on a CPU. A given --out must be
empty or new (exit status 2 otherwise); the default one gets a -<time> suffix if taken.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_budget import Measured, RunBudget, best_plan, plan_run  # noqa: E402
from gpu_steps import Part, python_command  # noqa: E402

from nerf_lab.analysis.stats import WHITE_MINIMUM_MARGIN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Step limits in seconds, before the part's clock cuts them; "arms_share": the part's share kept
# for the study's arms while the tests and benches run.
GPU = {
    "budget_s": 540, "grace_s": 30,
    "size": ["data.val_views=1"],
    "bench": ["bench.warmup_steps=10", "bench.steps=30"],
    "grid": ["sampling=occupancy", "sampling.n_f=128", "bench.warmup_steps=400", "bench.steps=40"],
    # fast: the paper's two passes on occupied space (256 coarse steps, 32 fine intervals alone).
    "two_pass": ["sampling=occupied_two_pass", "sampling.grid.resolution=128", "bench.warmup_steps=400",
                 "bench.steps=40"],
    "limits": {"tests": 120, "bench_eager": 60, "bench_compile": 110, "bench_grid": 80,
               "white_report": 60, "paper_report": 30},
    "arms_share": 0.55, "validations": 6, "max_val_interval": None, "white_test_views": 5,
    "paper_train_s": 270, "paper_compile": True, "paper_margin": 0.06,
    "white_seeds": 3, "white_validations": 4, "white_startup_shared": False,
    # fast: instant-ngp's settings at 800 px (16 levels to 2048, T = 2^19, diagonal / 1024).
    "ngp_size": ["data.resolution=800", "data.batch_rays=4096", "data.val_views=1", "sampling.n_c=1024",
                 "sampling.grid.resolution=128", "sampling.grid.warmup_steps=50", "sampling.grid.update_every=16",
                 "encoding.position.n_levels=16", "encoding.position.max_resolution=2048",
                 "encoding.position.log2_table_size=19"],
    "ngp_bench": ["bench.warmup_steps=80", "bench.steps=30"],
    "ngp_train_s": 300, "ngp_limits": {"bench_ngp": 90, "bench_two_pass": 80, "ngp_report": 30},
    # Without a measured speed: steps the schedule spans, and seconds kept for start-up and test.
    "ngp_blind_steps": 20000, "ngp_blind_reserve_s": 90,
}
# A rehearsal on a CPU: toy sizes, a CPU's times; the paper part eager (compiling takes minutes).
TOY = {
    "budget_s": 1500, "grace_s": 15,
    "size": ["data.resolution=32", "data.batch_rays=128", "model.width=32", "sampling.n_c=8", "sampling.n_f=8",
             "data.val_views=1", "sampling.chunk=4096"],
    "bench": ["bench.warmup_steps=2", "bench.steps=5"],
    "grid": ["sampling=occupancy", "sampling.n_f=8", "sampling.grid.warmup_steps=8", "sampling.grid.update_every=4",
             "bench.warmup_steps=12", "bench.steps=5"],
    "two_pass": ["sampling=occupied_two_pass", "sampling.n_c=32", "sampling.n_f=8", "sampling.grid.resolution=16",
                 "sampling.grid.warmup_steps=8", "sampling.grid.update_every=4", "bench.warmup_steps=12",
                 "bench.steps=5"],
    "limits": {"tests": 200, "bench_eager": 300, "bench_compile": 400, "bench_grid": 300,
               "white_report": 300, "paper_report": 300},
    # A validation at least every 5 steps: a rehearsal cut at any time has a curve, however
    # far the busy CPU's speed strays from what its bench measured.
    "arms_share": 0.55, "validations": 20, "max_val_interval": 5, "white_test_views": 2,
    "paper_train_s": 60, "paper_compile": False, "paper_margin": 0.06,
    # On 2 cores the seeds' start-ups share the cores as their steps do (on the GPU machine's 16
    # they run side by side).
    "white_seeds": 3, "white_validations": 20, "white_startup_shared": True,
    "ngp_size": ["data.resolution=32", "data.batch_rays=128", "data.val_views=1", "sampling.n_c=32",
                 "sampling.grid.resolution=16", "sampling.grid.warmup_steps=4", "sampling.grid.update_every=2",
                 "encoding.position.n_levels=4", "encoding.position.max_resolution=64",
                 "encoding.position.log2_table_size=12", "sampling.chunk=4096"],
    "ngp_bench": ["bench.warmup_steps=6", "bench.steps=5"],
    "ngp_train_s": 60, "ngp_limits": {"bench_ngp": 300, "bench_two_pass": 200, "ngp_report": 200},
    "ngp_blind_steps": 200, "ngp_blind_reserve_s": 200,
}
# The arms of the `white` part: (name, experiment, encoding, what it is).
WHITE_ARMS = [
    ("lite_pe", "original_lite_800_pe_only", "pe", "the original study's model, γ(p) alone"),
    ("lite_pe_raw", "original_lite_800_pe_only", "pe_raw", "the original study's model, γ(p) + xyz"),
    ("paper_pe", "original_800_pe_only", "pe", "the paper's model, γ(p) alone"),
]
# experiment=paper_lego with the paper's dense 64 + 128 samples, as the H200 figures of 2026-12-04
# were measured (its default is now sampling=occupied_two_pass, which the fast part benches).
PAPER_DENSE = ["experiment=paper_lego", "sampling=hierarchical"]
# The original study's model as the bench's overrides of experiment=paper_lego (n_f: no fine
# pass, also at toy sizes).
LITE = ["model=original_lite", "sampling=original_lite", "optim=original_lite", "data.batch_rays=512", "sampling.n_f=0"]


def limit(part: Part, step: str, own: float, keep_s: float = 0.0) -> float:
    """A step's seconds: GPU_LIMIT_<STEP> if set, else its own limit within the part's clock,
    keeping `keep_s` for the steps after it."""
    override = os.environ.get(f"GPU_LIMIT_{step.upper()}")
    if override:
        return float(override)
    return min(own, part.left_s() - keep_s)


def merged(*overrides: list[str]) -> list[str]:
    """Command-line overrides with each key once, the last value winning (as Hydra reads them),
    so that the logged command says plainly what ran."""
    by_key: dict[str, str] = {}
    for override in (o for group in overrides for o in group):
        by_key[override.split("=", 1)[0]] = override
    return list(by_key.values())


def bench(
    part: Part, mode: dict, name: str, file: str, extra: list[str], own: float, keep_s: float,
    config: Sequence[str] = PAPER_DENSE, size_key: str = "size",
) -> Measured | None:
    """Run nerf_lab.bench of `config` (the paper's, dense) at `mode[size_key]` with `extra`
    overrides into `file`; note its figures; return them with the start-up its wall time gives,
    or None if it gave none."""
    json_path = part.out / file
    overrides = merged(list(config), mode[size_key], mode["bench"], extra,
                       [f"bench.json_path={json_path}", f"hydra.run.dir={part.work / name}"])
    started = time.monotonic()
    status = part.run_step(name, python_command("nerf_lab.bench", *overrides), limit(part, name, own, keep_s))
    if status != "done" or not json_path.is_file():
        return None
    wall = time.monotonic() - started
    r = json.loads(json_path.read_text())
    width, height = r["render_resolution"][1], r["render_resolution"][0]
    part.note(f"- {name}: {r['train_steps_per_s']:.2f} steps/s ({r['train_rays_per_s']:,} rays/s), "
              f"{r['render_s_per_view']:.3f} s a {width}×{height} view, {r['field_evals_per_ray']} field "
              f"evaluations a ray, grid occupied {r['occupied_fraction']}, peak {r['peak_mem_mb']:.0f} MB, "
              f"{wall:.0f} s wall; {r['device']}, {r['precision']}")
    return Measured.from_bench(json_path, wall)


def bench_paths(part: Part, mode: dict, prefix: str, number: int, compile_too: bool, keep_s: float) -> dict:
    """Bench the eager path and, if `compile_too`, the compiled one (`<number>_bench_<path>.json`);
    the compiled path's start-up beyond the eager one's is its compilation."""
    limits = mode["limits"]
    eager = bench(part, mode, f"{prefix}eager", f"{number}_bench_eager.json", [], limits["bench_eager"], keep_s)
    if not compile_too:
        return {"eager": eager}
    compiled = bench(part, mode, f"{prefix}compile", f"{number}_bench_compile.json", ["compile=true"],
                     limits["bench_compile"], keep_s)
    if compiled and eager:
        compile_s = max(0.0, compiled.startup_s - eager.startup_s)
        compiled = Measured(compiled.steps_per_s, compiled.s_per_view, eager.startup_s, compile_s)
    return {"eager": eager, "compile": compiled}


def train_run(part: Part, name: str, run_dir: Path, overrides: list[str], limit_s: float) -> dict | None:
    part.runs[name] = run_dir
    # No view panels in TensorBoard: at 800 px their rendering and encoding is a test cost the
    # bench does not measure, and their ~2 MB each would not fit a returned file's 16 MiB; the
    # report's test-view grid shows the views.
    command = python_command("nerf_lab.train", *overrides, "callbacks.view_images=null",
                             "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}")
    part.run_step(name, command, limit_s)
    metrics = run_dir / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.is_file() else None


def curve_line(run_dir: Path) -> str:
    """The val PSNR curve of a run, from its curve.csv: first, best and last rows."""
    if not (run_dir / "curve.csv").is_file():
        return "no validation recorded"
    with (run_dir / "curve.csv").open() as file:
        rows = [row for row in csv.DictReader(file)]
    if not rows:
        return "no validation recorded"
    best = max(rows, key=lambda row: float(row["val_psnr"]))
    first, last = rows[0], rows[-1]
    return (f"val PSNR {float(first['val_psnr']):.2f} dB at step {first['step']} → best {float(best['val_psnr']):.2f} "
            f"at {best['step']} → {float(last['val_psnr']):.2f} at {last['step']} ({len(rows)} validations)")


def study(part: Part, mode: dict, toy: bool) -> None:
    limits = mode["limits"]
    keep_s = mode["arms_share"] * part.budget_s  # the tests and benches leave the arms their share
    tests_txt = part.out / "1_gpu_tests.txt"
    pytest = python_command("pytest", "-q", "-m", "gpu", str(ROOT / "tests/gpu/test_gpu.py"), "-rsP", "-p", "no:cacheprovider")
    part.run_step("tests", pytest, limit(part, "tests", limits["tests"], keep_s), output=tests_txt)
    tail = tests_txt.read_text().strip().splitlines()[-1:] if tests_txt.is_file() else []
    part.note(f"- gpu tests: {' '.join(tail).strip('= ') or 'no result'}")
    paths = bench_paths(part, mode, "bench_", 2, True, keep_s)
    bench(part, mode, "bench_grid", "2_bench_grid.json", mode["grid"], limits["bench_grid"], keep_s)

    report_s = min(limits["white_report"], 0.15 * part.left_s())
    arm_s = (part.left_s() - report_s) / 2
    chosen = best_plan(arm_s, paths, 1, mode["white_test_views"], mode["validations"],
                       max_val_interval=mode["max_val_interval"])
    if chosen is None:
        part.note(f"- white-minimum study: not run (no speed measured, or {arm_s:.0f} s an arm leave no training time)")
        return
    path, plan = chosen
    use_compile = path == "compile"
    plan.write(part.out / "budget_white_arm.json")
    part.note(f"- white-minimum arms: {arm_s:.0f} s each → {plan.train_s:.0f} s training, {plan.max_steps} steps at "
              f"{plan.steps_per_s:.2f} steps/s ({'compiled' if use_compile else 'eager'}), "
              f"validating every {plan.val_check_interval}")
    white = part.work / "white"
    for number, encoding in enumerate(("pe", "pe_raw")):
        overrides = ["experiment=original_800_pe_only", f"encoding={encoding}", "seed=0", *mode["size"],
                     f"data.test_views={mode['white_test_views']}", f"compile={str(use_compile).lower()}",
                     *plan.overrides()]
        run_dir = white / f"{number}_{encoding}"
        step = f"white_{encoding}"
        metrics = train_run(part, f"3_white_{encoding}", run_dir, overrides, limit(part, step, plan.limit_s))
        what = "γ(p) alone" if encoding == "pe" else "γ(p) + xyz"
        if metrics:
            blank = metrics.get("test/psnr_blank_image", math.nan)
            stuck = metrics["test/psnr"] <= blank + WHITE_MINIMUM_MARGIN
            verdict = "STUCK in the white minimum" if stuck else "left the white minimum"
            part.note(f"- white minimum, {what} ({encoding}): test PSNR {metrics['test/psnr']:.2f} dB against "
                      f"{blank:.2f} for the blank image: {verdict}; {metrics['steps']} steps, "
                      f"{metrics['steps_per_s']:.1f} steps/s; {curve_line(run_dir)}")
        else:
            part.note(f"- white minimum, {what} ({encoding}): no test; {curve_line(run_dir)}")
    if list(white.glob("*/metrics.json")):
        title = (f"original_800_pe_only: γ(p) alone vs γ(p) + xyz at 800 px, no centre crop, dense, seed 0, "
                 f"{plan.max_steps} steps each")
        report = python_command("nerf_lab.report", str(white), "--out", str(part.out / "3_white_report"), "--no-orbit",
                                "--title", title)
        part.run_step("white_report", report, limit(part, "white_report", part.left_s()))


def side_by_side(commands: list[str]) -> list[str]:
    """One step that runs shell `commands` at once, in one process group: the SIGTERM at the
    limit reaches each, and the shell waits for them to record themselves (`trap wait TERM`)
    instead of ending at once, which would leave them to the group's SIGKILL mid-record."""
    return ["bash", "-c", "trap wait TERM; " + " & ".join(commands) + " & wait"]


def shared_plan(arm_s: float, alone: Measured, seeds: int, mode: dict) -> tuple[Measured, RunBudget | None]:
    """The plan of each of `seeds` runs sharing the GPU for `arm_s` seconds: each at 1/seeds of
    the speed its bench measured alone, its views `seeds` times as slow (no gain assumed from
    sharing: a run that gets more of the device ends early), the start-up paid side by side
    (on a CPU rehearsal, `white_startup_shared`, `seeds` times as long)."""
    startup_s = alone.startup_s * (seeds if mode["white_startup_shared"] else 1)
    shared = Measured(alone.steps_per_s / seeds, alone.s_per_view * seeds, startup_s, 0.0)
    return shared, plan_run(arm_s, shared, 1, mode["white_test_views"], mode["white_validations"],
                            max_val_interval=mode["max_val_interval"])


def white(part: Part, mode: dict, toy: bool) -> None:
    """Three seeds an arm (WHITE_ARMS), the seeds of an arm training at once; each arm gets an
    equal share of what is left after the benches, less the report's time."""
    limits, seeds = mode["limits"], mode["white_seeds"]
    keep_s = 0.75 * part.budget_s  # the benches leave the arms and the report this much
    measured = {
        "lite": bench(part, mode, "bench_lite", "1_bench_lite.json", LITE, limits["bench_eager"], keep_s),
        "paper": bench(part, mode, "bench_paper", "1_bench_paper.json", [], limits["bench_eager"], keep_s),
    }
    report_s = min(limits["white_report"], 0.15 * part.left_s())
    folder = part.work / "white"
    stuck_counts: list[str] = []
    for index, (name, experiment, encoding, what) in enumerate(WHITE_ARMS):
        alone = measured["lite" if experiment.startswith("original_lite") else "paper"]
        arm_s = (part.left_s() - report_s) / (len(WHITE_ARMS) - index)
        if alone is None:
            part.note(f"- white minimum, {what}: not run (its bench measured nothing)")
            continue
        shared, plan = shared_plan(arm_s, alone, seeds, mode)
        if plan is None:
            part.note(f"- white minimum, {what}: not run ({arm_s:.0f} s leave no training time)")
            continue
        plan.write(part.out / f"budget_white_{name}.json")
        part.note(f"- white minimum, {what}: {seeds} seeds at once, {arm_s:.0f} s → {plan.train_s:.0f} s training, "
                  f"{plan.max_steps} steps each at {shared.steps_per_s:.2f} steps/s (a {seeds}-way share of "
                  f"{alone.steps_per_s:.2f}), validating every {plan.val_check_interval}")
        commands, run_dirs = [], []
        for seed in range(seeds):
            run_dir = folder / f"{index * seeds + seed}_{name}_seed{seed}"
            part.runs[f"2_white_{name}_seed{seed}"] = run_dir
            extra = ["sampling.n_f=0"] if experiment.startswith("original_lite") else []
            overrides = merged([f"experiment={experiment}", f"encoding={encoding}", f"seed={seed}"], mode["size"], extra,
                               [f"data.test_views={mode['white_test_views']}", "compile=false", *plan.overrides(),
                                "callbacks.view_images=null", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"])
            commands.append(shlex.join(python_command("nerf_lab.train", *overrides)))
            run_dirs.append(run_dir)
        part.run_step(f"white_{name}", side_by_side(commands), limit(part, f"white_{name}", plan.limit_s))
        stuck, tested = 0, 0
        for seed, run_dir in enumerate(run_dirs):
            metrics_file = run_dir / "metrics.json"
            if not metrics_file.is_file():
                part.note(f"  - seed {seed}: no test; {curve_line(run_dir)}")
                continue
            m = json.loads(metrics_file.read_text())
            blank = m.get("test/psnr_blank_image", math.nan)
            is_stuck = m["test/psnr"] <= blank + WHITE_MINIMUM_MARGIN
            stuck, tested = stuck + is_stuck, tested + 1
            part.note(f"  - seed {seed}: test PSNR {m['test/psnr']:.2f} dB against {blank:.2f} for the blank image: "
                      f"{'STUCK in the white minimum' if is_stuck else 'left the white minimum'}; {m['steps']} steps, "
                      f"{m['steps_per_s']:.1f} steps/s; {curve_line(run_dir)}")
        stuck_counts.append(f"{what}: {stuck} of {tested} tested runs stuck ({seeds - tested} not tested)")
    part.note("- white minimum, runs stuck an arm: " + ("; ".join(stuck_counts) or "no arm ran"))
    if list(folder.glob("*/metrics.json")):
        title = ("The white minimum at 800 px, no centre crop, dense: the original study's model (γ(p) alone, "
                 "γ(p) + xyz) and the paper's (γ(p) alone), 3 seeds an arm")
        report = python_command("nerf_lab.report", str(folder), "--out", str(part.out / "3_white_report"), "--no-orbit",
                                "--title", title)
        part.run_step("white_report", report, limit(part, "white_report", part.left_s()))


def paper(part: Part, mode: dict, toy: bool) -> None:
    limits = mode["limits"]
    paths = bench_paths(part, mode, "paper_bench_", 1, mode["paper_compile"], keep_s=1.4 * mode["paper_train_s"])
    report_s = min(limits["paper_report"], 0.1 * part.left_s())
    # A 6 % margin (not 10 %): after two benches, 4.5 minutes of compiled training fit 540 s only so.
    chosen = best_plan(part.left_s() - report_s, paths, 1, 25, mode["validations"],
                       train_cap_s=mode["paper_train_s"], margin_fraction=mode["paper_margin"],
                       max_val_interval=mode["max_val_interval"])
    if chosen is None:
        part.note("- paper recipe: not run (no speed measured, or no training time left)")
        return
    variant, plan = chosen
    compile_run = variant == "compile"
    plan.write(part.out / "budget_paper.json")
    short = "" if plan.train_s >= mode["paper_train_s"] else " (less than the 4.5 minutes: the clock was short)"
    part.note(f"- paper recipe: {plan.train_s:.0f} s training{short}, {plan.max_steps} steps at "
              f"{plan.steps_per_s:.2f} steps/s ({variant}), then the 25 test views")
    run_dir = part.work / "paper" / "0_paper_lego"
    overrides = [*PAPER_DENSE, *mode["size"], "data.test_views=null", f"compile={str(compile_run).lower()}",
                 *plan.overrides()]
    metrics = train_run(part, "2_paper", run_dir, overrides, limit(part, "paper", plan.limit_s))
    if metrics:
        m = metrics
        part.note(f"- paper recipe ({variant}, {m['precision']}): test PSNR {m.get('test/psnr', math.nan):.2f} dB, "
                  f"SSIM {m.get('test/ssim', math.nan):.3f} over the test views after {m['steps']} steps, "
                  f"{m['train_time_s']:.0f} s training ({m['steps_per_s']:.1f} steps/s), {m['wall_time_s']:.0f} s "
                  f"with validation and test; {m['device']}; {curve_line(run_dir)}")
        title = f"The paper recipe on Lego at 800 px, {plan.max_steps} steps ({plan.train_s:.0f} s of training)"
        report = python_command("nerf_lab.report", str(run_dir.parent), "--out", str(part.out / "3_paper_report"),
                                "--no-orbit", "--title", title)
        part.run_step("paper_report", report, limit(part, "paper_report", part.left_s()))
    else:
        part.note(f"- paper recipe: no test; {curve_line(run_dir)}")


def fast(part: Part, mode: dict, toy: bool) -> None:
    limits = mode["ngp_limits"]
    two_pass_s = limits["bench_two_pass"]
    ngp = bench(part, mode, "bench_ngp", "1_bench_ngp.json", mode["ngp_bench"], limits["bench_ngp"],
                keep_s=mode["ngp_train_s"] + two_pass_s, config=["experiment=ngp_lego"], size_key="ngp_size")
    # The two-pass bench and the report come after the training: their time is kept from it.
    report_s = min(limits["ngp_report"], 0.1 * part.left_s())
    chosen = best_plan(part.left_s() - two_pass_s - report_s, {"eager": ngp}, 1, 25, mode["validations"],
                       train_cap_s=mode["ngp_train_s"], margin_fraction=mode["paper_margin"],
                       max_val_interval=mode["max_val_interval"])
    run_dir = part.work / "ngp" / "0_ngp_lego"
    # Without a measured speed (the bench cut or failed) the run is still made, on the clock
    # alone: trainer.max_time stops it, the schedule planned for more steps than it will take.
    blind_s = part.left_s() - two_pass_s - report_s - mode["ngp_blind_reserve_s"]
    if chosen is None and (ngp is not None or blind_s < 30):
        part.note("- model=ngp training: not run (no training time left)")
    else:
        if chosen is None:
            train_s = min(mode["ngp_train_s"], blind_s)
            trainer = [f"trainer.max_steps={mode['ngp_blind_steps']}", f"trainer.val_check_interval={mode['ngp_blind_steps'] // 10}",
                       f"trainer.max_time=00:00:{int(train_s) // 60:02d}:{int(train_s) % 60:02d}"]
            part.note(f"- model=ngp: no speed measured; {train_s:.0f} s training by trainer.max_time, then the 25 test views")
        else:
            _, plan = chosen
            plan.write(part.out / "budget_ngp.json")
            trainer = plan.overrides()
            short = "" if plan.train_s >= mode["ngp_train_s"] else " (less than the 5 minutes: the clock was short)"
            part.note(f"- model=ngp: {plan.train_s:.0f} s training{short}, {plan.max_steps} steps at "
                      f"{plan.steps_per_s:.2f} steps/s, then the 25 test views")
        overrides = ["experiment=ngp_lego", *mode["ngp_size"], "data.test_views=null", *trainer]
        metrics = train_run(part, "2_ngp", run_dir, overrides, limit(part, "ngp", part.left_s(), keep_s=two_pass_s))
        if metrics:
            m = metrics
            part.note(f"- model=ngp ({m['precision']}): test PSNR {m.get('test/psnr', math.nan):.2f} dB, "
                      f"SSIM {m.get('test/ssim', math.nan):.3f} over the test views after {m['steps']} steps, "
                      f"{m['train_time_s']:.0f} s training ({m['steps_per_s']:.1f} steps/s), {m['wall_time_s']:.0f} s "
                      f"with validation and test; {m['device']}; {curve_line(run_dir)}")
        else:
            part.note(f"- model=ngp: no test; {curve_line(run_dir)}")
    # The paper's two passes on occupied space, timed after the grid's warm-up.
    bench(part, mode, "bench_two_pass", "3_bench_two_pass.json", mode["two_pass"], two_pass_s, keep_s=0.0)
    if (run_dir / "metrics.json").is_file():
        report = python_command("nerf_lab.report", str(run_dir.parent), "--out", str(part.out / "4_ngp_report"),
                                "--no-orbit", "--title", "model=ngp on Lego at 800 px")
        part.run_step("ngp_report", report, limit(part, "ngp_report", part.left_s()))


PARTS = {"study": study, "paper": paper, "white": white, "fast": fast}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_run.py", description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=list(PARTS))
    parser.add_argument("--toy", action="store_true", help="toy sizes and a CPU's times: a rehearsal on a CPU")
    parser.add_argument("--out", type=Path, default=None,
                        help="the out folder, fresh (default benchmarks/results/gpu/<part>, toy: outputs/gpu_toy/<part>)")
    parser.add_argument("--work", type=Path, default=None,
                        help="run folders, checkpoints included (default outputs/gpu_runs/<part>-<time>)")
    args = parser.parse_args(argv)
    toy = args.toy or os.environ.get("GPU_TOY") == "1"
    mode = TOY if toy else GPU
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = (args.out or ROOT / ("outputs/gpu_toy" if toy else "benchmarks/results/gpu") / args.part).resolve()
    if out.exists() and any(out.iterdir()):
        if args.out:
            print(f"error: --out {out} already holds files: give a fresh folder", file=sys.stderr)
            raise SystemExit(2)
        out = out.with_name(f"{out.name}-{stamp}")  # a rerun beside the first run's records
    ship_to = Path(os.environ["OUT"]).resolve() if os.environ.get("OUT") else None
    work = (args.work or ROOT / "outputs/gpu_runs" / f"{args.part}-{stamp}").resolve()
    # The steps run in the work folder: a default folder a command makes (Hydra's outputs/<date>/
    # <time> while it composes a config) lands there, never in the repository.
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    budget_s = float(os.environ.get("GPU_BUDGET_S", mode["budget_s"]))
    grace_s = float(os.environ.get("GPU_GRACE_S", mode["grace_s"]))
    part = Part(args.part, out, work, budget_s, grace_s, float(os.environ.get("GPU_SHIP_EVERY_S", 15)), ship_to)
    # The device tool's timeout, or a TERM by hand: end as after an exception (gpu_steps stops
    # the running step and ships its records).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device (CPU)"
    part.note(f"# GPU part `{args.part}`, {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
              f"{' (toy sizes: a rehearsal, no figure to report)' if toy else ''}")
    part.note(f"- machine: {device} | torch {torch.__version__} | clock {part.budget_s:.0f} s")
    PARTS[args.part](part, mode, toy)
    part.note(f"- done in {time.monotonic() - part.started:.0f} s")
    part.ship()


if __name__ == "__main__":
    main()
