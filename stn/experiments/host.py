"""Process-wide settings for XLA: speed on CPU (same results) and determinism on GPU.

Each must run before JAX executes anything (`train.py` calls them from its flags).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# XLA:GPU's deterministic scatter and reductions (XLA reads XLA_FLAGS when a backend starts).
DETERMINISTIC_GPU_FLAG = "--xla_gpu_deterministic_ops=true"

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
    """Stops glibc from handing XLA's large temporary buffers back to the OS after each call.

    By default glibc serves big allocations with mmap and trims freed memory, so every jitted
    step page-faults its whole working set in again (docs/reports/performance.md). This is the in-process
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


def default_cpu_devices(batch_size: int, distributed: bool = False) -> int:
    """How many CPU devices a run takes when it is not told: one per core this process may use,
    lowered to the largest count that divides `batch_size` (each device takes an equal share of
    every batch); 1 for a multi-process run, whose processes share the machine's cores."""
    if distributed:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(d for d in range(1, max(int(cores or 1), 1) + 1) if batch_size % d == 0)


def split_cpu(devices: int) -> None:
    """Runs JAX's CPU backend as `devices` devices (each taking part of the cores), so that the
    data-parallel training step splits every batch over them.

    XLA:CPU parallelises one convolution poorly over cores; a device per core does better
    (docs/reports/performance.md). Same results up to float rounding (the mean over the
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


def _backends_started() -> bool:
    """Whether JAX has started its backends (after which XLA_FLAGS is no longer read)."""
    from jax._src import xla_bridge  # private: guarded, False where it is missing

    started = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(started and started())


def deterministic_gpu_ops() -> None:
    """Makes gradients on a GPU bit-identical run after run (XLA's deterministic ops).

    On a GPU the sampler's backward is a scatter-add with atomics, so its sums land in a
    different order each run (as in torch's CUDA grid_sample backward). The flag makes XLA sort
    scatters and reduce in a fixed order, at a cost in speed (docs/reports/performance.md). CPU runs are
    deterministic already and unaffected.
    """
    if _backends_started():
        raise ValueError("deterministic_gpu_ops() must run before JAX executes anything")
    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_GPU_FLAG not in flags.split():
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_GPU_FLAG}".strip()


def exit_with_message(program: str, error, code: int) -> None:
    """Ends the process with `program: <first line of error>` on stderr and exit status `code`."""
    text = str(error).strip()
    print(f"{program}: {text.splitlines()[0] if text else repr(error)}", file=sys.stderr,
          flush=True)
    sys.exit(code)


def run_app(main, program: str) -> None:
    """`absl.app.run(main)` whose flag errors, bad config files and bad `--config.*` overrides
    end in one line naming the argument, instead of a traceback."""
    from absl import app, flags

    from stn.experiments import config_args

    def parse(argv):
        try:
            rest = flags.FLAGS(argv)
            config = getattr(flags.FLAGS, "config", None)
            if config is not None:
                config.keys()  # a config file that failed to load raises only when first used
            return rest
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
            exit_with_message(program, config_args.explain(argv, e), 2)

    app.run(main, flags_parser=parse)
