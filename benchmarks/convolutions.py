"""Where the MNIST ST-CNN train step spends its time: each convolution's three parts, JAX vs torch.

For every convolution of the ST-CNN of ``benchmarks/train_step.py`` (batch 256, 42x42x1 input),
times the forward ``y = conv(x, w)``, the input gradient ``dL/dx`` and the kernel gradient
``dL/dw`` separately: ``lax`` (XLA's jitted ``lax.conv_general_dilated``, NHWC, and its VJPs),
``stn`` (``stn._xla_cpu.conv_general_dilated``, what the models use) and torch
(``torch.nn.functional.conv2d``, NCHW, and ``torch.autograd.grad``). Each side runs
in its own subprocess, alternating over ``--rounds``; the table gives medians in milliseconds.

    python benchmarks/convolutions.py --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler import time_ms  # noqa: E402

BATCH = 256
# (name, input side, in channels, out channels, kernel): the ST-CNN's convolutions
CONVS = (
    ("loc conv1", 21, 1, 20, 5),
    ("loc conv2", 8, 20, 20, 5),
    ("conv1", 42, 1, 64, 9),
    ("conv2", 17, 64, 64, 7),
)
PARTS = ("fwd", "d_input", "d_kernel")


def worker_jax(side: str) -> dict:
    import jax

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from stn import _xla_cpu

    conv_fn = jax.lax.conv_general_dilated if side == "lax" else _xla_cpu.conv_general_dilated

    def conv(x, w):
        return conv_fn(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    results = {}
    for name, side, cin, cout, k in CONVS:
        x = jax.random.normal(jax.random.PRNGKey(0), (BATCH, side, side, cin))
        w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout)) * 0.1
        dy = conv(x, w)
        fns = {
            "fwd": (jax.jit(conv), (x, w)),
            "d_input": (jax.jit(lambda w, dy: jax.vjp(lambda x_: conv(x_, w), x)[1](dy)[0]),
                        (w, dy)),
            "d_kernel": (jax.jit(lambda x, dy: jax.vjp(lambda w_: conv(x, w_), w)[1](dy)[0]),
                         (x, dy)),
        }
        for part, (fn, args) in fns.items():
            results[f"{name}|{part}"] = time_ms(lambda: fn(*args).block_until_ready(),
                                                min_runs=10, min_seconds=1.0)
    return results


def worker_torch() -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    results = {}
    for name, side, cin, cout, k in CONVS:
        x = torch.randn(BATCH, cin, side, side)
        w = torch.randn(cout, cin, k, k) * 0.1
        dy = F.conv2d(x, w)
        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def grad_of(inp, other_first: bool):
            def run():
                y = F.conv2d(inp, w) if other_first else F.conv2d(x, inp)
                torch.autograd.grad(y, inp, dy)
            return run

        fns = {"fwd": lambda: F.conv2d(x, w), "d_input": grad_of(xg, True),
               "d_kernel": grad_of(wg, False)}
        for part, fn in fns.items():
            if part == "fwd":
                with torch.no_grad():
                    results[f"{name}|{part}"] = time_ms(fn, min_runs=10, min_seconds=1.0)
            else:
                results[f"{name}|{part}"] = time_ms(fn, min_runs=10, min_seconds=1.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker_torch() if args.worker == "torch" else worker_jax(args.worker)))
        return
    sides = ["lax", "stn"]
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        sides.append("torch")
    else:
        print("torch is not importable: its columns are skipped", file=sys.stderr)
    runs = {side: [] for side in sides}
    for round_index in range(args.rounds):
        for side in (sides if round_index % 2 == 0 else sides[::-1]):
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", side],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"worker {side} failed:\n{proc.stderr[-3000:]}")
            runs[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    median = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
              for side, rs in runs.items()}
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; batch {BATCH}; "
          f"{args.rounds} rounds; ms (median)\n")
    header = " | ".join(f"{p} {side}" for p in PARTS for side in sides)
    print(f"| conv (in side, C_in -> C_out, k) | {header} |")
    print("| --- " * (1 + len(PARTS) * len(sides)) + "|")
    totals = {side: 0.0 for side in sides}
    for name, side_px, cin, cout, k in CONVS:
        cells = []
        for part in PARTS:
            for side in sides:
                value = median[side][f"{name}|{part}"]
                totals[side] += value
                cells.append(f"{value:.1f}")
        print(f"| {name} ({side_px}, {cin} -> {cout}, {k}x{k}) | {' | '.join(cells)} |")
    print("\ntotal of all parts: " + ", ".join(f"{s} {t:.0f} ms" for s, t in totals.items()))


if __name__ == "__main__":
    main()
