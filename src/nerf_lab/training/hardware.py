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


def auto_precision(accelerator: str) -> str:
    """`trainer.precision=auto`: bf16-mixed where the hardware computes in bf16, else 32-true."""
    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_gpu:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


# `sampling.chunk=null` (auto): rays a chunk when rendering whole views. On a CPU, 8192 rays keep
# the matrix products efficient in a few hundred MB; on a GPU larger chunks fill the device.
CPU_RENDER_CHUNK = 8192
MAX_GPU_RENDER_CHUNK = 65536


def render_chunk(device: torch.device, points_per_ray: int, width: int, input_width: int, memory_fraction: float = 0.5) -> int:
    """Rays a chunk for rendering whole views on `device` (`sampling.chunk=null`).

    CPU: `CPU_RENDER_CHUNK`. CUDA: the largest power of two, at most `MAX_GPU_RENDER_CHUNK`,
    whose activations fit in `memory_fraction` of the memory this process can still get (free
    on the device, plus what PyTorch's allocator holds unused). A point is estimated at
    4 · (input_width + 4 · width) bytes, the encoded input and four activations of the widest
    layer in float32 (the most a field's forward keeps at once, at a skip concatenation); under
    bf16 autocast the need is about half. A ray has `points_per_ray` points in its largest pass.

    Example: the paper's fine pass (192 points, width 256, input 63) is 834,816 bytes a ray; an
    H100 with 78 GB free fits 46,716 such rays in half of it, so it renders 32,768 a chunk.
    """
    if device.type != "cuda":
        return CPU_RENDER_CHUNK
    free, _ = torch.cuda.mem_get_info(device)
    available = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    bytes_per_ray = points_per_ray * 4 * (input_width + 4 * width)
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
