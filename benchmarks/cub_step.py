"""One train step of each Table 3 row (CUB-200-2011): images/s, peak memory and XLA's FLOP count.

Each row (`configs/cub.py:cnn`, `2xst_224`, `2xst_448`, `4xst_448`) runs in its own subprocess
at the row's real image sizes (224 or 448 input, 224 crops and loc input) with the trainer's own
step (`stn.experiments.training.make_train_step`: forward, backward, SGD with momentum, weight decay), on a
random batch. On the CPU the backbones are narrowed (`--width`, default 1/8); on a GPU use
`--width=1 --batch=32` (the paper's network and our recipe's batch).

    python benchmarks/cub_step.py                          # CPU: width 1/8, batch 4
    python benchmarks/cub_step.py --width=1 --batch=32     # a GPU: the recipe's step
    python benchmarks/cub_step.py --flops_only --width=1   # XLA's FLOPs of the full step, any host

Printed per row: step time (median of `--runs` steps after one warm-up), images/s, peak memory
growth of the first step (RSS on the CPU, device bytes on a GPU, compilation included on the
CPU), and the FLOPs XLA's cost analysis counts for the step (lowering only, no compile).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ROWS = ("cnn", "2xst_224", "2xst_448", "4xst_448")


def row_config(row: str, width: float, batch: int):
    """The row's config with the benchmark's width and batch (classes: the paper's 200)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cub_config",
                                                  os.path.join(ROOT, "configs", "cub.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(row)
    config.model.width = width
    config.train.batch_size = batch
    return config


def worker(row: str, width: float, batch: int, runs: int, flops_only: bool) -> dict:
    """Builds the row's model and the trainer's step; times it (unless `flops_only`)."""
    import jax
    import numpy as np
    from flax import nnx

    from sampler import jax_peak_growth_mb
    from stn.experiments import tasks, training

    config = row_config(row, width, batch)
    task = tasks.get("cub")
    shape = task.input_shape(config)
    model = task.make_model(config, shape, nnx.Rngs(params=0))
    graphdef, state = nnx.split(model)
    tx, _ = training.make_optimizer(config, state, model)
    opt_state = tx.init(state)
    rng = np.random.default_rng(0)
    batch_data = {"image": rng.uniform(size=(batch,) + shape).astype(np.float32),
                  "label": rng.integers(0, 200, batch).astype(np.int32)}
    step = jax.jit(training.make_train_step(graphdef, tx, task))
    lowered = step.lower(state, opt_state, batch_data)
    result = {"row": row, "width": width, "batch": batch, "device": jax.devices()[0].device_kind,
              "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))),
              "gflops_per_step": float(lowered.cost_analysis()["flops"]) / 1e9}
    if flops_only:
        return result
    holder = {}

    def first():
        holder["out"] = step(state, opt_state, batch_data)
        jax.block_until_ready(holder["out"])

    t0 = time.perf_counter()
    result["peak_mb_first_step"] = jax_peak_growth_mb(first)
    result["first_step_s"] = time.perf_counter() - t0
    state_now, opt_now = holder["out"][:2]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        state_now, opt_now, metrics = step(state_now, opt_now, batch_data)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    result["step_ms"] = 1e3 * statistics.median(times)
    result["images_per_s"] = batch / statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flops_only", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.width, args.batch, args.runs,
                                args.flops_only)))
        return
    print("| row | width | batch | params | GFLOP/step (XLA) | step | images/s | peak memory, "
          "first step | device |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in args.rows.split(","):
        cmd = [sys.executable, __file__, f"--worker={row}", f"--width={args.width}",
               f"--batch={args.batch}", f"--runs={args.runs}"] + (
                   ["--flops_only"] if args.flops_only else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"| {row} | failed: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        timing = ("-", "-", "-") if args.flops_only else (
            f"{r['step_ms']:.0f} ms", f"{r['images_per_s']:.1f}",
            f"{r['peak_mb_first_step']:.0f} MiB" if r["peak_mb_first_step"] is not None else "?")
        print(f"| {row} | {r['width']} | {r['batch']} | {r['params'] / 1e6:.2f}M | "
              f"{r['gflops_per_step']:.1f} | {' | '.join(timing)} | {r['device']} |", flush=True)


if __name__ == "__main__":
    main()
