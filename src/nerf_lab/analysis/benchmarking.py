"""Measuring the training loop for `nerf_lab.bench`: the steps a benchmark times, a profile of
steps, field evaluations a ray, this machine's matrix-product rate, peak memory, seconds a view."""

from __future__ import annotations

import platform
import re
import resource
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from nerf_lab.data.batches import ViewBatch
from nerf_lab.nerf.marching import render_in_chunks
from nerf_lab.nerf.renderer import NeRFRenderer
from nerf_lab.nerf.rays import RayBundle


def synchronise(device: torch.device) -> None:
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
            synchronise(trainer.strategy.root_device)
            self.started = time.perf_counter()
        elif trainer.global_step == self.stop_step:
            self._stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self.timed_steps:
            self._stop(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        synchronise(trainer.strategy.root_device)
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
            synchronise(trainer.strategy.root_device)
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


def matmul_throughput(rows: int, width: int, device: torch.device, dtype: torch.dtype, repeats: int = 20) -> float:
    """FLOP/s of one (rows × width) @ (width × width) product, the shape of a hidden layer.

    The operands come from a generator of their own: a training run measures this before its
    first step (`long_run_warning`, only when the run is long), and drawing them from torch's
    global generator would shift every random draw of the run after it."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(rows, width, device=device, dtype=dtype, generator=generator)
    b = torch.randn(width, width, device=device, dtype=dtype, generator=generator)
    for _ in range(3):
        a @ b
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronise(device)
    return 2 * rows * width * width * repeats / (time.perf_counter() - start)


def peak_memory_mb(device: torch.device) -> float:
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


def seconds_per_view(model: NeRFRenderer, views: list[ViewBatch], chunk: int, bf16: bool) -> float:
    """Mean seconds to render each of `views` whole, `chunk` rays at a time, as evaluation
    does, synchronised with the device. The warm-up renders one whole chunk and a short one:
    compiled fields compile for both shapes there (the second time as dynamic shapes), not in
    the timed renders."""
    device = model.background.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        origins, directions = views[0].origins.reshape(-1, 3), views[0].directions.reshape(-1, 3)
        render_in_chunks(model, RayBundle(origins[: chunk + 8], directions[: chunk + 8]), chunk)
        synchronise(device)
        start = time.perf_counter()
        for view in views:
            render_in_chunks(model, view.rays, chunk)
        synchronise(device)
    return (time.perf_counter() - start) / len(views)


# A run whose estimated cost passes this is announced before it trains.
LONG_RUN_S = 3600.0
# No device computes fewer FLOP/s than this: below LONG_RUN_S at this rate, nothing is measured.
SLOWEST_RATE = 1e9


def run_flops(cfg: Any, model: NeRFRenderer) -> dict[str, float]:
    """The fields' floating-point work of a run (the field protocol's
    `training_flops_per_point`, through `NeRFRenderer.training_flops_per_ray`): `step` a training
    step (`data.batch_rays` rays), `validation` one validation (`data.val_views` views of
    `data.resolution`² rays, forward only: a third of a training step's work a ray), and
    `total` for `trainer.max_steps` steps with a validation every `trainer.val_check_interval`
    steps and one at the end."""
    per_ray = float(model.training_flops_per_ray())
    step = cfg.data.batch_rays * per_ray
    validation = cfg.data.val_views * cfg.data.resolution**2 * per_ray / 3
    validations = cfg.trainer.max_steps // cfg.trainer.val_check_interval + (1 if cfg.trainer.max_steps % cfg.trainer.val_check_interval else 0)
    return {"step": step, "validation": validation, "validations": validations, "total": cfg.trainer.max_steps * step + validations * validation}


def long_run_warning(cfg: Any, model: NeRFRenderer, device: torch.device, dtype: torch.dtype, rate: float | None = None) -> str | None:
    """One line when the run's work (`run_flops`) at this device's measured matrix-product rate
    (`matmul_throughput` at the hidden layers' width; `rate` FLOP/s if given) takes longer than
    `LONG_RUN_S`, naming the keys that bring it down; None otherwise. The rate is an upper bound
    on what a step achieves, so the time is a lower bound."""
    flops = run_flops(cfg, model)
    if rate is None:
        if flops["total"] < LONG_RUN_S * SLOWEST_RATE:
            return None
        rate = matmul_throughput(min(cfg.data.batch_rays * 64, 16384), model.hidden_width or 128, device, dtype, repeats=5)
    seconds = flops["total"] / rate
    if seconds <= LONG_RUN_S:
        return None
    hours = seconds / 3600
    model_keys = ", ".join(f"model.{key}={cfg.model[key]}" for key in ("depth", "width") if key in cfg.model)
    return (
        f"this run needs about {flops['total']:.2g} FLOP ({flops['step']:.2g} a step × trainer.max_steps={cfg.trainer.max_steps}, "
        f"{flops['validations']} validations of data.val_views={cfg.data.val_views} at data.resolution={cfg.data.resolution}); "
        f"at this {device.type}'s measured {rate / 1e9:.3g} GFLOP/s that is at least {hours:.1f} h: to bring it down, lower "
        f"data.batch_rays={cfg.data.batch_rays}, data.resolution, trainer.max_steps, or the model ({model_keys or 'model='}, e.g. model=tiny)"
    )
