"""What `sample(..., antialias=True)` costs against plain sampling at zoom 1, 2 and 4.

    python benchmarks/antialias_cost.py [--runs 20]

A batch of 64 single-channel images of side 32 z is read by a slightly turned affine grid into
32 x 32 outputs (zoom z = input pixels per output pixel), float32, zeros padding, on the CPU.
Each row times the jitted forward and the forward + backward (gradients to the image and the
grid) of plain sampling and of antialiased sampling (default `max_scale`: max(2, z)), and gives
the minimum over `--runs` calls after warm-up: the CPU is shared, so the minimum is the least
disturbed run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from stn import kernels, sampling, transforms  # noqa: E402

BATCH, OUT = 64, 32


def min_ms(fn, runs: int) -> float:
    """Minimum milliseconds of ``fn()`` (blocking) over ``runs`` calls, after 2 warm-up calls."""
    for _ in range(2):
        jax.block_until_ready(fn())
    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def case(zoom: int):
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.random((BATCH, OUT * zoom, OUT * zoom, 1)), jnp.float32)
    angle = rng.uniform(-0.2, 0.2, BATCH)
    theta = np.stack([np.stack([np.cos(angle), -np.sin(angle), 0 * angle], -1),
                      np.stack([np.sin(angle), np.cos(angle), 0 * angle], -1)], 1)
    grid = transforms.affine_grid(jnp.asarray(theta, jnp.float32), OUT, OUT)
    return image, grid


def timings(kernel: str, zoom: int, runs: int) -> dict[str, float]:
    image, grid = case(zoom)
    out = {}
    for name, aa in (("plain", False), ("antialias", True)):
        forward = jax.jit(lambda u, g, aa=aa: sampling.sample(u, g, kernel=kernel, antialias=aa))
        both = jax.jit(jax.grad(lambda u, g, aa=aa: jnp.sum(
            sampling.sample(u, g, kernel=kernel, antialias=aa) ** 2), argnums=(0, 1)))
        out[f"{name} fwd"] = min_ms(lambda: forward(image, grid), runs)  # noqa: B023
        out[f"{name} fwd+bwd"] = min_ms(lambda: both(image, grid), runs)  # noqa: B023
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; jax {jax.__version__}; "
          f"batch {BATCH}, output {OUT}x{OUT}x1")
    print("| kernel | zoom | input | max_scale | taps per point plain / antialias | plain fwd | "
          "antialias fwd | ratio | plain fwd+bwd | antialias fwd+bwd | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kernel in ("bilinear", "bicubic"):
        radius = kernels.get(kernel).radius
        for zoom in (1, 2, 4):
            t = timings(kernel, zoom, args.runs)
            scale = sampling.default_max_scale((OUT * zoom,) * 2, (OUT, OUT))
            taps = (2 * math.ceil(radius)) ** 2, (2 * math.ceil(radius * scale)) ** 2
            print(f"| {kernel} | {zoom} | {OUT * zoom}x{OUT * zoom} | {scale:g} | {taps[0]} / "
                  f"{taps[1]} | {t['plain fwd']:.2f} ms | {t['antialias fwd']:.2f} ms | "
                  f"{t['antialias fwd'] / t['plain fwd']:.1f}x | {t['plain fwd+bwd']:.2f} ms | "
                  f"{t['antialias fwd+bwd']:.2f} ms | "
                  f"{t['antialias fwd+bwd'] / t['plain fwd+bwd']:.1f}x |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
