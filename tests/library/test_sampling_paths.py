"""Every internal method of stn.sampling gives the reference path's values and gradients.

The reference ("gather") path is checked against a literal sum in test_sampling.py; here each
faster method ("window": any kernel, 2-D and 3-D; "bilinear2d": the 2-D bilinear closed form) must
agree with it (and with that sum) on every padding, both align_corners, points outside, on the
border and exactly on integer coordinates, in forward and reverse mode, and its backward must be
deterministic (bit-identical run after run).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn import kernels, sampling
from sampling_reference import _pixel_to_normalized, _test_grid, reference_sample

# (method, kernel, sizes): the 2-D bilinear closed form, and the window path on every kernel.
CASES = [("bilinear2d", "bilinear", (7, 9))] + [
    ("window", kernel, sizes)
    for kernel in ("bilinear", "bicubic", kernels.Gaussian(0.5, 1.5))
    for sizes in ((7, 9), (4, 5, 6))
]
CASE_IDS = ["bilinear2d"] + [f"window-{k}-{len(s)}d" for k in ("bilinear", "bicubic", "gaussian")
                             for s in ((7, 9), (4, 5, 6))]


def _sample(image, grid, method, kernel="bilinear", padding="zeros", align_corners=False):
    return sampling._sample(image, grid, kernel=kernel, padding=padding,
                            align_corners=align_corners, method=method)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _case(seed, sizes, align_corners, channels=3):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.normal(size=(2, *sizes, channels)))
    grid = jnp.asarray(_test_grid(rng, 2, sizes, align_corners))
    return image, grid


# Every padding, and both align_corners (test_sampling.py checks every pair against the literal
# sum through the default path).
PADDING_CASES = [("zeros", False), ("border", True), ("reflection", False), ("reflection", True)]


@pytest.mark.slow
@pytest.mark.parametrize("method,kernel,sizes", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("padding,align_corners", PADDING_CASES)
def test_values_and_gradients_match_reference_path(method, kernel, sizes, padding, align_corners):
    image, grid = _case(0, sizes, align_corners)
    expected = reference_sample(image, grid, kernel, padding, align_corners)
    actual = _sample(image, grid, method, kernel, padding, align_corners)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-12)

    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=actual.shape))

    def grads(m):
        _, vjp = jax.vjp(lambda u, g: _sample(u, g, m, kernel, padding, align_corners), image,
                         grid)
        return vjp(cotangent)

    for fast, ref in zip(grads(method), grads("gather")):
        np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), atol=1e-11)

    tangents = (jnp.asarray(np.random.default_rng(2).normal(size=image.shape)),
                jnp.asarray(np.random.default_rng(3).normal(size=grid.shape)))

    def jvp(m):
        fn = lambda u, g: _sample(u, g, m, kernel, padding, align_corners)  # noqa: E731
        return jax.jvp(fn, (image, grid), tangents)

    primal, tangent = jvp(method)
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(jvp("gather")[1]), atol=1e-11)
    # The plain forward and the forward inside differentiation fetch pixels differently.
    np.testing.assert_allclose(np.asarray(primal), np.asarray(actual), atol=1e-14)
    if method == "bilinear2d":  # ... and add them in the same order there
        np.testing.assert_array_equal(np.asarray(primal), np.asarray(actual))


def test_check_grads_of_the_reference_path():
    """The reference path's own gradients (the faster paths' are compared with them above and
    checked by check_grads through the default path in test_sampling.py)."""
    rng = np.random.default_rng(4)
    for kernel, sizes in [("bicubic", (6, 7)), ("bilinear", (5, 6, 7))]:
        image = jnp.asarray(rng.normal(size=(2, *sizes, 2)))
        lead = (2, 3, 4, 2)[: len(sizes) + 1]
        pixels = [rng.uniform(0.2, 0.8, size=lead) + rng.integers(1, 3, size=lead)
                  for _ in sizes]
        grid = jnp.stack([_pixel_to_normalized(p, size, False)
                          for p, size in zip(pixels, sizes[::-1])], -1)
        reference = jax.jit(lambda u, g: _sample(u, g, "gather", kernel, "reflection"))  # noqa
        check_grads(reference, (image, grid), order=1, modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.parametrize("method", ["bilinear2d", "window"])
def test_one_sided_derivative_at_integer_points(method):
    height, width = 9, 5
    u = np.random.default_rng(5).normal(size=(height, width))
    image = jnp.asarray(u)[None, :, :, None]
    for m, n in [(1, 2), (2, 4), (3, 7), (0, 0)]:
        grid = jnp.array([[[[_pixel_to_normalized(m, width, True),
                             _pixel_to_normalized(n, height, True)]]]])
        value = lambda g: _sample(image, g, method, align_corners=True)[0, 0, 0, 0]  # noqa
        d_grid = jax.grad(value)(grid)[0, 0, 0]
        np.testing.assert_allclose(d_grid[0], (u[n, m + 1] - u[n, m]) * (width - 1) / 2,
                                   atol=1e-12)
        np.testing.assert_allclose(d_grid[1], (u[n + 1, m] - u[n, m]) * (height - 1) / 2,
                                   atol=1e-12)


@pytest.mark.parametrize("method,kernel,sizes", [CASES[0], CASES[2], CASES[3]],
                         ids=[CASE_IDS[0], CASE_IDS[2], CASE_IDS[3]])
def test_backward_is_deterministic(method, kernel, sizes):
    """Bit-identical gradients across repeated runs and across two compilations (float32)."""
    with jax.enable_x64(False):
        rng = np.random.default_rng(6)
        scale = 4 if len(sizes) == 2 else 2
        image = jnp.asarray(rng.normal(size=(2, *sizes, 2)).astype(np.float32))
        # Many output points share neighbours (over-sampling), so the scatter-add accumulates.
        out_size = tuple(scale * s for s in sizes)
        grid = jnp.asarray(rng.uniform(-0.5, 0.5, size=(2, *out_size, len(sizes)))
                           .astype(np.float32))

        def loss(u, g):
            return jnp.sum(_sample(u, g, method, kernel) ** 2)

        first = jax.jit(jax.grad(loss, argnums=(0, 1)))
        runs = [first(image, grid) for _ in range(3)]
        runs.append(jax.jit(jax.grad(loss, argnums=(0, 1)))(image, grid))
        for d_image, d_grid in runs[1:]:
            np.testing.assert_array_equal(np.asarray(d_image), np.asarray(runs[0][0]))
            np.testing.assert_array_equal(np.asarray(d_grid), np.asarray(runs[0][1]))


def test_auto_picks_by_dtype_kernel_and_dimensions():
    image = jnp.arange(2 * 4 * 5 * 1, dtype=jnp.int32).reshape(2, 4, 5, 1)
    grid = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, size=(2, 3, 3, 2)))
    out = sampling.sample(image, grid)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(_sample(image, grid, "gather")))
    with pytest.raises(ValueError, match="needs a floating image"):
        _sample(image, grid, "window")
    floating = image.astype(jnp.float64)
    pick = lambda kernel, n=2: sampling._pick_method(  # noqa: E731
        floating, sampling.axis_kernels(kernel, n), "auto")
    assert pick("bilinear") == "bilinear2d"
    assert pick("bilinear", 3) == "window"
    assert pick("bicubic") == "window"
    assert pick("nearest") == "gather"
    assert pick(("bilinear", "bicubic")) == "window"


def test_unknown_or_unsuitable_method_raises():
    with pytest.raises(ValueError, match="method must be 'auto' or one of"):
        _sample(jnp.zeros((1, 3, 3, 1)), jnp.zeros((1, 2, 2, 2)), "magic")
    with pytest.raises(ValueError, match="'bilinear2d' needs a 2-D grid and the bilinear kernel"):
        _sample(jnp.zeros((1, 3, 3, 3, 1)), jnp.zeros((1, 2, 2, 2, 3)), "bilinear2d")
