"""Benchmark: milliseconds to make one distorted training batch on the default JAX device.

Times the jitted `stn.data.pipeline.train_batch` (example selection + distortion) for each
distortion, with the training digits already on device, as the training loop uses it. Prints a
markdown table of medians over `--repeats` calls after one warm-up (compile) call.

    python benchmarks/data_step.py                        # batch 256, embedded sample digits
    python benchmarks/data_step.py --batch-size 512 --distortions rts,tc
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone
from stn.data import distortions, pipeline, sources


def time_distortion(images, labels, name: str, batch_size: int, repeats: int) -> tuple[float, float]:
    """(compile seconds, median milliseconds per batch) of `train_batch` for one distortion."""
    fn = jax.jit(functools.partial(pipeline.train_batch, batch_size=batch_size, distortion=name))
    start = time.perf_counter()
    jax.block_until_ready(fn(images, labels, 0, 0))
    compile_s = time.perf_counter() - start
    times = []
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        jax.block_until_ready(fn(images, labels, 0, step))
        times.append((time.perf_counter() - start) * 1e3)
    return compile_s, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--source", default="sample")
    parser.add_argument("--distortions", default=",".join(distortions.NAMES))
    args = parser.parse_args()
    images, labels = pipeline.device_digits(sources.load_digits(args.source))
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), batch {args.batch_size}, "
          f"{args.repeats} repeats, source {args.source}\n")
    print("| distortion | canvas | compile s | ms / batch | images / s |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.distortions.split(","):
        compile_s, ms = time_distortion(images, labels, name, args.batch_size, args.repeats)
        size = distortions.get(name).canvas_size
        print(f"| {name} | {size} | {compile_s:.2f} | {ms:.2f} | {args.batch_size / ms * 1e3:,.0f} |")


if __name__ == "__main__":
    main()
