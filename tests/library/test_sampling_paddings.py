"""The sampler's "wrap" and "fill" paddings: wrap is sampling the image tiled, fill reads
``fill_value`` outside (against the literal reference sum), on every path, with gradients, and
where the native sampler runs them (fill) or not (wrap)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn import kernels, sampling

from sampling_reference import _test_grid, reference_sample

KERNEL_CASES = ["nearest", "bilinear", "bicubic", kernels.Keys(-0.5)]
KERNEL_IDS = ["nearest", "bilinear", "bicubic", "keys-0.5"]
PATHS = ["auto", "gather", "window"]  # "auto": native where it runs (fill), else "jnp"


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _sample(image, grid, method, **options):
    if method in sampling.SAMPLE_METHODS:
        return sampling.sample(image, grid, method=method, **options)
    return sampling._sample(image, grid, method=method, **options)


def _tiled_grid(grid, sizes, copies, align_corners):
    """The grid's points in an image tiled ``copies`` times per axis, the original in the middle
    copy: pixel ``m`` of an axis of ``S`` is pixel ``m + (copies // 2) S`` of the tiled one."""
    points = []
    for axis, size in enumerate(sizes[::-1]):  # grid order x, y(, z)
        pixel = sampling.unnormalize(grid[..., axis], size, align_corners) + copies // 2 * size
        total = copies * size
        points.append(2 * pixel / (total - 1) - 1 if align_corners else (2 * pixel + 1) / total - 1)
    return jnp.stack(points, axis=-1)


@pytest.mark.parametrize("method", PATHS)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kernel", KERNEL_CASES, ids=KERNEL_IDS)
@pytest.mark.parametrize("sizes", [(5, 7), (3, 4, 5)], ids=["2d", "3d"])
def test_wrap_is_sampling_the_tiled_image(sizes, kernel, align_corners, method):
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(2, *sizes, 2)))
    grid = jnp.asarray(rng.uniform(-2.5, 2.5, size=(2, 4, *(3,) * (len(sizes) - 1), len(sizes))))
    tiled = jnp.tile(image, (1, *(5,) * len(sizes), 1))
    expected = sampling.sample(tiled, _tiled_grid(grid, sizes, 5, align_corners), kernel=kernel,
                               align_corners=align_corners, method="jnp")
    actual = _sample(image, grid, method, kernel=kernel, padding="wrap",
                     align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("align_corners", [False, True])
def test_wrap_gradients_and_antialiasing(align_corners):
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.normal(size=(1, 5, 6, 2)))
    grid = jnp.asarray(rng.uniform(-1.6, 1.6, size=(1, 2, 2, 2)))
    check_grads(lambda u, g: sampling.sample(u, g, kernel="bicubic", padding="wrap",
                                             align_corners=align_corners),
                (image, grid), order=2, modes=["fwd", "rev"], eps=1e-6)
    # Antialiased: the stretched kernel's taps wrap too (a shrinking grid across the seam).
    wide = jnp.stack(jnp.meshgrid(jnp.linspace(-1.8, 0.6, 3), jnp.linspace(0.2, 2.4, 2)), -1)[None]
    tiled = jnp.tile(image, (1, 5, 5, 1))
    expected = sampling.sample(tiled, _tiled_grid(wide, (5, 6), 5, align_corners),
                               align_corners=align_corners, antialias=True, max_scale=2.0)
    actual = sampling.sample(image, wide, padding="wrap", align_corners=align_corners,
                             antialias=True, max_scale=2.0)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-12)


FILL_CASES = ([((7, 9), k, m) for k in KERNEL_CASES for m in PATHS]
              + [((3, 4, 5), k, m) for k in ("bilinear", "bicubic") for m in PATHS])
FILL_IDS = [f"{len(s)}d-{i}-{m}" for s, k, m in FILL_CASES
            for i in [KERNEL_IDS[KERNEL_CASES.index(k)]]]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("sizes,kernel,method", FILL_CASES, ids=FILL_IDS)
def test_fill_matches_the_literal_sum(sizes, kernel, method, align_corners):
    """Every tap outside the image reads fill_value (one per channel here)."""
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, *sizes, 3))
    grid = _test_grid(rng, 2, sizes, align_corners)
    if len(sizes) == 3:  # the literal triple sum is slow: a few of its points
        grid = grid[:, ::3, ::2, ::2]
    fill = np.asarray([0.5, -2.0, 3.25])
    expected = reference_sample(image, grid, kernel, "fill", align_corners, fill_value=fill)
    actual = _sample(jnp.asarray(image), jnp.asarray(grid), method, kernel=kernel,
                     padding="fill", fill_value=jnp.asarray(fill), align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-12)


def test_fill_is_differentiable_in_its_value_and_non_finite_points_sample_zero():
    rng = np.random.default_rng(3)
    image = jnp.asarray(rng.normal(size=(1, 5, 6, 2)))
    grid = jnp.asarray(rng.uniform(-1.5, 1.5, size=(1, 2, 2, 2)))
    check_grads(lambda u, g, f: sampling.sample(u, g, kernel="bicubic", padding="fill",
                                                fill_value=f),
                (image, grid, jnp.asarray([0.7, -0.4])), order=2, modes=["fwd", "rev"], eps=1e-6)
    # d out / d fill = 1 - (the weight of the taps inside): 1 far outside, 0 at a pixel centre.
    points = jnp.asarray([[[[5.0, 5.0], [1.0 / 6 - 1, 1.0 / 5 - 1]]]])
    d_fill = jax.jacobian(lambda f: sampling.sample(image, points, padding="fill",
                                                    fill_value=f))(jnp.asarray(0.3))
    np.testing.assert_allclose(np.asarray(d_fill)[0, 0, :, 0], [1.0, 0.0], atol=1e-12)
    bad = jnp.asarray([[[[jnp.nan, 0.0], [0.1, jnp.inf]]]])
    out = sampling.sample(image, bad, padding="fill", fill_value=4.0)
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_fill_on_integer_and_low_precision_images():
    image = jnp.arange(12, dtype=jnp.int32).reshape(1, 3, 4, 1)
    points = jnp.asarray([[[[3.0, 0.0], [-1 + 1 / 4, -1 + 1 / 3]]]])
    out = sampling.sample(image, points, kernel="nearest", padding="fill", fill_value=-7)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out)[0, 0, :, 0], [-7, 0])
    low = jnp.full((1, 3, 4, 1), 0.3, jnp.bfloat16)
    out = sampling.sample(low, points, padding="fill", fill_value=0.3)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), 0.3, rtol=2.0**-8)


def test_native_dispatch_of_the_new_paddings():
    """Fill is a zero-padded call (the native path takes it); wrap runs on the jnp path under
    "auto", and method="native" says it has no wrap."""
    rng = np.random.default_rng(4)
    image = jnp.asarray(rng.normal(size=(1, 5, 6, 2)))
    grid = jnp.asarray(rng.uniform(-1.5, 1.5, size=(1, 3, 4, 2)))
    for method in ("auto", "jnp"):
        np.testing.assert_allclose(
            np.asarray(sampling.sample(image, grid, padding="fill", fill_value=0.5, method=method)),
            reference_sample(image, grid, "bilinear", "fill", False, fill_value=0.5), atol=1e-12)
    np.testing.assert_allclose(np.asarray(sampling.sample(image, grid, padding="wrap")),
                               np.asarray(sampling.sample(image, grid, padding="wrap",
                                                          method="jnp")), atol=1e-12)
    with pytest.raises(ValueError, match="method='native' has no padding 'wrap'"):
        sampling.sample(image, grid, padding="wrap", method="native")


@pytest.mark.parametrize("fill_value,padding,message", [
    (1.0, "zeros", "fill_value needs padding='fill', got padding='zeros'"),
    (jnp.zeros(3), "fill", r"fill_value must be a number or one value per channel \[2\], got "
                           r"shape \(3,\)"),
    ("red", "fill", "fill_value must be a number or one value per channel"),
    (None, "constant", "padding must be one of"),
])
def test_padding_errors_are_one_line(fill_value, padding, message):
    image, grid = jnp.zeros((1, 3, 4, 2)), jnp.zeros((1, 2, 2, 2))
    with pytest.raises(ValueError, match=message) as error:
        sampling.sample(image, grid, padding=padding, fill_value=fill_value)
    assert "\n" not in str(error.value)
