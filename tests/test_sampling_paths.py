"""Every internal bilinear method of stn.sampling gives the reference path's values and gradients.

The reference ("gather") path is checked against a literal double sum in test_sampling.py; here
each faster method must agree with it (and with that double sum) on every padding, both
align_corners, points outside, on the border and exactly on integer coordinates, in forward and
reverse mode, and its backward must be deterministic (bit-identical run after run).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn import sampling
from test_sampling import _pixel_to_normalized, _test_grid, reference_sample

FAST_METHODS = [m for m in sampling.BILINEAR_METHODS if m != "gather"]


def _sample(image, grid, method, padding="zeros", align_corners=False):
    return sampling._sample(image, grid, kernel="bilinear", padding=padding,
                            align_corners=align_corners, method=method)


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _case(seed, align_corners, channels=3):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.normal(size=(2, 7, 9, channels)))
    grid = jnp.asarray(_test_grid(rng, 2, 7, 9, align_corners))
    return image, grid


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("padding,align_corners",
                         list(itertools.product(sampling.PADDINGS, (False, True))))
def test_values_and_gradients_match_reference_path(method, padding, align_corners):
    image, grid = _case(0, align_corners)
    expected = reference_sample(image, grid, "bilinear", padding, align_corners)
    actual = _sample(image, grid, method, padding, align_corners)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-12)

    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=actual.shape))

    def grads(m):
        _, vjp = jax.vjp(lambda u, g: _sample(u, g, m, padding, align_corners), image, grid)
        return vjp(cotangent)

    for fast, ref in zip(grads(method), grads("gather")):
        np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), atol=1e-12)

    tangents = (jnp.asarray(np.random.default_rng(2).normal(size=image.shape)),
                jnp.asarray(np.random.default_rng(3).normal(size=grid.shape)))

    def jvp(m):
        fn = lambda u, g: _sample(u, g, m, padding, align_corners)  # noqa: E731
        return jax.jvp(fn, (image, grid), tangents)

    primal, tangent = jvp(method)
    np.testing.assert_allclose(np.asarray(tangent), np.asarray(jvp("gather")[1]), atol=1e-12)
    # The plain forward and the forward inside differentiation fetch pixels differently but
    # must give the same bits.
    np.testing.assert_array_equal(np.asarray(primal), np.asarray(actual))


@pytest.mark.parametrize("method", FAST_METHODS)
@pytest.mark.parametrize("padding", sampling.PADDINGS)
def test_check_grads_forward_and_reverse(method, padding):
    rng = np.random.default_rng(4)
    image = jnp.asarray(rng.normal(size=(2, 6, 7, 2)))
    pixels = rng.uniform(0.2, 0.8, size=(2, 3, 4, 2)) + rng.integers(1, 4, size=(2, 3, 4, 2))
    grid = jnp.stack([_pixel_to_normalized(pixels[..., 0], 7, False),
                      _pixel_to_normalized(pixels[..., 1], 6, False)], -1)
    check_grads(lambda u, g: _sample(u, g, method, padding), (image, grid), order=1,
                modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.parametrize("method", FAST_METHODS)
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


@pytest.mark.parametrize("method", FAST_METHODS)
def test_far_and_infinite_points_give_zeros_and_finite_image_gradients(method):
    image = jnp.ones((1, 4, 4, 1))
    grid = jnp.array([[[[1e30, 0.0], [-1e30, 1e30], [3.0, -3.0], [jnp.inf, -jnp.inf]]]])
    for padding in sampling.PADDINGS:
        out, vjp = jax.vjp(lambda u: _sample(u, grid, method, padding), image)
        (d_image,) = vjp(jnp.ones_like(out))
        assert np.all(np.isfinite(d_image)), padding
        if padding == "zeros":
            np.testing.assert_array_equal(np.asarray(out[0, 0, :3, 0]), 0.0)


@pytest.mark.parametrize("method", FAST_METHODS)
def test_backward_is_deterministic(method):
    """Bit-identical gradients across repeated runs and across two compilations (float32)."""
    with jax.enable_x64(False):
        rng = np.random.default_rng(6)
        image = jnp.asarray(rng.normal(size=(4, 12, 12, 3)).astype(np.float32))
        # Many output points share neighbours (4x over-sampling), so the scatter-add accumulates.
        grid = jnp.asarray(rng.uniform(-0.5, 0.5, size=(4, 48, 48, 2)).astype(np.float32))

        def loss(u, g):
            return jnp.sum(_sample(u, g, method) ** 2)

        first = jax.jit(jax.grad(loss, argnums=(0, 1)))
        runs = [first(image, grid) for _ in range(3)]
        runs.append(jax.jit(jax.grad(loss, argnums=(0, 1)))(image, grid))
        for d_image, d_grid in runs[1:]:
            np.testing.assert_array_equal(np.asarray(d_image), np.asarray(runs[0][0]))
            np.testing.assert_array_equal(np.asarray(d_grid), np.asarray(runs[0][1]))


def test_auto_uses_the_reference_path_for_integer_images():
    image = jnp.arange(2 * 4 * 5 * 1, dtype=jnp.int32).reshape(2, 4, 5, 1)
    grid = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, size=(2, 3, 3, 2)))
    out = sampling.sample(image, grid)
    assert out.dtype == jnp.int32
    expected = _sample(image, grid, "gather")
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    with pytest.raises(ValueError, match="floating image"):
        _sample(image, grid, "window")


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="bilinear method must be"):
        _sample(jnp.zeros((1, 3, 3, 1)), jnp.zeros((1, 2, 2, 2)), "magic")
