"""Benchmark of the bilinear sampler: stn.sampling.sample vs map_coordinates vs torch grid_sample.

Prints one markdown table of forward and forward+backward (gradients to the image and to the
grid) milliseconds, medians of many runs after warm-up, for the shapes of issues 2 and 6, with the
ratios to torch's ``grid_sample`` when torch is importable (its columns are skipped otherwise).

Each side runs in its OWN subprocess (one per side and shape), and the sides alternate over
``--rounds`` rounds; the reported time is the median over rounds of each process's median. In
one process JAX's and torch's thread pools disturb each other, so they are never mixed.

Also printed: peak extra memory of forward+backward (JAX: XLA's compiled memory analysis, temp +
output bytes; torch: growth of the process's peak RSS over the inputs), and the distance from the
memory-bandwidth floor (bytes a sampler must move / measured copy bandwidth).

    python benchmarks/sampler.py                      # all shapes, all sides, 3 rounds
    python benchmarks/sampler.py --rounds 5 --sides stn,torch
    python benchmarks/sampler.py --methods gather,separable   # stn's internal methods too

The inputs are identical on every side: a fixed-seed image and affine grids near the identity
(bilinear, zeros padding, align_corners=False, output size = input size).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = ((256, 1, 60, 60), (64, 32, 28, 28), (256, 1, 28, 28))

# glibc malloc returns every free block larger than its mmap threshold (at most 32 MiB by default;
# any block over 64 MiB from a thread's arena) to the OS, so an XLA program whose temporary buffer
# exceeds it page-faults its whole temp space in again on every call (sys time can exceed user
# time). These settings keep freed memory in the process; --malloc tuned applies them to every
# worker, JAX and torch alike (docs/performance.md).
TUNED_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 32),
}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---------------------------------------------------------------- inputs (numpy, all sides)


def make_inputs(shape: tuple[int, int, int, int], seed: int = 0):
    """NHWC image, [B, H, W, 2] grid (x, y) of random affine maps near identity, and a cotangent."""
    batch, channels, height, width = shape
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(batch, height, width, channels)).astype(np.float32)
    theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (batch, 1, 1))
    theta = (theta + rng.normal(scale=0.1, size=theta.shape)).astype(np.float32)
    xs = (2 * np.arange(width) + 1) / width - 1  # align_corners=False pixel centres
    ys = (2 * np.arange(height) + 1) / height - 1
    x_t, y_t = np.meshgrid(xs, ys)
    target = np.stack([x_t, y_t, np.ones_like(x_t)], -1)  # [H, W, 3]
    grid = np.einsum("bij,hwj->bhwi", theta, target).astype(np.float32)
    cotangent = rng.normal(size=(batch, height, width, channels)).astype(np.float32)
    return image, grid, cotangent


def floor_bytes(shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """Bytes a float32 sampler must move: forward (read U and grid, write V) and fwd+bwd.

    The backward reads the cotangent, U and the grid again and writes dU and the grid gradient.
    """
    batch, channels, height, width = shape
    image = batch * height * width * channels * 4
    grid = batch * height * width * 2 * 4
    forward = image + grid + image
    backward = image + image + grid + image + grid
    return forward, forward + backward


def copy_bandwidth(nbytes: int = 1 << 28) -> float:
    """Bytes/s of a large memcpy (read + write counted), best of 5."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


# ---------------------------------------------------------------- timing helpers (in workers)


def time_ms(fn, min_runs: int = 30, min_seconds: float = 1.0, max_runs: int = 500) -> float:
    """Median milliseconds of ``fn()`` (which must block), after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs
                                     or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or -1 where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def peak_rss_growth_mb(fn) -> float | None:
    """Peak RSS growth (MiB) of the FIRST call of ``fn`` over the resident inputs (Linux).

    Freed heap is returned to the OS first (malloc_trim) and the high-water mark is reset
    (writing 5 to /proc/self/clear_refs), so the number is what this call allocates at its peak.
    Call it before any other run of ``fn``: later runs reuse the allocator's cached blocks.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def worker_jax(side: str, shape, method: str | None) -> dict:
    """Times stn.sampling.sample (``side == "stn"``) or vmapped map_coordinates in this process."""
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp

    image, grid, cotangent = (jnp.asarray(a) for a in make_inputs(shape))
    _, _, height, width = shape
    if side == "stn":
        from stn import sampling

        def forward(u, g):
            if method is None:
                return sampling.sample(u, g)
            return sampling._sample(u, g, kernel="bilinear", padding="zeros",
                                    align_corners=False, method=method)
    else:
        from jax.scipy.ndimage import map_coordinates

        def one_plane(plane, x, y):  # plane [H, W]; x, y [Ho, Wo] pixel units
            return map_coordinates(plane, [y, x], order=1, mode="constant", cval=0.0)

        def forward(u, g):
            x = ((g[..., 0] + 1) * width - 1) / 2
            y = ((g[..., 1] + 1) * height - 1) / 2
            per_channel = jax.vmap(one_plane, in_axes=(2, None, None), out_axes=-1)
            return jax.vmap(per_channel)(u, x, y)

    def forward_backward(u, g, ct):
        out, vjp = jax.vjp(forward, u, g)
        return vjp(ct)

    fwd = jax.jit(forward).lower(image, grid).compile()
    fwdbwd = jax.jit(forward_backward).lower(image, grid, cotangent).compile()
    memory = fwdbwd.memory_analysis()
    xla_mb = None
    if memory is not None:
        xla_mb = (memory.temp_size_in_bytes + memory.output_size_in_bytes) / 2**20
    peak_mb = peak_rss_growth_mb(lambda: jax.block_until_ready(fwdbwd(image, grid, cotangent)))
    return {
        "xla_mb": xla_mb,
        "fwd_ms": time_ms(lambda: fwd(image, grid).block_until_ready()),
        "fwdbwd_ms": time_ms(lambda: jax.block_until_ready(fwdbwd(image, grid, cotangent))),
        "peak_mb": peak_mb,
        "device": str(jax.devices()[0].platform),
    }


def worker_torch(shape) -> dict:
    """Times torch.nn.functional.grid_sample (CUDA when available) in this process."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    image, grid, cotangent = make_inputs(shape)
    image = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous().to(device)  # NCHW
    grid = torch.from_numpy(grid).clone().to(device)
    cotangent = torch.from_numpy(cotangent).permute(0, 3, 1, 2).contiguous().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        sync()

    image_r = image.clone().requires_grad_(True)
    grid_r = grid.clone().requires_grad_(True)

    def forward_backward():
        out = F.grid_sample(image_r, grid_r, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        torch.autograd.grad(out, (image_r, grid_r), cotangent)
        sync()

    forward()  # start torch's thread pool before measuring memory
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = peak_rss_growth_mb(forward_backward)
    return {"fwd_ms": time_ms(forward), "fwdbwd_ms": time_ms(forward_backward),
            "peak_mb": peak_mb, "device": device}


# ---------------------------------------------------------------- driver


def run_worker(side: str, shape, method: str | None, env: dict | None = None) -> dict:
    """One fresh subprocess for one side and shape; returns its JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side,
           "--shape", ",".join(map(str, shape))]
    if method:
        cmd += ["--method", method]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {side} {shape} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_available() -> bool:
    """Whether torch imports (in a subprocess, so this process never loads it)."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return proc.returncode == 0


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help="B,C,H,W (default: the three of issue 6)")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--sides", default="stn,map_coordinates,torch")
    parser.add_argument("--malloc", choices=("default", "tuned"), default="default",
                        help="tuned: run every worker with TUNED_MALLOC_ENV (no per-call page faults)")
    parser.add_argument("--methods", default="",
                        help="comma list of stn.sampling internal methods to time as extra rows")
    args = parser.parse_args()

    if args.worker:
        shape = tuple(int(s) for s in args.shape.split(","))
        if args.worker == "torch":
            result = worker_torch(shape)
        else:
            result = worker_jax(args.worker, shape, args.method)
        print(json.dumps(result))
        return

    shapes = [tuple(int(s) for s in args.shape.split(","))] if args.shape else list(SHAPES)
    sides = [s for s in args.sides.split(",") if s]
    if "torch" in sides and not torch_available():
        print("torch is not importable: its columns are skipped", file=sys.stderr)
        sides.remove("torch")
    variants = [(side, None) for side in sides]
    variants += [("stn", m) for m in args.methods.split(",") if m]
    bandwidth = copy_bandwidth()
    env = TUNED_MALLOC_ENV if args.malloc == "tuned" else None

    results = {}  # (variant, shape) -> list of per-round dicts
    for round_index in range(args.rounds):
        for shape in shapes:
            order = variants if round_index % 2 == 0 else variants[::-1]
            for variant in order:
                results.setdefault((variant, shape), []).append(run_worker(variant[0], shape, variant[1], env))

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s; {args.rounds} rounds, each side in its own process; "
          f"malloc {args.malloc}\n")
    print("| (B, C, H, W) | side | device | fwd ms | fwd+bwd ms | fwd / torch | fwd+bwd / torch "
          "| fwd / floor | fwd+bwd / floor | peak MiB fwd+bwd | XLA MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in shapes:
        fwd_bytes, total_bytes = floor_bytes(shape)
        floor_fwd, floor_total = 1e3 * fwd_bytes / bandwidth, 1e3 * total_bytes / bandwidth
        summary = {}
        for variant in variants:
            runs = results[(variant, shape)]
            summary[variant] = {
                "fwd": statistics.median(r["fwd_ms"] for r in runs),
                "fwdbwd": statistics.median(r["fwdbwd_ms"] for r in runs),
                "peak": runs[-1]["peak_mb"],
                "xla": runs[-1].get("xla_mb"),
                "device": runs[-1]["device"],
            }
        ref = summary.get(("torch", None))
        for variant in variants:
            row = summary[variant]
            name = variant[0] if variant[1] is None else f"{variant[0]}[{variant[1]}]"
            ratio_f = row["fwd"] / ref["fwd"] if ref else None
            ratio_b = row["fwdbwd"] / ref["fwdbwd"] if ref else None
            print(f"| {shape} | {name} | {row['device']} | {row['fwd']:.2f} | "
                  f"{row['fwdbwd']:.2f} | {_fmt(ratio_f)} | {_fmt(ratio_b)} | "
                  f"{row['fwd'] / floor_fwd:.1f} | {row['fwdbwd'] / floor_total:.1f} | "
                  f"{_fmt(row['peak'], 1)} | {_fmt(row['xla'], 1)} |")
    print("\nfloor = bytes moved / copy bandwidth. peak MiB = growth of the process's peak RSS "
          "during the first fwd+bwd call over the resident inputs (CUDA: of allocated memory); "
          "XLA MiB = temp + output bytes of the compiled fwd+bwd (XLA's memory analysis).")


if __name__ == "__main__":
    main()
