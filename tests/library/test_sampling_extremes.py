"""The sampler's one rule for non-finite and huge grid points, and float32 coordinates for
low-precision images (stn.sampling module docstring):

* a NaN or infinite point samples 0 and passes no gradient to the image, the grid or Phi;
* a finite point is clamped to COORDINATE_BOUND pixels, so a huge one is outside the image
  (zeros: 0, border: the edge pixel, reflection: the mirror of the clamped point);
* coordinates are float32 or wider whatever the image dtype.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn import kernels, sampling, transforms

KERNEL_CASES = ["nearest", "bilinear", "bicubic", kernels.Keys(-0.5), kernels.Gaussian(0.6, 2.5)]
KERNEL_IDS = ["nearest", "bilinear", "bicubic", "keys-0.5", "gaussian0.6"]
CASES = list(itertools.product(KERNEL_CASES, sampling.PADDINGS))
CASE_IDS = [f"{k}-{p}" for k, p in itertools.product(KERNEL_IDS, sampling.PADDINGS)]

NON_FINITE = [(np.nan, 0.1), (0.2, np.nan), (np.inf, 0.0), (-np.inf, np.inf), (np.nan, np.inf)]
ORDINARY = [(0.13, -0.41), (0.77, 0.52), (-1.1, 0.3), (0.0, 0.0)]


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _points(num_axes, rows):
    """[1, 1, P, 2] or [1, 1, 1, P, 3]; 3-D points get z = 0.21 (or x where x is not finite)."""
    points = jnp.asarray(np.array(rows, np.float64))[None, None]
    if num_axes == 3:
        z = jnp.where(jnp.isfinite(points[..., :1]), 0.21, points[..., :1])
        points = jnp.concatenate([points, z], axis=-1)[None]
    return points


def _image(num_axes, seed=0):
    shape = (1, 5, 6, 2) if num_axes == 2 else (1, 4, 5, 6, 2)
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


def _vjp(image, grid, kernel, padding):
    out, vjp = jax.vjp(lambda u, g: sampling.sample(u, g, kernel=kernel, padding=padding),
                       image, grid)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=out.shape))
    return out, vjp(cotangent), cotangent


@pytest.mark.slow
@pytest.mark.parametrize("num_axes", [2, 3])
@pytest.mark.parametrize("kernel,padding", CASES, ids=CASE_IDS)
def test_non_finite_points_sample_zero_and_pass_no_gradient(kernel, padding, num_axes):
    image = _image(num_axes)
    grid = _points(num_axes, ORDINARY + NON_FINITE)
    out, (d_image, d_grid), cotangent = _vjp(image, grid, kernel, padding)
    count = len(ORDINARY)
    np.testing.assert_array_equal(np.asarray(out[0, 0, count:]), 0.0)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(d_image))
    assert np.all(np.isfinite(d_grid))
    np.testing.assert_array_equal(np.asarray(d_grid[0, 0, count:]), 0.0)
    # The ordinary points alone give the same values and the same image gradient: the
    # non-finite ones contribute nothing anywhere.
    alone = grid[:, :, :count]
    _, vjp = jax.vjp(lambda u, g: sampling.sample(u, g, kernel=kernel, padding=padding),
                     image, alone)
    d_image_alone, d_grid_alone = vjp(cotangent[:, :, :count])
    np.testing.assert_allclose(np.asarray(d_image), np.asarray(d_image_alone), atol=1e-14)
    np.testing.assert_allclose(np.asarray(d_grid[:, :, :count]), np.asarray(d_grid_alone),
                               atol=1e-14)
    # Forward mode as well.
    _, tangent = jax.jvp(lambda u, g: sampling.sample(u, g, kernel=kernel, padding=padding),
                         (image, grid), (jnp.ones_like(image), jnp.ones_like(grid)))
    assert np.all(np.isfinite(tangent))
    np.testing.assert_array_equal(np.asarray(tangent[0, 0, count:]), 0.0)


@pytest.mark.parametrize("make_kernel", [kernels.Keys, lambda a: kernels.Gaussian(a, 2.5)],
                         ids=["keys", "gaussian"])
def test_non_finite_points_pass_no_gradient_to_phi(make_kernel):
    image = _image(2)
    grid = _points(2, ORDINARY + NON_FINITE)
    loss = lambda p, g: sampling.sample(image, g, kernel=make_kernel(p)).sum()  # noqa: E731
    with_bad = jax.grad(loss)(jnp.asarray(0.7), grid)
    without = jax.grad(loss)(jnp.asarray(0.7), grid[:, :, :len(ORDINARY)])
    assert np.isfinite(with_bad)
    np.testing.assert_allclose(with_bad, without, atol=1e-14)


def _pixel_to_normalized(pixel, size):
    return (2 * pixel + 1) / size - 1  # align_corners=False


@pytest.mark.slow
@pytest.mark.parametrize("num_axes", [2, 3])
@pytest.mark.parametrize("kernel,padding", CASES, ids=CASE_IDS)
def test_huge_finite_points_are_outside(kernel, padding, num_axes):
    image = _image(num_axes, seed=2)
    huge = [(3e38, 0.1), (-3e38, 0.1), (1e30, -1e30), (0.1, 1e300)]
    out, (d_image, d_grid), _ = _vjp(image, _points(num_axes, huge), kernel, padding)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(d_image))
    assert np.all(np.isfinite(d_grid))
    width, height = image.shape[-2], image.shape[-3]
    bound = sampling.COORDINATE_BOUND
    clamped = [(_pixel_to_normalized(bound, width), 0.1), (_pixel_to_normalized(-bound, width), 0.1),
               (_pixel_to_normalized(bound, width), _pixel_to_normalized(-bound, height)),
               (0.1, _pixel_to_normalized(bound, height))]
    expected = sampling.sample(image, _points(num_axes, clamped), kernel=kernel, padding=padding)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-12)
    if padding == "zeros":
        np.testing.assert_array_equal(np.asarray(out), 0.0)
    interpolating = not isinstance(kernel, kernels.Gaussian)  # weights that sum to one
    if padding == "border" and interpolating:  # the edge pixel, as for any point beyond it
        near = [(3.0, 0.1), (-3.0, 0.1), (3.0, -3.0), (0.1, 3.0)]
        expected = sampling.sample(image, _points(num_axes, near), kernel=kernel, padding=padding)
        np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-12)


@pytest.mark.parametrize("kernel", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_bfloat16_image_keeps_float32_coordinates(kernel, align_corners):
    """An identity warp of a 600-pixel-wide bfloat16 ramp returns the ramp: the sampling points
    are not rounded to bfloat16 (with them, x = 598 read pixel 600, outside, and gave 0).

    Nearest and bilinear give it back exactly; bicubic's weights at a float32 pixel centre that is
    off by ~1e-5 pixel move a few values by one bfloat16 step.
    """
    with jax.enable_x64(False):
        ramp = (jnp.arange(600, dtype=jnp.float32) / 600).astype(jnp.bfloat16)
        image = jnp.broadcast_to(ramp[None, None, :, None], (1, 2, 600, 1))
        volume = jnp.broadcast_to(ramp[None, None, None, :, None], (1, 2, 2, 600, 1))
        for source, size in [(image, (2, 600)), (volume, (2, 2, 600))]:
            grid = transforms.base_grid(*size, align_corners=align_corners)[None]
            out = sampling.sample(source, grid, kernel=kernel, align_corners=align_corners)
            assert out.dtype == jnp.bfloat16
            actual, expected = np.asarray(out, np.float32), np.asarray(source, np.float32)
            if kernel == "bicubic":
                np.testing.assert_allclose(actual, expected, rtol=2.0**-8, atol=1e-6)
            else:
                np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("kernel,padding", CASES, ids=CASE_IDS)
def test_huge_float32_points_do_not_overflow(kernel, padding):
    """In float32, (3e38 + 1) * W overflows to inf before any clamp could act on a pixel unit."""
    with jax.enable_x64(False):
        image = _image(2).astype(jnp.float32)
        grid = _points(2, [(3e38, 0.1), (-3e38, 3e38), (0.2, -0.4)]).astype(jnp.float32)
        out, (d_image, d_grid), _ = _vjp(image, grid, kernel, padding)
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(d_image))
        assert np.all(np.isfinite(d_grid))
        if padding == "zeros":
            np.testing.assert_array_equal(np.asarray(out[0, 0, :2]), 0.0)
