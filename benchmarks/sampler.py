"""Benchmark of the sampler: stn.sampling.sample vs map_coordinates vs torch grid_sample.

Prints one markdown table of forward and forward+backward (gradients to the image and to the
grid) milliseconds, medians of many runs after warm-up, with the ratios to torch's
``grid_sample`` when torch is importable (its columns are skipped otherwise). Cases (``--cases``):
``2d`` the bilinear shapes of the speed targets, ``bicubic`` the same shapes with the bicubic kernel,
``3d`` trilinear volumes.

Each side runs in its OWN subprocess (one per side and shape), and the sides alternate over
``--rounds`` rounds; the reported time is the median over rounds of each process's median. In
one process JAX's and torch's thread pools disturb each other, so they are never mixed.

Also printed: peak extra memory of forward+backward (JAX: XLA's compiled memory analysis, temp +
output bytes; torch: growth of the process's peak RSS over the inputs), and the distance from the
memory-bandwidth floor (bytes a sampler must move / measured copy bandwidth: the host's, or the
accelerator's when the JAX workers run on one), whether repeated backward passes are bit-identical,
and how far each side's gradients are from torch's.

    python benchmarks/sampler.py                      # all shapes, all sides, 3 rounds
    python benchmarks/sampler.py --rounds 5 --sides stn,torch
    python benchmarks/sampler.py --methods gather,window   # stn's internal methods too
    python benchmarks/sampler.py --sides stn,stn_det,torch   # on a GPU: XLA's deterministic ops
    python benchmarks/sampler.py --cases 3d,bicubic --sides stn,torch
    python benchmarks/sampler.py --cases 2d --sides stn,stn_base,torch --base-root OLD
        # stn_base: the stn package of another checkout (e.g. `git archive` of an older commit into OLD)

``--in-process`` instead times the native CPU sampler (``stn[native]``), the pure-jnp
sampler (``stn[jnp]``) and torch's ``grid_sample`` in ONE process, alternating the three every
round, and reports the minimum over all runs (min is the least disturbed
by other load). torch comes from the running Python or from ``--torch-site`` (a site-packages
folder appended to ``sys.path``, e.g. another virtualenv's lib/python3.11/site-packages); without it the
torch column is skipped.

    python benchmarks/sampler.py --in-process --cases 2d,3d,registration --rounds 10 \
        --torch-site TORCH_VENV/lib/python3.11/site-packages

``--native-cpu`` prints the native path's process CPU time per call on one thread
(``STN_NATIVE_THREADS=1``, min of ``--repeats`` calls), which other load disturbs much less:

    python benchmarks/sampler.py --native-cpu --cases 2d,3d --repeats 20

The inputs are identical on every side: a fixed-seed image (NHWC / NDHWC) and affine grids near
the identity (zeros padding, align_corners=False, output size = input size).
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
VOLUME_SHAPES = ((2, 1, 64, 64, 64), (1, 3, 96, 96, 96))
REGISTRATION_SHAPE = (1, 1, 160, 192, 224)  # a 3-D registration volume, dense grid
CASES = {  # name -> [(shape (B, C, *spatial), kernel)]; torch's mode has the same name
    "2d": [(shape, "bilinear") for shape in SHAPES],
    "bicubic": [(shape, "bicubic") for shape in SHAPES],
    "3d": [(shape, "bilinear") for shape in VOLUME_SHAPES],
    "registration": [(REGISTRATION_SHAPE, "bilinear")],
}

# glibc malloc returns every free block larger than its mmap threshold (at most 32 MiB by default;
# any block over 64 MiB from a thread's arena) to the OS, so an XLA program whose temporary buffer
# exceeds it page-faults its whole temp space in again on every call (sys time can exceed user
# time). These settings keep freed memory in the process; --malloc tuned applies them to every
# worker, JAX and torch alike (docs/reports/performance.md).
TUNED_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 32),
}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---------------------------------------------------------------- inputs (numpy, all sides)


def make_inputs(shape: tuple[int, ...], seed: int = 0):
    """Channels-last image, ``[B, *spatial, n]`` grid (x, y[, z]) of random affine maps near the
    identity, and a cotangent; ``shape`` is torch's ``(B, C, *spatial)``."""
    batch, channels, *spatial = shape
    n = len(spatial)
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(batch, *spatial, channels)).astype(np.float32)
    theta = np.tile(np.eye(n, n + 1), (batch, 1, 1))
    theta = (theta + rng.normal(scale=0.1, size=theta.shape)).astype(np.float32)
    centres = [(2 * np.arange(size) + 1) / size - 1 for size in spatial]  # align_corners=False
    target = np.stack(np.meshgrid(*centres, indexing="ij")[::-1], -1)  # [*spatial, n]: x, y(, z)
    target = np.concatenate([target, np.ones(target.shape[:-1] + (1,))], -1)
    grid = np.einsum("bij,...j->b...i", theta, target).astype(np.float32)
    cotangent = rng.normal(size=(batch, *spatial, channels)).astype(np.float32)
    return image, grid, cotangent


def floor_bytes(shape: tuple[int, ...]) -> tuple[int, int]:
    """Bytes a float32 sampler must move: forward (read U and grid, write V) and fwd+bwd.

    The backward reads the cotangent, U and the grid again and writes dU and the grid gradient.
    """
    batch, channels, *spatial = shape
    points = batch * int(np.prod(spatial))
    image = points * channels * 4
    grid = points * len(spatial) * 4
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


REPEATS_FOR_DETERMINISM = 5


def grad_digest(d_image: np.ndarray, d_grid: np.ndarray) -> list[float]:
    """Four numbers that identify a pair of gradients (norms and fixed random projections).

    Compared across sides (NHWC image gradient, [B, H, W, 2] grid gradient), they show that a
    fast or deterministic path computes the same gradients as torch, without shipping arrays.
    """
    rng = np.random.default_rng(1)
    d_image, d_grid = np.asarray(d_image, np.float64), np.asarray(d_grid, np.float64)
    return [float(np.linalg.norm(d_image)), float(np.linalg.norm(d_grid)),
            float(np.vdot(d_image, rng.normal(size=d_image.shape))),
            float(np.vdot(d_grid, rng.normal(size=d_grid.shape)))]


def digest_error(digest: list[float], reference: list[float]) -> float:
    """Largest difference of two ``grad_digest``s, relative to the reference gradient's norm."""
    image_norm, grid_norm = max(reference[0], 1e-30), max(reference[1], 1e-30)
    return max(abs(digest[0] - reference[0]) / image_norm, abs(digest[2] - reference[2]) / image_norm,
               abs(digest[1] - reference[1]) / grid_norm, abs(digest[3] - reference[3]) / grid_norm)


def is_deterministic(run_grads) -> bool:
    """Whether ``run_grads()`` (numpy image and grid gradients) repeats bit for bit."""
    first = run_grads()
    return all(all(np.array_equal(a, b) for a, b in zip(first, run_grads()))
               for _ in range(REPEATS_FOR_DETERMINISM - 1))


def jax_peak_growth_mb(fn) -> float | None:
    """Peak memory growth (MiB) of ``fn()`` on the default JAX device: of the process's RSS on
    the CPU, else of the accelerator's bytes in use over the resident inputs."""
    import jax

    if jax.devices()[0].platform == "cpu":
        return peak_rss_growth_mb(fn)
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    before = stats["bytes_in_use"]
    fn()
    return (jax.devices()[0].memory_stats()["peak_bytes_in_use"] - before) / 2**20


def torch_peak_growth_mb(fn, device: str) -> float | None:
    """Peak memory growth (MiB) of ``fn()``: of CUDA's allocated bytes, or else of the RSS."""
    if device != "cuda":
        return peak_rss_growth_mb(fn)
    import torch

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def jax_copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes/s of ``x + 1`` over a large float32 array on the default JAX device (read + write)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones(nbytes // 4, jnp.float32)
    add_one = jax.jit(lambda a: a + 1.0)
    return 2 * nbytes / (time_ms(lambda: add_one(x).block_until_ready(), min_runs=10) / 1e3)


def worker_jax(side: str, shape, kernel: str, method: str | None,
               base_root: str | None = None) -> dict:
    """Times stn.sampling.sample (``side == "stn"``; ``"stn_det"``: the same under XLA's
    deterministic-ops flag, which matters on GPU only; ``"stn_base"``: the stn package under
    ``base_root``) or vmapped map_coordinates (linear only)."""
    sys.path.insert(0, base_root if side == "stn_base" else ROOT)
    if side == "stn_det":  # before JAX starts
        from stn.experiments import host

        host.deterministic_gpu_ops()
    import jax
    import jax.numpy as jnp

    image, grid, cotangent = (jnp.asarray(a) for a in make_inputs(shape))
    spatial = shape[2:]
    if side in ("stn", "stn_det", "stn_base"):
        from stn import sampling

        def forward(u, g):
            if method is None:
                return sampling.sample(u, g, kernel=kernel)
            return sampling._sample(u, g, kernel=kernel, padding="zeros",
                                    align_corners=False, method=method)
    else:
        if kernel != "bilinear":
            raise RuntimeError("map_coordinates has no bicubic kernel (order <= 1)")
        from jax.scipy.ndimage import map_coordinates

        def one_plane(plane, coords):  # plane [(D,) H, W]; coords (z,) y, x [*out] pixel units
            return map_coordinates(plane, coords, order=1, mode="constant", cval=0.0)

        def forward(u, g):
            coords = [((g[..., len(spatial) - 1 - a] + 1) * size - 1) / 2
                      for a, size in enumerate(spatial)]
            per_channel = jax.vmap(one_plane, in_axes=(-1, None), out_axes=-1)
            return jax.vmap(per_channel)(u, coords)

    def forward_backward(u, g, ct):
        out, vjp = jax.vjp(forward, u, g)
        return vjp(ct)

    fwd = jax.jit(forward).lower(image, grid).compile()
    fwdbwd = jax.jit(forward_backward).lower(image, grid, cotangent).compile()
    memory = fwdbwd.memory_analysis()
    xla_mb = None
    if memory is not None:
        xla_mb = (memory.temp_size_in_bytes + memory.output_size_in_bytes) / 2**20
    platform = str(jax.devices()[0].platform)
    peak_mb = jax_peak_growth_mb(lambda: jax.block_until_ready(fwdbwd(image, grid, cotangent)))
    grads = lambda: [np.asarray(g) for g in fwdbwd(image, grid, cotangent)]  # noqa: E731
    return {
        "xla_mb": xla_mb,
        "fwd_ms": time_ms(lambda: fwd(image, grid).block_until_ready()),
        "fwdbwd_ms": time_ms(lambda: jax.block_until_ready(fwdbwd(image, grid, cotangent))),
        "peak_mb": peak_mb,
        "device": platform,
        "deterministic": is_deterministic(grads),
        "digest": grad_digest(*grads()),
        "copy_bytes_per_s": None if platform == "cpu" else jax_copy_bandwidth(),
    }


def worker_torch(shape, kernel: str) -> dict:
    """Times torch.nn.functional.grid_sample (CUDA when available) in this process."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    image, grid, cotangent = make_inputs(shape)
    to_channels_first = (0, image.ndim - 1, *range(1, image.ndim - 1))  # NHWC -> NCHW etc.
    to_channels_last = (0, *range(2, image.ndim), 1)
    image = torch.from_numpy(image).permute(*to_channels_first).contiguous().to(device)
    grid = torch.from_numpy(grid).clone().to(device)
    cotangent = torch.from_numpy(cotangent).permute(*to_channels_first).contiguous().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            F.grid_sample(image, grid, mode=kernel, padding_mode="zeros", align_corners=False)
        sync()

    image_r = image.clone().requires_grad_(True)
    grid_r = grid.clone().requires_grad_(True)

    def gradients():
        out = F.grid_sample(image_r, grid_r, mode=kernel, padding_mode="zeros",
                            align_corners=False)
        return torch.autograd.grad(out, (image_r, grid_r), cotangent)

    def forward_backward():
        gradients()
        sync()

    forward()  # start torch's thread pool before measuring memory
    peak_mb = torch_peak_growth_mb(forward_backward, device)

    def grads():  # as numpy, the image gradient in NHWC like the JAX side's
        d_image, d_grid = gradients()
        return [d_image.permute(*to_channels_last).cpu().numpy(), d_grid.cpu().numpy()]

    return {"fwd_ms": time_ms(forward), "fwdbwd_ms": time_ms(forward_backward),
            "peak_mb": peak_mb, "device": device, "deterministic": is_deterministic(grads),
            "digest": grad_digest(*grads())}


# ---------------------------------------------------------------- driver


def run_worker(side: str, shape, kernel: str, method: str | None, env: dict | None = None,
               base_root: str | None = None) -> dict:
    """One fresh subprocess for one side, shape and kernel; returns its JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side,
           "--shape", ",".join(map(str, shape)), "--kernel", kernel]
    if method:
        cmd += ["--method", method]
    if base_root:
        cmd += ["--base-root", base_root]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {side} {shape} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_available() -> bool:
    """Whether torch imports (in a subprocess, so this process never loads it)."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return proc.returncode == 0


# ---------------------------------------------------------------- one process, alternating


def _jax_callables(shape, kernel: str, method: str):
    """``(forward, forward+backward)`` of ``stn.sampling.sample(method=...)``, compiled, each
    blocking until its result is ready."""
    import jax
    import jax.numpy as jnp

    from stn import sampling

    image, grid, cotangent = (jnp.asarray(a) for a in make_inputs(shape))

    def forward(u, g):
        return sampling.sample(u, g, kernel=kernel, method=method)

    def forward_backward(u, g, ct):
        out, vjp = jax.vjp(forward, u, g)
        return vjp(ct)

    fwd = jax.jit(forward).lower(image, grid).compile()
    fwdbwd = jax.jit(forward_backward).lower(image, grid, cotangent).compile()
    return (lambda: fwd(image, grid).block_until_ready(),
            lambda: jax.block_until_ready(fwdbwd(image, grid, cotangent)))


def _torch_callables(shape, kernel: str):
    """``(forward, forward+backward)`` of torch's ``grid_sample`` on the same inputs (NCHW)."""
    import torch
    import torch.nn.functional as F

    image, grid, cotangent = make_inputs(shape)
    to_channels_first = (0, image.ndim - 1, *range(1, image.ndim - 1))
    image = torch.from_numpy(image).permute(*to_channels_first).contiguous()
    cotangent = torch.from_numpy(cotangent).permute(*to_channels_first).contiguous()
    grid = torch.from_numpy(grid).clone()
    image_r, grid_r = image.clone().requires_grad_(True), grid.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            F.grid_sample(image, grid, mode=kernel, padding_mode="zeros", align_corners=False)

    def forward_backward():
        out = F.grid_sample(image_r, grid_r, mode=kernel, padding_mode="zeros",
                            align_corners=False)
        torch.autograd.grad(out, (image_r, grid_r), cotangent)

    return forward, forward_backward


def run_in_process(cases, rounds: int, repeats: int, torch_site: str | None) -> None:
    """Times stn[native], stn[jnp] and torch in this process, alternating, min of all runs."""
    sys.path.insert(0, ROOT)
    if torch_site:
        sys.path.append(torch_site)
    try:
        import torch  # noqa: F401
        has_torch = True
    except ImportError:
        print("torch is not importable: its columns are skipped", file=sys.stderr)
        has_torch = False
    from stn import native

    if not native.available():
        print(f"native sampler unavailable ({native.unavailable_reason()}): stn[native] skipped",
              file=sys.stderr)
    print("| (B, C, (D,) H, W) | kernel | side | fwd ms | fwd+bwd ms | fwd / torch "
          "| fwd+bwd / torch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape, kernel in cases:
        sides = {}
        if native.available():
            sides["stn[native]"] = _jax_callables(shape, kernel, "native")
        sides["stn[jnp]"] = _jax_callables(shape, kernel, "jnp")
        if has_torch:
            sides["torch"] = _torch_callables(shape, kernel)
        best = {name: [float("inf"), float("inf")] for name in sides}
        for pair in sides.values():  # warm-up
            for fn in pair:
                fn()
        names = list(sides)
        for round_index in range(rounds):
            for name in (names if round_index % 2 == 0 else names[::-1]):
                for which, fn in enumerate(sides[name]):
                    for _ in range(repeats):
                        start = time.perf_counter()
                        fn()
                        best[name][which] = min(best[name][which],
                                                (time.perf_counter() - start) * 1e3)
        ref = best.get("torch")
        for name in names:
            fwd, fwdbwd = best[name]
            ratio_f = _fmt(fwd / ref[0]) if ref else "-"
            ratio_b = _fmt(fwdbwd / ref[1]) if ref else "-"
            print(f"| {shape} | {kernel} | {name} | {fwd:.2f} | {fwdbwd:.2f} | {ratio_f} | "
                  f"{ratio_b} |", flush=True)
    load = os.getloadavg()
    print(f"\nmin over {rounds} alternating rounds x {repeats} calls; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")


def run_native_cpu_time(cases, repeats: int) -> None:
    """Process CPU milliseconds per call of the native path on ONE thread (``STN_NATIVE_THREADS=1``),
    min of ``repeats`` calls: the kernel's own cost, much less disturbed by other load than wall
    time (other processes' time is not counted; they only evict caches and stall this one)."""
    os.environ["STN_NATIVE_THREADS"] = "1"  # read when sample() traces, i.e. below
    sys.path.insert(0, ROOT)
    from stn import native

    if not native.available():
        sys.exit(f"native sampler unavailable: {native.unavailable_reason()}")
    print("| (B, C, (D,) H, W) | kernel | fwd CPU ms | fwd+bwd CPU ms | fwd ns/point | "
          "fwd+bwd ns/point |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape, kernel in cases:
        points = shape[0] * int(np.prod(shape[2:]))
        best = []
        for fn in _jax_callables(shape, kernel, "native"):
            fn()
            times = []
            for _ in range(repeats):
                start = time.process_time()
                fn()
                times.append((time.process_time() - start) * 1e3)
            best.append(min(times))
        print(f"| {shape} | {kernel} | {best[0]:.2f} | {best[1]:.2f} | "
              f"{best[0] * 1e6 / points:.2f} | {best[1] * 1e6 / points:.2f} |", flush=True)
    load = os.getloadavg()
    print(f"\nmin of {repeats} calls, process CPU time, STN_NATIVE_THREADS=1; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help="B,C,H,W or B,C,D,H,W (default: the shapes of --cases)")
    parser.add_argument("--kernel", default="bilinear", help="with --shape: bilinear or bicubic")
    parser.add_argument("--cases", default="2d,bicubic,3d", help=f"comma list of {list(CASES)}")
    parser.add_argument("--base-root", help="checkout whose stn package the stn_base side times")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--sides", default="stn,map_coordinates,torch")
    parser.add_argument("--malloc", choices=("default", "tuned"), default="default",
                        help="tuned: run every worker with TUNED_MALLOC_ENV (no per-call page faults)")
    parser.add_argument("--in-process", action="store_true",
                        help="native vs jnp vs torch in this process, alternating, min of runs")
    parser.add_argument("--repeats", type=int, default=5, help="--in-process: calls per round")
    parser.add_argument("--torch-site", help="--in-process: a site-packages folder with torch")
    parser.add_argument("--native-cpu", action="store_true",
                        help="process CPU time of the native path on one thread, min of --repeats")
    parser.add_argument("--methods", default="",
                        help="comma list of stn.sampling internal methods to time as extra rows")
    args = parser.parse_args()

    if args.worker:
        shape = tuple(int(s) for s in args.shape.split(","))
        if args.worker == "torch":
            result = worker_torch(shape, args.kernel)
        else:
            result = worker_jax(args.worker, shape, args.kernel, args.method, args.base_root)
        print(json.dumps(result))
        return

    if args.shape:
        cases = [(tuple(int(s) for s in args.shape.split(",")), args.kernel)]
    else:
        cases = [case for name in args.cases.split(",") if name for case in CASES[name]]
    if args.native_cpu:
        run_native_cpu_time(cases, args.repeats)
        return
    if args.in_process:
        run_in_process(cases, args.rounds, args.repeats, args.torch_site)
        return
    sides = [s for s in args.sides.split(",") if s]
    if "torch" in sides and not torch_available():
        print("torch is not importable: its columns are skipped", file=sys.stderr)
        sides.remove("torch")
    variants = [(side, None) for side in sides]
    variants += [("stn", m) for m in args.methods.split(",") if m]
    bandwidth = copy_bandwidth()
    env = TUNED_MALLOC_ENV if args.malloc == "tuned" else None

    results = {}  # (variant, case) -> list of per-round dicts (a failed worker adds nothing)
    for round_index in range(args.rounds):
        for case in cases:
            order = variants if round_index % 2 == 0 else variants[::-1]
            for variant in order:
                runs = results.setdefault((variant, case), [])
                if variant[0] == "map_coordinates" and case[1] != "bilinear":
                    continue  # order <= 1 only
                try:
                    runs.append(run_worker(variant[0], case[0], case[1], variant[1], env,
                                           args.base_root))
                except RuntimeError as error:  # one broken side must not lose the others
                    print(error, file=sys.stderr)
    device_bandwidths = [r["copy_bytes_per_s"] for runs in results.values() for r in runs
                         if r.get("copy_bytes_per_s")]
    if device_bandwidths:  # an accelerator: its own memory is what the sampler moves
        bandwidth = statistics.median(device_bandwidths)

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s ({'device' if device_bandwidths else 'host'}); "
          f"{args.rounds} rounds, each side in its own process; malloc {args.malloc}\n")
    print("| (B, C, (D,) H, W) | kernel | side | device | fwd ms | fwd+bwd ms | fwd / torch | fwd+bwd / torch "
          "| fwd / floor | fwd+bwd / floor | peak MiB fwd+bwd | XLA MiB | deterministic "
          "| grads vs torch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in cases:
        shape, kernel = case
        fwd_bytes, total_bytes = floor_bytes(shape)
        floor_fwd, floor_total = 1e3 * fwd_bytes / bandwidth, 1e3 * total_bytes / bandwidth
        summary = {}
        for variant in variants:
            runs = results[(variant, case)]
            if not runs:
                continue
            summary[variant] = {
                "fwd": statistics.median(r["fwd_ms"] for r in runs),
                "fwdbwd": statistics.median(r["fwdbwd_ms"] for r in runs),
                "peak": runs[-1]["peak_mb"],
                "xla": runs[-1].get("xla_mb"),
                "device": runs[-1]["device"],
                "deterministic": all(r["deterministic"] for r in runs),
                "digest": runs[-1]["digest"],
            }
        ref = summary.get(("torch", None))
        for variant in variants:
            name = variant[0] if variant[1] is None else f"{variant[0]}[{variant[1]}]"
            row = summary.get(variant)
            if row is None:
                if not (variant[0] == "map_coordinates" and kernel != "bilinear"):
                    print(f"| {shape} | {kernel} | {name} | failed (see stderr) |")
                continue
            ratio_f = row["fwd"] / ref["fwd"] if ref else None
            ratio_b = row["fwdbwd"] / ref["fwdbwd"] if ref else None
            grads_error = digest_error(row["digest"], ref["digest"]) if ref else None
            print(f"| {shape} | {kernel} | {name} | {row['device']} | {row['fwd']:.2f} | "
                  f"{row['fwdbwd']:.2f} | {_fmt(ratio_f)} | {_fmt(ratio_b)} | "
                  f"{row['fwd'] / floor_fwd:.1f} | {row['fwdbwd'] / floor_total:.1f} | "
                  f"{_fmt(row['peak'], 1)} | {_fmt(row['xla'], 1)} | "
                  f"{'yes' if row['deterministic'] else 'NO'} | "
                  f"{'-' if grads_error is None else f'{grads_error:.1e}'} |")
    print("\nfloor = bytes moved / copy bandwidth. peak MiB = growth of the process's peak RSS "
          "during the first fwd+bwd call over the resident inputs (on an accelerator: of its "
          "allocated memory); XLA MiB = temp + output bytes of the compiled fwd+bwd (XLA's "
          f"memory analysis). deterministic = {REPEATS_FOR_DETERMINISM} fwd+bwd calls gave "
          "bit-identical gradients. grads vs torch = largest relative difference of the gradient "
          "digests (norms and random projections of both gradients).")


if __name__ == "__main__":
    main()
