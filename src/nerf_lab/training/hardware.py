"""Settings that make training fast on the machine at hand, chosen at run time, never at import."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("nerf_lab")

# glibc's mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the system.

    A CPU training step allocates and frees activations of tens of megabytes; by default glibc
    maps each from the kernel and unmaps it on free, so every step pays page faults for
    memory it just released (measured: about a quarter of a Tiny NeRF step on 2 cores). The
    process's memory then stays at its peak, which a training run reaches anyway. A no-op
    where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # 32 MiB is the largest mmap threshold glibc accepts; trim only past 2 GiB of free heap.
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bfloat16 instructions (AVX-512 BF16 or AMX), where bf16 matrix
    products run several times faster than fp32; elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def on_gpu(accelerator: str) -> bool:
    """Whether `accelerator` (Lightning's spelling: auto, cpu, gpu, cuda) runs on a CUDA GPU."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(precision: str, accelerator: str) -> str:
    """The precision a command runs in, the one rule for train, eval, render, bench and the
    report: `auto` is bf16-mixed where the hardware computes in bf16 (a GPU that supports it,
    a CPU with AVX-512 BF16 or AMX), else 32-true; any other value is kept."""
    if str(precision) != "auto":
        return str(precision)
    if on_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def resolve_device(accelerator: str) -> torch.device:
    """The device a command that renders outside a Trainer (render, the report) uses."""
    return torch.device("cuda" if on_gpu(accelerator) else "cpu")


# `sampling.chunk=null` (auto): rays a chunk when rendering whole views. On a CPU, 8192 rays keep
# the matrix products efficient in a few hundred MB; on a GPU larger chunks fill the device.
CPU_RENDER_CHUNK = 8192
MAX_GPU_RENDER_CHUNK = 65536


def render_chunk(device: torch.device, bytes_per_ray: int, memory_fraction: float = 0.5) -> int:
    """Rays a chunk for rendering whole views on `device` (`sampling.chunk=null`).

    CPU: `CPU_RENDER_CHUNK`. CUDA: the largest power of two, at most `MAX_GPU_RENDER_CHUNK`,
    whose activations fit in `memory_fraction` of the memory this process can still get (free
    on the device, plus what PyTorch's allocator holds unused). `bytes_per_ray` is the model's
    estimate for one ray's points in its largest pass (`NeRFRenderer.activation_bytes_per_ray`:
    float32 activations; under bf16 autocast the need is about half).

    Example: the paper's fine pass (192 points of 4 · (63 + 4 · 256) bytes) is 834,816 bytes a
    ray; an H100 with 78 GB free fits 46,716 such rays in half of it, so it renders 32,768 a chunk.
    """
    if device.type != "cuda":
        return CPU_RENDER_CHUNK
    free, _ = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    rays = int(memory_fraction * available // bytes_per_ray)
    chunk = 1 << max(rays, 1).bit_length() - 1  # the power of two at or below
    return max(1024, min(MAX_GPU_RENDER_CHUNK, chunk))


def share_cpu_threads(parallel_jobs: int) -> int:
    """Give this process its share of the CPU when `parallel_jobs` processes run at once (a
    parallel sweep): torch's thread count becomes cores ÷ jobs, so jobs do not fight over
    cores. Returns the thread count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = cores if parallel_jobs < 1 else parallel_jobs  # joblib's n_jobs=-1: one a core
    threads = max(1, cores // jobs)
    torch.set_num_threads(threads)
    return threads
