"""Benchmark a training config: `python -m nerf_lab.bench [overrides]`.

Times the real training loop (Lightning, data, model, optimiser) after a warm-up, in steps/s
and rays/s; times the rendering of whole test views; reports peak memory. It also measures
this machine's matrix-product throughput at the MLP's shape and precision and sets it against
the MLP's floating-point work a step: the ratio says how close the step is to the bound that
the hardware puts on it, and what a faster step would have to beat.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nerf_lab.cli import hydra_command, run_task
from nerf_lab.errors import ConfigError
from nerf_lab.config import resolvers  # noqa: F401 (registers the config's resolvers before Hydra composes it)
from nerf_lab.runs.checkpoints import load_initial_weights
from nerf_lab.config.build import build_run
from nerf_lab.config.compose import CONF_DIR
from nerf_lab.training.hardware import keep_freed_memory, resolve_precision
from nerf_lab.runs.records import format_table, write_json_atomically
from nerf_lab.analysis.curves import PSNR_MILESTONES, read_curve_csv, time_to_psnr
from nerf_lab.analysis.benchmarking import (
    FieldEvalMeter,
    ProfileSteps,
    StepTimer,
    device_description,
    matmul_throughput,
    peak_memory_mb,
    seconds_per_view,
)


def benchmark(cfg: DictConfig) -> dict[str, Any]:
    keep_freed_memory()
    run = build_run(cfg)  # the values checked, the seed set, the data module and LightningModule built
    datamodule, module = run.datamodule, run.module
    warmup, steps, profile_steps = cfg.bench.warmup_steps, cfg.bench.steps, cfg.bench.profile_steps
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    if cfg.bench.get("init_from"):  # time a trained field (and its grid), not a fresh one
        load_initial_weights(module, cfg.bench.init_from, "bench.init_from")
    if cfg.compile:  # as `nerf_lab.train` does: the compiled step is what is timed
        module.renderer.compile_fields()

    # Timed steps after the warm-up, then the profiled ones; the schedule spans all of them.
    timer = StepTimer(warmup, stop_step=warmup + steps)
    profiler = ProfileSteps(warmup + steps) if profile_steps > 0 else None
    meter = FieldEvalMeter(warmup, warmup + steps)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        max_steps=warmup + steps + profile_steps,
        precision=precision,
        val_check_interval=10**9,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, meter] + ([profiler] if profiler else []),
    )
    trainer.fit(module, datamodule=datamodule)
    device = trainer.strategy.root_device

    # Rendering whole test views, as evaluation does.
    datamodule.setup("test")
    module.to(device).eval()
    views = list(datamodule.test_dataloader())[: cfg.bench.render_views]
    render_seconds = seconds_per_view(module.renderer, views, module.chunk, bf16=precision.startswith("bf16"))

    steps_per_s = timer.timed_steps / timer.seconds
    evals_per_ray = meter.mean()
    occupied_fraction = module.renderer.sampler.statistics().get("occupied_fraction")
    occupied = None if occupied_fraction is None else float(occupied_fraction)
    measured = evals_per_ray if math.isfinite(evals_per_ray) else None
    batch_rays = datamodule.batch_rays
    flops = batch_rays * module.renderer.training_flops_per_ray(measured)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    # The bound: a hidden layer's matrix product at this step's shape (points × width²).
    points = batch_rays * module.renderer.sampler.n_coarse
    width = module.renderer.hidden_width
    peak = matmul_throughput(points, width, device, dtype) if width else math.nan  # no linear layer: no such bound
    results = {
        "device": device_description(device),
        "precision": precision,
        "train_steps_per_s": round(steps_per_s, 3),
        "train_rays_per_s": round(steps_per_s * batch_rays),
        "field_evals_per_ray": round(evals_per_ray, 2),
        "occupied_fraction": None if occupied is None else round(occupied, 4),
        "render_s_per_view": round(render_seconds, 4),
        "render_resolution": list(views[0].rgb.shape[:2]),
        "render_chunk": module.chunk,
        "compile": bool(cfg.compile),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "mlp_gflop_per_step": round(flops / 1e9, 3),
        "matmul_tflops_measured": round(peak / 1e12, 3),
        "mlp_bound_steps_per_s": round(peak / flops, 2),
        "fraction_of_mlp_bound": round(steps_per_s * flops / peak, 3),
        "timed_steps": timer.timed_steps,
        "torch": torch.__version__,
        "config": {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "encoding", "sampling", "data", "optim")},
    }
    rows = [
        ["training", f"{results['train_steps_per_s']:.2f} steps/s", f"{results['train_rays_per_s']:,} rays/s"],
        ["field evaluations", f"{evals_per_ray:.1f} a ray", "no occupancy grid" if occupied is None else f"grid {occupied:.1%} occupied"],
        ["rendering", f"{render_seconds:.3f} s a view", f"{results['render_resolution'][1]}×{results['render_resolution'][0]} px"],
        ["peak memory", f"{results['peak_mem_mb']:.0f} MB", "GPU allocated" if device.type == "cuda" else "process RSS"],
        ["MLP bound", f"{results['mlp_bound_steps_per_s']:.2f} steps/s", f"{results['mlp_gflop_per_step']} GFLOP a step at {results['matmul_tflops_measured']} TFLOP/s"],
        ["step / bound", f"{results['fraction_of_mlp_bound']:.0%}", "of the matrix-product bound"],
    ]
    if cfg.bench.get("curve_from"):
        seconds = time_to_psnr_of_run(Path(cfg.bench.curve_from))
        results["time_to_psnr_s"] = {f"{m:g}": s for m, s in seconds.items()}
        rows += [
            [f"time to {m:g} dB", "not reached" if s is None else f"{s:.0f} s", f"val PSNR, {cfg.bench.curve_from}"]
            for m, s in seconds.items()
        ]
    output_dir = Path(cfg.paths.output_dir)
    if profiler is not None:
        table, stages = profiler.summary(device)
        results["profile_ms_per_step"] = stages
        (output_dir / "profile.txt").write_text(table)
        print(f"\nprofile of {profiler.profiled_steps} steps (also in {output_dir / 'profile.txt'}):\n{table}")
        rows += [
            [f"profile: {name}", f"{ms:.2f} ms a step", f"{ms / stages['step']:.0%} of the profiled step"]
            for name, ms in stages.items()
        ]
    print(f"\n{results['device']}, {precision}{', compiled' if cfg.compile else ''}\n" + format_table(rows, ["what", "figure", "detail"]))
    write_json_atomically(output_dir / "bench.json", results)
    if cfg.bench.json_path:
        write_json_atomically(Path(cfg.bench.json_path), results)
    return results


def time_to_psnr_of_run(run_dir: Path) -> dict[float, float | None]:
    """Seconds from the start of a run's fit to its first validation at each of
    `PSNR_MILESTONES` dB (None: not reached), read from its `curve.csv` (validations
    included in the seconds). Raises `ConfigError` naming `bench.curve_from` when the run
    folder has no curve."""
    path = run_dir / "curve.csv"
    if not path.is_file():
        raise ConfigError(f"bench.curve_from={str(run_dir)!r} is not allowed: expected a run folder with a curve.csv", key="bench.curve_from")
    return time_to_psnr(read_curve_csv(path), PSNR_MILESTONES)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def _main(cfg: DictConfig) -> None:
    run_task(benchmark, cfg)


main = hydra_command(_main)

if __name__ == "__main__":
    main()
