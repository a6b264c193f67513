"""Process-wide settings of the host that make XLA on CPU faster; they never change results."""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
    """Stops glibc from handing XLA's large temporary buffers back to the OS after each call.

    By default glibc serves big allocations with mmap and trims freed memory, so every jitted
    step page-faults its whole working set in again (docs/performance.md measured 18k-24k faults
    per sampler call; the MNIST train step took 1183 ms instead of 798 ms). This is the in-process
    form of `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647
    MALLOC_ARENA_MAX=1`. Returns False (and changes nothing) where libc has no mallopt.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1)))


def split_cpu(devices: int) -> None:
    """Runs JAX's CPU backend as `devices` devices (each taking part of the cores), so that the
    data-parallel training step splits every batch over them.

    XLA:CPU parallelises one convolution poorly over cores; a device per core does better (the
    MNIST ST-CNN train step on 2 cores: 484 -> 368 ms per batch of 256, `benchmarks/
    train_step.py --variants xla,sharded2`). Same results up to float rounding (the mean over the
    batch is summed in another order). Must run before JAX executes anything; only the CPU
    backend changes, a GPU or TPU run is unaffected.
    """
    import jax

    if devices < 1:
        raise ValueError(f"the number of CPU devices must be >= 1, got {devices}")
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError as e:  # JAX already started its backends
        raise ValueError(f"split_cpu({devices}) must run before JAX executes anything: {e}") from e
