"""Benchmark a training config: `python -m nerf_lab.bench [overrides]`.

Times the real training loop (Lightning, data, model, optimiser) after a warm-up, in steps/s
and rays/s; times the rendering of whole test views; reports peak memory. It also measures
this machine's matrix-product throughput at the MLP's shape and precision and sets it against
the MLP's floating-point work a step: the ratio says how close the step is to the bound that
the hardware puts on it, and what a faster step would have to beat.
"""

from __future__ import annotations

import math
import platform
import re
import resource
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nerf_lab.cli import hydra_command, run_task
from nerf_lab.nerf.field import NeRFField
from nerf_lab.nerf.model import NeRFModel, render_in_chunks
from nerf_lab.nerf.rays import RayBundle
from nerf_lab.training.checkpoints import load_initial_weights
from nerf_lab.training.config import CONF_DIR, build_datamodule, validate_config
from nerf_lab.training.hardware import auto_precision, keep_freed_memory
from nerf_lab.training.module import NeRFLitModule
from nerf_lab.training.runs import format_table, write_json_atomically


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Wall time of steps `warmup_steps` to `stop_step` (or the end), synchronised with the device."""

    def __init__(self, warmup_steps: int, stop_step: int | None = None) -> None:
        self.warmup_steps = warmup_steps
        self.stop_step = stop_step
        self.started: float | None = None
        self.seconds = 0.0
        self.timed_steps = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup_steps:
            _synchronise(trainer.strategy.root_device)
            self.started = time.perf_counter()
        elif trainer.global_step == self.stop_step:
            self._stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self.timed_steps:
            self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        _synchronise(trainer.strategy.root_device)
        if self.started is not None:
            self.seconds = time.perf_counter() - self.started
            self.timed_steps = trainer.global_step - self.warmup_steps


class FieldEvalMeter(pl.Callback):
    """Mean points sent to the fields a ray over steps `first_step` to `stop_step`, summed on
    the device (no host sync a step) from what the module keeps of its last step."""

    def __init__(self, first_step: int, stop_step: int) -> None:
        self.first_step, self.stop_step = first_step, stop_step
        self.total: torch.Tensor | None = None
        self.steps = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.first_step < trainer.global_step <= self.stop_step:
            evals = pl_module.last_field_evals_per_ray.float()
            self.total = evals if self.total is None else self.total + evals
            self.steps += 1

    def mean(self) -> float:
        return float(self.total) / self.steps if self.total is not None else float("nan")


class ProfileSteps(pl.Callback):
    """`torch.profiler` over the steps from `start_step` to the end of training."""

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.profiler: torch.profiler.profile | None = None
        self.profiled_steps = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.start_step:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if trainer.strategy.root_device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.profiler is not None:
            _synchronise(trainer.strategy.root_device)
            self.profiler.__exit__(None, None, None)
            self.profiled_steps = trainer.global_step - self.start_step

    def summary(self, device: torch.device, rows: int = 20) -> tuple[str, dict[str, float]]:
        """The operators that take the most time (a table), and the milliseconds a step spent
        in all operators (`step`) and in each stage that the model labels (`nerf.sampling`,
        `nerf.field`, `nerf.compositing`: forward only; the backward pass is in `step`)."""
        assert self.profiler is not None and self.profiled_steps > 0
        events = self.profiler.key_averages()
        on_gpu = device.type == "cuda"
        table = events.table(sort_by="self_cuda_time_total" if on_gpu else "self_cpu_time_total", row_limit=rows)

        def self_us(event: Any) -> float:
            return event.self_device_time_total if on_gpu else event.self_cpu_time_total

        def total_us(event: Any) -> float:
            return event.device_time_total if on_gpu else event.cpu_time_total

        per_step = 1e-3 / self.profiled_steps
        stages = {"step": round(sum(self_us(event) for event in events) * per_step, 3)}
        for event in events:
            if event.key.startswith("nerf."):
                stages[event.key] = round(total_us(event) * per_step, 3)
        return table, stages


def mlp_flops_per_step(model: NeRFModel, batch_rays: int, points_per_ray: float | None = None) -> float:
    """Floating-point operations of the fields' linear layers in one training step: forward
    2·in·out a point and layer; backward twice that (gradients of weights and inputs), but
    no input gradient for the first layer, whose input is the encoding (no parameters).
    `points_per_ray`: the points measured to reach the fields (both passes; with empty-space
    skipping fewer than the samples), counted at the coarse field's cost; else every sample."""

    def field_flops(field: NeRFField) -> float:
        linears = [m for m in field.modules() if isinstance(m, torch.nn.Linear)]
        forward = sum(2 * m.in_features * m.out_features for m in linears)
        first = 2 * field.trunk[0].in_features * field.trunk[0].out_features
        return 3 * forward - first

    if points_per_ray is not None and math.isfinite(points_per_ray):
        return batch_rays * points_per_ray * field_flops(model.coarse_field)
    coarse_points = batch_rays * model.n_coarse
    total = coarse_points * field_flops(model.coarse_field)
    if model.fine_field is not None:
        total += batch_rays * (model.n_coarse + model.n_fine) * field_flops(model.fine_field)
    return total


def matmul_throughput(rows: int, width: int, device: torch.device, dtype: torch.dtype, repeats: int = 20) -> float:
    """FLOP/s of one (rows × width) @ (width × width) product, the shape of a hidden layer."""
    a = torch.randn(rows, width, device=device, dtype=dtype)
    b = torch.randn(width, width, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronise(device)
    return 2 * rows * width * width * repeats / (time.perf_counter() - start)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    return f"CPU: {model}, {torch.get_num_threads()} threads"


def benchmark(cfg: DictConfig) -> dict[str, Any]:
    validate_config(cfg)
    keep_freed_memory()
    pl.seed_everything(cfg.seed, verbose=False)
    warmup, steps = cfg.bench.warmup_steps, cfg.bench.steps
    precision = auto_precision(cfg.trainer.accelerator) if cfg.trainer.precision == "auto" else cfg.trainer.precision
    train_cfg = OmegaConf.to_container(cfg, resolve=True)
    train_cfg["trainer"]["max_steps"] = warmup + steps
    module = NeRFLitModule(train_cfg)
    if cfg.bench.get("init_from"):
        load_initial_weights(module, cfg.bench.init_from, "bench.init_from")
    datamodule = build_datamodule(cfg)

    profile_steps = cfg.bench.profile_steps
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
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    with torch.no_grad(), autocast:
        render_in_chunks(module.model, RayBundle(views[0]["origins"][:8], views[0]["directions"][:8]), module.chunk)
        _synchronise(device)
        start = time.perf_counter()
        for view in views:
            render_in_chunks(module.model, RayBundle(view["origins"], view["directions"]), module.chunk)
        _synchronise(device)
        render_seconds = (time.perf_counter() - start) / len(views)

    steps_per_s = timer.timed_steps / timer.seconds
    evals_per_ray = meter.mean()
    grid = module.model.occupancy
    occupied = float(grid.occupied_fraction()) if grid is not None else None
    flops = mlp_flops_per_step(module.model, cfg.data.batch_rays, evals_per_ray)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    width = cfg.model.width
    points = cfg.data.batch_rays * cfg.sampling.n_c
    peak = matmul_throughput(points, width, device, dtype)
    results = {
        "device": device_description(device),
        "precision": precision,
        "train_steps_per_s": round(steps_per_s, 3),
        "train_rays_per_s": round(steps_per_s * cfg.data.batch_rays),
        "field_evals_per_ray": round(evals_per_ray, 2),
        "occupied_fraction": None if occupied is None else round(occupied, 4),
        "render_s_per_view": round(render_seconds, 4),
        "render_resolution": list(views[0]["rgb"].shape[:2]),
        "peak_mem_mb": round(_peak_memory_mb(device), 1),
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
    print(f"\n{results['device']}, {precision}\n" + format_table(rows, ["what", "figure", "detail"]))
    write_json_atomically(output_dir / "bench.json", results)
    if cfg.bench.json_path:
        write_json_atomically(Path(cfg.bench.json_path), results)
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def _main(cfg: DictConfig) -> None:
    run_task(benchmark, cfg)


main = hydra_command(_main)

if __name__ == "__main__":
    main()
