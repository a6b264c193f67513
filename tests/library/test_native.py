"""The native CPU sampler (stn/native) against the pure-jnp reference of stn.sampling.

Values, both cotangents (image and grid) and forward-mode tangents must agree to float32
rounding (float64: to 1e-12) for the nearest and linear kernels in 2-D and 3-D, every padding,
both align_corners, odd sizes, points on pixel centres, on edges, outside, and NaN / inf / 1e30
points; gradients must be bit-identical run after run and for any number of threads; jit, vmap,
grad and sharded inputs must work; and where the library cannot be built the jnp path runs and
one warning line says so.

These tests need a C++ compiler (they are skipped without one); they run whatever STN_NATIVE
says (they force it on, except the fallback tests, which turn it off).
"""

import functools
import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn import native, sampling
from stn.native import build as build_lib

from helpers import ROOT

pytestmark = pytest.mark.skipif(build_lib.find_compiler() is None,
                                reason="no C++ compiler: the native sampler cannot be built")

CASES = list(itertools.product((2, 3), ("bilinear", "nearest"), tuple(native.PADDING_CODES),
                               (False, True)))
CASE_IDS = [f"{n}d-{k}-{p}-{'ac' if a else 'edges'}" for n, k, p, a in CASES]


@pytest.fixture(autouse=True)
def _native_on(monkeypatch):
    """The native path is tested even when the run has STN_NATIVE=0 for the other files."""
    monkeypatch.delenv("STN_NATIVE", raising=False)
    monkeypatch.delenv("STN_NATIVE_THREADS", raising=False)
    assert native.available(), native.unavailable_reason()


def _normalized(pixel, size, align_corners):
    """Grid coordinate of a pixel-unit coordinate (inverse of sampling.unnormalize)."""
    if align_corners:
        return pixel / (size - 1) * 2 - 1 if size > 1 else 0.0 * pixel
    return (2 * pixel + 1) / size - 1


def _points(rng, sizes, align_corners, count=40):
    """[count + special, n] grid points (x, y[, z]): random ones inside and around the image,
    pixel centres, edges, halves, far outside, and non-finite / huge ones."""
    n = len(sizes)
    axis_sizes = sizes[::-1]  # grid order x, y(, z)
    pixel = rng.uniform(-2.5, 1.5, size=(count, n)) * 1.0
    pixel += np.asarray(axis_sizes)[None, :] * rng.uniform(0, 1, size=(count, n))
    special_pixels = []
    for value in (0.0, 1.0, -0.5, -1.0, 0.5):  # centres, an edge, a half
        special_pixels.append([value] * n)
    special_pixels.append([s - 1.0 for s in axis_sizes])       # last centres
    special_pixels.append([s - 0.5 for s in axis_sizes])       # outer edges
    special_pixels.append([s * 1.0 for s in axis_sizes])       # one beyond
    special_pixels.append([2.0] * (n - 1) + [axis_sizes[-1] - 1.0])
    pixels = np.concatenate([pixel, np.asarray(special_pixels)])
    grid = np.stack([_normalized(pixels[:, a], axis_sizes[a], align_corners) for a in range(n)],
                    -1)
    weird = np.array([[np.nan] + [0.1] * (n - 1), [np.inf] + [0.2] * (n - 1),
                      [-np.inf] * n, [0.3] + [np.nan] * (n - 1), [1e30] + [0.1] * (n - 1),
                      [-1e30] * n, [0.2] * (n - 1) + [3e38]])
    return np.concatenate([grid, weird])


def _case(num_axes, align_corners, dtype, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    sizes = (5, 7) if num_axes == 2 else (3, 5, 7)
    image = rng.normal(size=(2, *sizes, channels))
    points = np.stack([_points(rng, sizes, align_corners) for _ in range(2)])  # [2, P, n]
    grid = points.reshape(2, 1, -1, num_axes) if num_axes == 2 else \
        points.reshape(2, 1, 1, -1, num_axes)
    return jnp.asarray(image, dtype), jnp.asarray(grid, dtype)


def _run(image, grid, kernel, padding, align_corners, method, seed=1):
    """Values, (image, grid) cotangents of a fixed random cotangent, and a JVP tangent."""
    fn = lambda u, g: sampling.sample(u, g, kernel=kernel, padding=padding,  # noqa: E731
                                      align_corners=align_corners, method=method)
    out, vjp = jax.vjp(fn, image, grid)
    rng = np.random.default_rng(seed)
    cotangent = jnp.asarray(rng.normal(size=out.shape), out.dtype)
    tangents = (jnp.asarray(rng.normal(size=image.shape), image.dtype),
                jnp.asarray(rng.normal(size=grid.shape), grid.dtype))
    tangents = (tangents[0], jnp.where(jnp.isfinite(grid), tangents[1], 0))
    _, tangent = jax.jvp(fn, (image, grid), tangents)
    return [np.asarray(a) for a in (out, *vjp(cotangent), tangent)]


def _assert_close(native_parts, jnp_parts, tolerance):
    for name, a, b in zip(("values", "image cotangent", "grid cotangent", "tangent"),
                          native_parts, jnp_parts):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        scale = max(1.0, float(np.max(np.abs(b))))
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance * scale, err_msg=name)


@pytest.mark.parametrize("num_axes,kernel,padding,align_corners", CASES, ids=CASE_IDS)
def test_float32_matches_jnp_path(num_axes, kernel, padding, align_corners):
    image, grid = _case(num_axes, align_corners, jnp.float32)
    parts = _run(image, grid, kernel, padding, align_corners, "native")
    reference = _run(image, grid, kernel, padding, align_corners, "jnp")
    _assert_close(parts, reference, 2e-6)
    assert np.all(np.isfinite(parts[0])) and np.all(np.isfinite(parts[2]))
    non_finite = ~np.all(np.isfinite(np.asarray(grid)), axis=-1)
    np.testing.assert_array_equal(parts[0][non_finite], 0.0)  # NaN/inf points sample 0
    np.testing.assert_array_equal(parts[2][non_finite], 0.0)  # ... and pass no gradient


@pytest.mark.parametrize("num_axes,padding,align_corners",
                         [(n, p, a) for n, k, p, a in CASES if k == "bilinear"],
                         ids=[i.replace("-bilinear", "") for c, i in zip(CASES, CASE_IDS)
                              if c[1] == "bilinear"])
@pytest.mark.slow
def test_one_channel_vector_path_matches_jnp_path(num_axes, padding, align_corners):
    """One channel takes the kernel's vector path (kLanes points at a time, masked gathers); 56
    points per slice, not a multiple of the lanes, so a block's tail is covered too."""
    image, grid = _case(num_axes, align_corners, jnp.float32, seed=7, channels=1)
    parts = _run(image, grid, "bilinear", padding, align_corners, "native")
    reference = _run(image, grid, "bilinear", padding, align_corners, "jnp")
    _assert_close(parts, reference, 2e-6)
    non_finite = ~np.all(np.isfinite(np.asarray(grid)), axis=-1)
    np.testing.assert_array_equal(parts[0][non_finite], 0.0)
    np.testing.assert_array_equal(parts[2][non_finite], 0.0)
    if padding == "reflection" and align_corners:  # and the float64 lanes (4 per vector)
        with jax.enable_x64(True):
            image, grid = _case(num_axes, align_corners, jnp.float64, seed=8, channels=1)
            parts = _run(image, grid, "bilinear", padding, align_corners, "native")
            reference = _run(image, grid, "bilinear", padding, align_corners, "jnp")
        _assert_close(parts, reference, 1e-12)


@pytest.mark.parametrize("num_axes,kernel,padding,align_corners",
                         [c for c in CASES if c[1] == "bilinear"],
                         ids=[i for c, i in zip(CASES, CASE_IDS) if c[1] == "bilinear"])
def test_float64_matches_jnp_path(num_axes, kernel, padding, align_corners):
    with jax.enable_x64(True):
        image, grid = _case(num_axes, align_corners, jnp.float64, seed=3)
        parts = _run(image, grid, kernel, padding, align_corners, "native")
        reference = _run(image, grid, kernel, padding, align_corners, "jnp")
    _assert_close(parts, reference, 1e-12)


def test_auto_picks_native_for_its_cases_only():
    image, grid = _case(2, False, jnp.float32)
    for kernel in ("bilinear", "nearest", ("nearest", "nearest")):
        kernels = sampling.axis_kernels(kernel, 2)
        assert sampling._use_native(image, grid, kernels, "auto")
    for kernel in ("bicubic", ("bilinear", "nearest")):
        kernels = sampling.axis_kernels(kernel, 2)
        assert not sampling._use_native(image, grid, kernels, "auto")
        with pytest.raises(ValueError, match="method='native' needs the nearest or bilinear"):
            sampling.sample(image, grid, kernel=kernel, method="native")
    integer = jnp.zeros((1, 3, 3, 1), jnp.int32)
    assert not sampling._use_native(integer, grid[:1], sampling.axis_kernels("bilinear", 2),
                                    "auto")
    with pytest.raises(ValueError, match="method must be one of"):
        sampling.sample(image, grid, method="fast")


def test_bfloat16_image_is_computed_in_float32():
    image, grid = _case(2, False, jnp.float32)
    low = image.astype(jnp.bfloat16)
    out = sampling.sample(low, grid, method="native")
    assert out.dtype == jnp.bfloat16
    expected = sampling.sample(low.astype(jnp.float32), grid, method="jnp").astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))


def _grads(image, grid, kernel="bilinear"):
    fn = lambda u, g: sampling.sample(u, g, kernel=kernel, method="native")  # noqa: E731
    out, vjp = jax.vjp(fn, image, grid)
    cotangent = jnp.asarray(np.random.default_rng(5).normal(size=out.shape), out.dtype)
    return [np.asarray(a) for a in (out, *vjp(cotangent))]


@pytest.mark.parametrize("num_axes,channels", [(2, 2), (3, 2), (2, 1), (3, 1)])
def test_bit_identical_across_runs_and_thread_counts(num_axes, channels, monkeypatch):
    """Each batch slice's image cotangent is accumulated by one thread in point order, and
    the forward is split into items of whole points, so no thread count changes a bit."""
    rng = np.random.default_rng(11)
    sizes = (41, 53) if num_axes == 2 else (9, 21, 23)  # > 8192 points: several forward items
    image = jnp.asarray(rng.normal(size=(5, *sizes, channels)), jnp.float32)
    grid = jnp.asarray(rng.uniform(-1.1, 1.1, size=(5, *sizes, num_axes)), jnp.float32)
    runs = []
    for threads in ("1", "2", "3", "0", "0"):
        monkeypatch.setenv("STN_NATIVE_THREADS", threads)
        runs.append(_grads(image, grid))
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            np.testing.assert_array_equal(a, b)


def test_jit_vmap_and_grad():
    image, grid = _case(2, True, jnp.float32)
    stacked_images = jnp.stack([image, image[::-1] * 2])
    stacked_grids = jnp.stack([grid, grid[:, :, ::-1]])

    def loss(u, g, method):
        out = sampling.sample(u, g, padding="border", align_corners=True, method=method)
        return jnp.sum(jnp.where(jnp.isfinite(out), out, 0) ** 2)

    def batched(method, in_axes):
        grad = jax.grad(lambda u, g: loss(u, g, method), argnums=(0, 1))
        return jax.jit(jax.vmap(grad, in_axes=in_axes))

    for in_axes, args in [((0, 0), (stacked_images, stacked_grids)),
                          ((None, 0), (image, stacked_grids)),
                          ((0, None), (stacked_images, grid))]:
        got = batched("native", in_axes)(*args)
        want = batched("jnp", in_axes)(*args)
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=1e-5)
    values = jax.jit(jax.vmap(lambda u, g: sampling.sample(u, g, method="native")))(
        stacked_images, stacked_grids)
    np.testing.assert_allclose(values, jax.vmap(lambda u, g: sampling.sample(u, g, method="jnp"))(
        stacked_images, stacked_grids), atol=1e-6)


def test_unbatched_and_empty_batch():
    image, grid = _case(2, False, jnp.float32)  # unbatched: images only (a 4-D input is a batch)
    np.testing.assert_allclose(sampling.sample(image[0], grid[0], method="native"),
                               sampling.sample(image[0], grid[0], method="jnp"), atol=1e-6)
    image, grid = _case(3, False, jnp.float32)
    empty = sampling.sample(image[:0], grid[:0], method="native")
    assert empty.shape == (0,) + grid.shape[1:-1] + (3,)


def test_sharded_inputs_on_two_cpu_devices():
    """Under jit with the batch sharded over two CPU devices, values and gradients equal the
    jnp path's (in a subprocess: the device count is fixed when JAX starts)."""
    script = textwrap.dedent("""
        import os, sys
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from stn import sampling
        assert len(jax.devices()) == 2
        mesh = Mesh(np.array(jax.devices()), ("batch",))
        rng = np.random.default_rng(0)
        image = jax.device_put(jnp.asarray(rng.normal(size=(4, 9, 11, 2)), jnp.float32),
                               NamedSharding(mesh, P("batch")))
        grid = jax.device_put(jnp.asarray(rng.uniform(-1.2, 1.2, size=(4, 6, 5, 2)), jnp.float32),
                              NamedSharding(mesh, P("batch")))
        def grads(method):
            loss = lambda u, g: jnp.sum(sampling.sample(u, g, method=method) ** 2)
            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(image, grid)
        (v1, (a1, b1)), (v2, (a2, b2)) = grads("native"), grads("jnp")
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
        np.testing.assert_allclose(a1, a2, atol=1e-5)
        np.testing.assert_allclose(b1, b2, atol=1e-4)
        print("ok")
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    env.pop("STN_NATIVE", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ---------------------------------------------------------------- fallback and building


def test_disabled_by_env_runs_jnp(monkeypatch):
    monkeypatch.setenv("STN_NATIVE", "0")
    image, grid = _case(2, False, jnp.float32)
    kernels = sampling.axis_kernels("bilinear", 2)
    assert not native.available()
    assert not sampling._use_native(image, grid, kernels, "auto")
    with pytest.raises(ValueError, match="unavailable: disabled by STN_NATIVE=0"):
        sampling.sample(image, grid, method="native")


def test_without_a_compiler_jnp_runs_and_one_line_says_so(monkeypatch, caplog, tmp_path):
    """A machine without a compiler or a built library: ONE warning line, the jnp path's
    results."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("STN_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(build_lib, "PREBUILT", tmp_path / "not-installed")
    monkeypatch.setattr(build_lib, "find_compiler", lambda: None)
    image, grid = _case(2, False, jnp.float32)
    with caplog.at_level(logging.WARNING, logger="stn.native"):
        first = sampling.sample(image, grid)
        second = sampling.sample(image, grid, kernel="nearest")
    records = [r for r in caplog.records if r.name == "stn.native"]
    assert len(records) == 1 and "\n" not in records[0].getMessage()
    assert "no C++ compiler found" in records[0].getMessage()
    np.testing.assert_array_equal(first, sampling.sample(image, grid, method="jnp"))
    np.testing.assert_array_equal(second, sampling.sample(image, grid, kernel="nearest",
                                                          method="jnp"))
    with pytest.raises(ValueError, match="unavailable: no C.. compiler found"):
        sampling.sample(image, grid, method="native")


def test_a_failing_compiler_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("STN_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(build_lib, "find_compiler", lambda: "/bin/false")
    with pytest.raises(build_lib.BuildError, match="false failed"):
        build_lib.build()
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_build_is_cached_and_follows_the_source(monkeypatch, tmp_path):
    """Built once per source: a second build reuses the file, a changed source builds anew."""
    source = tmp_path / "sampler.cc"
    source.write_text(build_lib.SOURCE.read_text())
    monkeypatch.setattr(build_lib, "SOURCE", source)
    monkeypatch.setenv("STN_NATIVE_CACHE", str(tmp_path / "cache"))
    first = build_lib.build()
    stamp = first.stat().st_mtime_ns
    assert build_lib.build() == first and first.stat().st_mtime_ns == stamp
    source.write_text(source.read_text() + "\n// changed\n")
    second = build_lib.build()
    assert second != first and second.exists()
    assert not list((tmp_path / "cache").glob("*.tmp"))


def _setup_module():
    """The repository's setup.py as a module (its setup() call runs only as __main__)."""
    import importlib.util

    path = os.path.join(ROOT, "setup.py")
    spec = importlib.util.spec_from_file_location("_stn_setup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_without_a_compiler_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-stn")
    line = _setup_module().build_native_sampler(tmp_path)
    assert line.startswith("stn: no C++ compiler found") and "\n" not in line
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_install_time_build_is_the_library_used_at_run_time(monkeypatch, tmp_path):
    """`pip install .` (setup.py) compiles into the package under the name build() looks for
    there, so the first use compiles nothing."""
    installed, cache = tmp_path / "package", tmp_path / "cache"
    installed.mkdir()
    line = _setup_module().build_native_sampler(installed)
    assert line.startswith("stn: built the native CPU sampler"), line
    monkeypatch.setattr(build_lib, "PREBUILT", installed)
    monkeypatch.setenv("STN_NATIVE_CACHE", str(cache))
    (library,) = installed.glob("stn_sampler-*.so")
    assert build_lib.build() == library
    assert not cache.exists() or not list(cache.iterdir())


# ---------------------------------------------------------------- cases the tests above missed


@pytest.mark.slow
@pytest.mark.parametrize("num_axes", [2, 3])
def test_grid_dtype_sets_the_compute_dtype(num_axes):
    """A float32 image with a float64 grid is computed in float64 (the grid's precision), at
    points where rounding the grid to float32 moves the sample by far more than the tolerance."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        sizes = (6, 600) if num_axes == 2 else (3, 4, 600)  # a wide x axis: 300 px per unit
        image = jnp.asarray(rng.uniform(-1000, 1000, size=(2, *sizes, 2)), jnp.float32)
        grid = rng.uniform(-0.9, 0.9, size=(2, 1, 64, num_axes)) if num_axes == 2 else \
            rng.uniform(-0.9, 0.9, size=(2, 1, 1, 64, num_axes))
        grid = jnp.asarray(grid + 1e-9, jnp.float64)  # off the float32 values
        parts = _run(image, grid, "bilinear", "zeros", False, "native")
        reference = _run(image, grid, "bilinear", "zeros", False, "jnp")
        _assert_close(parts[:3], reference[:3], 1e-6)
        rounded = sampling.sample(image, grid.astype(jnp.float32), method="jnp")
        assert np.max(np.abs(np.asarray(rounded) - reference[0])) > 1e-2  # the test can fail


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3], ids=["vector-path", "scalar-path"])
@pytest.mark.parametrize("num_axes", [2, 3])
def test_taps_just_past_the_last_row_and_column(num_axes, channels):
    """Points just past the last pixel centres (and just before the first) read one tap inside
    and one outside the image on each axis: an off-by-one tap reads a neighbouring row's (or
    batch slice's) pixel, which the values and the image cotangent would show. Every padding,
    since zeros keeps the outside tap and border / reflection move the point back inside. The
    last batch slice samples inside only, so such a tap stays within the buffers: an assertion
    fails, not the process."""
    rng = np.random.default_rng(9)
    sizes = (4, 5) if num_axes == 2 else (3, 4, 5)
    image = jnp.asarray(rng.uniform(1, 2, size=(3, *sizes, channels)), jnp.float32)
    axis_sizes = sizes[::-1]
    offsets = np.array([0.05, 0.3, 0.5, 0.7, 0.95, 1.2])  # past the last centre, up to outside
    pixels = []
    for a in range(num_axes):  # along each axis in turn: its last (and first) row
        for offset in offsets:
            for other in rng.uniform(-0.4, np.asarray(axis_sizes) - 0.6, size=(3, num_axes)):
                last, first = other.copy(), other.copy()
                last[a], first[a] = axis_sizes[a] - 1 + offset, -offset
                pixels += [last, first]
    corners = [np.asarray(axis_sizes) - 1 + offset for offset in offsets]
    pixels = np.asarray(pixels + corners)  # [P, n], grid order (x, y[, z])
    for align_corners in (False, True):
        grid = np.stack([_normalized(pixels[:, a], axis_sizes[a], align_corners)
                         for a in range(num_axes)], -1)
        inside = rng.uniform(-0.9, 0.9, size=grid.shape) * (1 - 2 / np.asarray(axis_sizes))
        grid = jnp.asarray(np.stack([grid, grid[::-1], inside]).reshape(
            3, *(1,) * (num_axes - 1), -1, num_axes), jnp.float32)
        for padding in native.PADDING_CODES:
            parts = _run(image, grid, "bilinear", padding, align_corners, "native")
            reference = _run(image, grid, "bilinear", padding, align_corners, "jnp")
            _assert_close(parts, reference, 2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("num_axes,kernel", [(2, "bilinear"), (3, "bilinear"), (2, "nearest")])
def test_second_and_third_derivatives_match_jnp_path(num_axes, kernel):
    """Through the native primitives: forward over reverse, reverse over reverse and a third
    derivative, every padding, at the usual points (NaN, inf and huge ones included)."""
    with jax.enable_x64(True):
        image, grid = _case(num_axes, False, jnp.float64, seed=12)
        grid = grid[..., ::4, :]  # a quarter of the points: a Hessian in the grid is [P n]^2

        def loss(u, g, padding, method):
            out = sampling.sample(u, g, kernel=kernel, padding=padding, method=method)
            weights = jnp.arange(1.0, out.shape[-1] + 1).reshape((1,) * (out.ndim - 1) + (-1,))
            return jnp.sum(jnp.sin(out) * weights)

        @functools.partial(jax.jit, static_argnums=(2, 3))
        def derivatives(u, g, padding, method):
            grad = jax.grad(loss, argnums=(0, 1))
            return (jax.jacfwd(grad, argnums=(0, 1))(u, g, padding, method),
                    jax.grad(lambda v, x: jnp.sum(grad(v, x, padding, method)[1] ** 2),
                             argnums=(0, 1))(u, g),
                    jax.jvp(lambda x: jax.jvp(lambda y: grad(u, y, padding, method)[1], (x,),
                                              (jnp.ones_like(x),))[1], (g,),
                            (jnp.ones_like(g),))[1])

        for padding in native.PADDING_CODES:
            got = jax.tree.leaves(derivatives(image, grid, padding, "native"))
            want = jax.tree.leaves(derivatives(image, grid, padding, "jnp"))
            for a, b in zip(got, want):
                scale = max(1.0, float(np.max(np.abs(np.asarray(b)))))
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                           atol=1e-10 * scale, err_msg=padding)


def test_unknown_stn_native_values_are_refused(monkeypatch):
    image, grid = _case(2, False, jnp.float32)
    for value in ("maybe", "2", "of"):
        monkeypatch.setenv("STN_NATIVE", value)
        with pytest.raises(ValueError, match=f"STN_NATIVE must be .*, got '{value}'"):
            sampling.sample(image, grid)
    for value, on in (("yes", True), (" On ", True), ("", True), ("FALSE", False), ("0", False)):
        monkeypatch.setenv("STN_NATIVE", value)
        assert native.available() is on, value


# ---------------------------------------------------------------- the cached library


def _fake_compiler(tmp_path, library):
    """A 'compiler' that copies an already-built ``library`` to its ``-o`` (after
    ``$STN_FAKE_SLEEP`` seconds): builds in milliseconds, with the real library's bits."""
    script = tmp_path / "fake-c++"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "fake-c++ 1.0"; exit 0; fi
        while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
        echo partial > "$out"
        [ -n "$STN_FAKE_SLEEP" ] && sleep "$STN_FAKE_SLEEP"
        cp "{library}" "$out"
        """))
    script.chmod(0o755)
    return script


_SAMPLE_SCRIPT = textwrap.dedent("""
    import jax.numpy as jnp, numpy as np
    from stn import native, sampling
    image = jnp.arange(24.0, dtype=jnp.float32).reshape(1, 4, 6, 1)
    grid = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 3, 5, 2)), jnp.float32)
    out = sampling.sample(image, grid)
    np.testing.assert_allclose(out, sampling.sample(image, grid, method="jnp"), atol=1e-5)
    print("native" if native.available() else "jnp", "ok")
""")


def _run_sampling(cache, compiler):
    """The sampler in a fresh process (a Bus error there cannot kill the tests) with this cache
    and compiler (``CXX``); ``(returncode, stdout, stderr lines)``."""
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
           "STN_NATIVE_CACHE": str(cache), "CXX": str(compiler)}
    env.pop("STN_NATIVE", None)
    result = subprocess.run([sys.executable, "-c", _SAMPLE_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.startswith("stn:")]
    return result.returncode, result.stdout, lines


@pytest.mark.slow
def test_first_build_says_when_it_starts_and_ends_and_a_damaged_library_is_rebuilt(tmp_path):
    """A first use prints one line before the build and one after it (stderr, by default); a
    truncated cached library is rebuilt rather than loaded (the loader dies of a Bus error on
    it), and without a compiler it is skipped in one line naming it."""
    cache = tmp_path / "cache"
    compiler = _fake_compiler(tmp_path, native._state["path"])
    code, out, lines = _run_sampling(cache, compiler)
    assert code == 0 and out.strip() == "native ok", lines
    assert len(lines) == 2 and "building the native CPU sampler" in lines[0], lines
    assert "built the native CPU sampler" in lines[1], lines
    (library,) = cache.glob("stn_sampler-*.so")
    size = library.stat().st_size
    os.truncate(library, min(400000, size // 2))
    code, out, lines = _run_sampling(cache, compiler)
    assert code == 0 and out.strip() == "native ok", (code, lines)
    assert len(lines) == 2 and f"is {min(400000, size // 2)} bytes" in lines[0], lines
    assert library.stat().st_size == size
    os.truncate(library, min(400000, size // 2))
    code, out, lines = _run_sampling(cache, "no-such-compiler-stn")
    assert code == 0 and out.strip() == "jnp ok", (code, lines)
    assert len(lines) == 1 and "no C++ compiler found" in lines[0] and library.name in lines[0]
    assert not list(cache.glob("*.tmp"))


def test_a_built_library_is_found_without_a_compiler(monkeypatch, tmp_path):
    """A library built earlier is used where no compiler is on the PATH at run time."""
    monkeypatch.setenv("STN_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path, native._state["path"])))
    monkeypatch.setattr(build_lib, "PREBUILT", tmp_path / "not-installed")
    library = build_lib.build()
    monkeypatch.setenv("CXX", "no-such-compiler-stn")
    assert build_lib.find_compiler() is None
    assert build_lib.build() == library


def test_a_killed_build_leaves_no_temporary_file(monkeypatch, tmp_path):
    """``kill -9`` during the first build leaves a partial temporary file; the next build
    removes it, and the cache holds only the library and its record."""
    cache = tmp_path / "cache"
    compiler = _fake_compiler(tmp_path, native._state["path"])
    env = {**os.environ, "PYTHONPATH": ROOT, "STN_NATIVE_CACHE": str(cache), "CXX": str(compiler),
           "STN_FAKE_SLEEP": "60"}
    process = subprocess.Popen([sys.executable, "-c", "from stn.native import build; build.build()"],
                               env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the build and its compiler
        process.wait()
    assert list(cache.glob("*.tmp")), "the killed build never started compiling"
    monkeypatch.setenv("STN_NATIVE_CACHE", str(cache))
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("STN_FAKE_SLEEP", "")
    monkeypatch.setattr(build_lib, "PREBUILT", tmp_path / "not-installed")
    library = build_lib.build()
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [library.name, library.with_suffix(".json").name])
