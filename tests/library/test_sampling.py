"""stn.sampling.sample against a literal float64 transcription of paper eq. 3, and its gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn import kernels, sampling, transforms

from sampling_reference import _pixel_to_normalized, _test_grid, reference_sample

KERNELS = sampling.KERNELS
PADDINGS = sampling.PADDINGS


# ---------------------------------------------------------------- float64 NumPy reference


# ---------------------------------------------------------------- test points


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


# Every kernel: the three names, Keys with another a, and a Gaussian (tap-padded). Its radius
# 2.5 keeps the test points (near-integer and random coordinates) off the truncation edge, where
# float64 rounding of x - m in the reference would decide whether a tap counts.
KERNEL_CASES = ["nearest", "bilinear", "bicubic", kernels.Keys(-0.5), kernels.Gaussian(0.6, 2.5)]
KERNEL_IDS = ["nearest", "bilinear", "bicubic", "keys-0.5", "gaussian0.6"]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kernel", KERNEL_CASES, ids=KERNEL_IDS)
def test_matches_literal_double_sum(kernel, padding, align_corners):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 7, 9, 3))
    grid = _test_grid(rng, 2, (7, 9), align_corners)
    expected = reference_sample(image, grid, kernel, padding, align_corners)
    actual = sampling.sample(jnp.asarray(image), jnp.asarray(grid), kernel=kernel,
                             padding=padding, align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kernel", KERNEL_CASES, ids=KERNEL_IDS)
def test_volumes_match_literal_triple_sum(kernel, padding, align_corners):
    rng = np.random.default_rng(10)
    image = rng.normal(size=(2, 4, 5, 6, 2))
    grid = _test_grid(rng, 2, (4, 5, 6), align_corners)
    expected = reference_sample(image, grid, kernel, padding, align_corners)
    actual = sampling.sample(jnp.asarray(image), jnp.asarray(grid), kernel=kernel,
                             padding=padding, align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-12)


@pytest.mark.parametrize("num_axes", [2, 3])
def test_one_kernel_per_axis(num_axes):
    """(k_x, k_y[, k_z]): the paper's k(x_s - m; Phi_x) k(y_s - n; Phi_y) with different Phi."""
    rng = np.random.default_rng(11)
    sizes = (5, 6, 7)[-num_axes:]
    image = rng.normal(size=(1, *sizes, 2))
    grid = _test_grid(rng, 1, sizes, False)
    per_axis = (kernels.Keys(-0.5), "bilinear", kernels.Gaussian(0.8, 2.5))[:num_axes]
    expected = reference_sample(image, grid, per_axis, "reflection", False)
    actual = sampling.sample(jnp.asarray(image), jnp.asarray(grid), kernel=per_axis,
                             padding="reflection")
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-12)


def test_float32_matches_reference():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, size=(2, 4, 6, 2)).astype(np.float32)
    actual = sampling.sample(jnp.asarray(image), jnp.asarray(grid))
    assert actual.dtype == jnp.float32
    expected = reference_sample(image, grid, "bilinear", "zeros", False)
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-5)


def test_unbatched_and_output_size_follows_grid():
    image = jnp.arange(4 * 6 * 2, dtype=jnp.float64).reshape(4, 6, 2)
    down = transforms.base_grid(2, 3)
    over = transforms.base_grid(8, 12)
    assert sampling.sample(image, down).shape == (2, 3, 2)
    assert sampling.sample(image, over).shape == (8, 12, 2)
    batched = sampling.sample(image[None], over[None])
    np.testing.assert_array_equal(batched[0], sampling.sample(image, over))


@pytest.mark.slow
def test_volume_output_size_follows_grid():
    volume = jnp.arange(3 * 4 * 5 * 2, dtype=jnp.float64).reshape(1, 3, 4, 5, 2)
    grid = jnp.asarray(np.random.default_rng(12).uniform(-1, 1, size=(1, 2, 6, 7, 3)))
    for kernel in KERNEL_CASES:
        assert sampling.sample(volume, grid, kernel=kernel).shape == (1, 2, 6, 7, 2)


@pytest.mark.parametrize("kernel", ["nearest", "bilinear", "bicubic", kernels.Keys(-0.5)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_is_the_identity_warp_on_volumes(kernel, align_corners):
    """Pixel centres sample their own pixel for every interpolating kernel, on volumes too."""
    rng = np.random.default_rng(13)
    volume = jnp.asarray(rng.normal(size=(2, 4, 5, 6, 3)))
    grid = jnp.broadcast_to(transforms.base_grid(4, 5, 6, align_corners=align_corners,
                                                 dtype=jnp.float64), (2, 4, 5, 6, 3))
    for padding in PADDINGS:
        out = sampling.sample(volume, grid, kernel=kernel, padding=padding,
                              align_corners=align_corners)
        np.testing.assert_allclose(np.asarray(out), np.asarray(volume), atol=1e-12)


def test_torch_grid_sample_values_on_a_small_case():
    """Hand-computed values that torch.nn.functional.grid_sample gives (align_corners=False)."""
    image = jnp.array([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]  # [1, 2, 2, 1]
    # Centre of the image: mean of the four pixels; outer-left edge midpoint: half of the
    # left column's mean with zeros padding (half the kernel falls outside).
    grid = jnp.array([[[[0.0, 0.0], [-1.0, 0.0], [1.0, 1.0]]]])
    zeros = sampling.sample(image, grid)[0, 0, :, 0]
    np.testing.assert_allclose(zeros, [2.5, 1.0, 1.0])
    border = sampling.sample(image, grid, padding="border")[0, 0, :, 0]
    np.testing.assert_allclose(border, [2.5, 2.0, 4.0])


# ---------------------------------------------------------------- gradients


def _random_case(seed, sizes=(6, 7)):
    """An image of ``sizes`` (image order) and a grid of generic points well inside it."""
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.normal(size=(2, *sizes, 2)))
    # Fractional parts in (0.2, 0.8): no kink within the finite-difference step.
    lead = (2, 3, 4, 2)[: len(sizes) + 1]
    pixels = [rng.uniform(0.2, 0.8, size=lead) + rng.integers(1, 4, size=lead)
              for _ in sizes]
    grid = jnp.stack([_pixel_to_normalized(p, size, False)
                      for p, size in zip(pixels, sizes[::-1])], -1)
    return image, grid


SMOOTH_KERNELS = KERNEL_CASES[1:]  # every kernel that passes a gradient to the grid
SMOOTH_IDS = KERNEL_IDS[1:]


@pytest.mark.parametrize("sizes", [(6, 7), (5, 6, 7)], ids=["2d", "3d"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kernel", SMOOTH_KERNELS, ids=SMOOTH_IDS)
def test_check_grads_image_and_grid(kernel, padding, sizes):
    image, grid = _random_case(2, sizes)
    fn = lambda u, g: sampling.sample(u, g, kernel=kernel, padding=padding)  # noqa: E731
    check_grads(jax.jit(fn), (image, grid), order=1, modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("sizes,padding", [((6, 7), "zeros"), ((6, 7), "border"),
                                          ((6, 7), "reflection"), ((5, 6, 7), "border")],
                         ids=["2d-zeros", "2d-border", "2d-reflection", "3d-border"])
@pytest.mark.parametrize("make_kernel", [kernels.Keys, lambda a: kernels.Gaussian(a, 2.0)],
                         ids=["keys_a", "gaussian_sigma"])
def test_check_grads_kernel_parameters(make_kernel, padding, sizes):
    """Phi is differentiable, alone and together with the image and the grid."""
    image, grid = _random_case(3, sizes)
    phi = jnp.asarray(0.7)  # a (Keys) or sigma (Gaussian)
    fn = lambda u, g, p: sampling.sample(u, g, kernel=make_kernel(p), padding=padding)  # noqa
    check_grads(jax.jit(fn), (image, grid, phi), order=1, modes=("fwd", "rev"), eps=1e-6)
    per_axis = lambda p: sampling.sample(  # noqa: E731  Phi on one axis only
        image, grid, kernel=(make_kernel(p),) + ("bilinear",) * (len(sizes) - 1), padding=padding)
    check_grads(jax.jit(per_axis), (phi,), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_check_grads_nearest_image():
    for sizes in [(6, 7), (5, 6, 7)]:
        image, grid = _random_case(3, sizes)
        nearest = jax.jit(lambda u: sampling.sample(u, grid, kernel="nearest"))  # noqa: B023
        check_grads(nearest, (image,), order=1, modes=("fwd", "rev"))


def test_closed_form_gradients_at_generic_points():
    """dV/dU_nm = k(x_s - m) k(y_s - n);  dV/dx_s = sum U_nm k(y_s - n) g(m - x_s)."""
    height, width = 5, 6
    rng = np.random.default_rng(4)
    image = rng.normal(size=(1, height, width, 1))
    x_s, y_s = 2.3, 1.6
    grid = jnp.array([[[[_pixel_to_normalized(x_s, width, True),
                         _pixel_to_normalized(y_s, height, True)]]]])
    value = lambda u, g: sampling.sample(u, g, align_corners=True)[0, 0, 0, 0]  # noqa: E731
    d_image, d_grid = jax.grad(value, argnums=(0, 1))(jnp.asarray(image), grid)

    m = np.arange(width)
    n = np.arange(height)
    k_x = np.maximum(0, 1 - np.abs(x_s - m))
    k_y = np.maximum(0, 1 - np.abs(y_s - n))
    np.testing.assert_allclose(d_image[0, :, :, 0], np.outer(k_y, k_x), atol=1e-12)

    g_x = np.where(np.abs(m - x_s) >= 1, 0.0, np.where(m >= x_s, 1.0, -1.0))
    g_y = np.where(np.abs(n - y_s) >= 1, 0.0, np.where(n >= y_s, 1.0, -1.0))
    u = image[0, :, :, 0]
    dv_dxs = np.sum(u * np.outer(k_y, g_x))
    dv_dys = np.sum(u * np.outer(g_y, k_x))
    # Chain rule through the normalisation: x_s = (x + 1) / 2 * (width - 1).
    np.testing.assert_allclose(d_grid[0, 0, 0, 0], dv_dxs * (width - 1) / 2, atol=1e-12)
    np.testing.assert_allclose(d_grid[0, 0, 0, 1], dv_dys * (height - 1) / 2, atol=1e-12)


def test_one_sided_derivative_at_integer_points():
    """At integer x_s the derivative is U_{m+1} - U_m (interpolation between floor and floor+1)."""
    height, width = 9, 5  # (size - 1) powers of two: integer pixels are exact in binary.
    rng = np.random.default_rng(5)
    u = rng.normal(size=(height, width))
    image = jnp.asarray(u)[None, :, :, None]
    for m, n in [(1, 2), (2, 4), (3, 7), (0, 0)]:
        grid = jnp.array([[[[_pixel_to_normalized(m, width, True),
                             _pixel_to_normalized(n, height, True)]]]])
        value = lambda g: sampling.sample(image, g, align_corners=True)[0, 0, 0, 0]  # noqa
        d_grid = jax.grad(value)(grid)[0, 0, 0]
        np.testing.assert_allclose(d_grid[0], (u[n, m + 1] - u[n, m]) * (width - 1) / 2,
                                   atol=1e-12)
        np.testing.assert_allclose(d_grid[1], (u[n + 1, m] - u[n, m]) * (height - 1) / 2,
                                   atol=1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_constant_image_has_zero_grid_gradient(padding, align_corners):
    height, width = 9, 5
    image = jnp.full((1, height, width, 2), 3.0)
    rng = np.random.default_rng(6)
    if padding == "zeros":  # Zeros padding changes the value across the edge: stay inside
        # (pixel 0 would sit a rounding error outside with align_corners=False).
        low_x, high_x, low_y, high_y = 1, width - 2, 1, height - 2
    else:
        low_x, high_x, low_y, high_y = -3, width + 2, -3, height + 2
    integer = np.stack(
        [rng.integers(low_x, high_x + 1, 20), rng.integers(low_y, high_y + 1, 20)], -1)
    generic = integer + rng.uniform(0, 1, size=integer.shape)
    pixels = np.concatenate([integer, generic]).astype(np.float64)
    grid = jnp.stack([_pixel_to_normalized(pixels[:, 0], width, align_corners),
                      _pixel_to_normalized(pixels[:, 1], height, align_corners)], -1)
    grid = grid[None, None]  # [1, 1, P, 2]
    # "fill" with the image's own value extends the constant past the edge.
    fill = {"fill_value": 3.0} if padding == "fill" else {}
    loss = lambda g: sampling.sample(image, g, padding=padding,  # noqa: E731
                                     align_corners=align_corners, **fill).sum()
    d_grid = jax.grad(loss)(grid)
    np.testing.assert_array_equal(np.asarray(d_grid), 0.0)


@pytest.mark.parametrize("padding", PADDINGS)
def test_gradients_at_the_border_match_finite_differences(padding):
    """Points just inside and just outside each edge, away from kinks."""
    height, width = 6, 7
    rng = np.random.default_rng(7)
    image = rng.normal(size=(1, height, width, 1))
    coords = np.array([-1.08, -0.97, 0.96, 1.07, -1.3, 1.25])
    points = np.stack(np.meshgrid(coords, coords), -1).reshape(1, 1, -1, 2)

    def reference_value(grid):
        return reference_sample(image, grid, "bilinear", padding, False).sum()

    step = 1e-6
    expected = np.zeros_like(points)
    for index in np.ndindex(points.shape):
        plus, minus = points.copy(), points.copy()
        plus[index] += step
        minus[index] -= step
        expected[index] = (reference_value(plus) - reference_value(minus)) / (2 * step)
    loss = lambda g: sampling.sample(jnp.asarray(image), g, padding=padding).sum()  # noqa
    actual = jax.grad(loss)(jnp.asarray(points))
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-6)
    assert np.all(np.isfinite(actual))


def test_nearest_gradients():
    """Zero gradient to the grid; the image gradient is one at the chosen pixel."""
    image = jnp.asarray(np.random.default_rng(8).normal(size=(1, 4, 5, 1)))
    grid = jnp.array([[[[_pixel_to_normalized(2.4, 5, False),
                         _pixel_to_normalized(0.6, 4, False)]]]])
    value = lambda u, g: sampling.sample(u, g, kernel="nearest")[0, 0, 0, 0]  # noqa: E731
    d_image, d_grid = jax.grad(value, argnums=(0, 1))(image, grid)
    expected = np.zeros((4, 5))
    expected[1, 2] = 1.0  # floor(0.6 + 0.5) = 1, floor(2.4 + 0.5) = 2
    np.testing.assert_array_equal(d_image[0, :, :, 0], expected)
    np.testing.assert_array_equal(d_grid, 0.0)


def test_no_nan_from_far_or_infinite_points():
    image = jnp.ones((1, 4, 4, 1))
    grid = jnp.array([[[[1e30, 0.0], [jnp.inf, -jnp.inf], [-1e30, 1e30]]]])
    for padding in PADDINGS:
        out, vjp = jax.vjp(lambda u: sampling.sample(u, grid, padding=padding), image)
        (d_image,) = vjp(jnp.ones_like(out))
        assert np.all(np.isfinite(d_image)), padding


# ---------------------------------------------------------------- transformations & errors


def test_jit_vmap_and_grad_through_a_transform():
    image = jnp.asarray(np.random.default_rng(9).normal(size=(3, 8, 8, 1)))
    affine = transforms.get("affine")
    theta = jnp.tile(affine.identity()[None], (3, 1)) + 0.05

    def loss(params):
        grid = affine.grid(params, 5, 6)
        return jnp.sum(sampling.sample(image, grid) ** 2)

    grad = jax.jit(jax.grad(loss))(theta)
    assert grad.shape == theta.shape and np.all(np.isfinite(grad)) and np.any(grad != 0)
    per_example = jax.vmap(lambda u, g: sampling.sample(u, g))(
        image, affine.grid(theta, 5, 6))
    np.testing.assert_allclose(per_example, sampling.sample(image, affine.grid(theta, 5, 6)))


@pytest.mark.parametrize(
    "image_shape,grid_shape,kwargs,message",
    [
        ((2, 4), (2, 3, 2), {}, "image must be"),
        ((2, 4, 4), (2, 3, 3, 2), {}, "grid must be"),
        ((2, 4, 4, 1), (2, 3, 3, 4), {}, "grid must be"),
        ((2, 3, 4, 4, 1), (2, 3, 3, 3, 2), {}, "grid must be"),
        ((2, 4, 4, 1), (3, 3, 3, 2), {}, "batch sizes differ"),
        ((2, 4, 4, 1), (2, 3, 3, 2), {"kernel": "cubic"}, "kernel must be one of"),
        ((2, 4, 4, 1), (2, 3, 3, 2), {"kernel": ("bilinear",)}, "a sequence of 2"),
        ((2, 4, 4, 1), (2, 3, 3, 2), {"padding": "mirror"}, "padding must be one of"),
    ],
)
def test_bad_inputs_raise_value_error(image_shape, grid_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.sample(jnp.zeros(image_shape), jnp.zeros(grid_shape), **kwargs)


def test_integer_grid_raises_value_error():
    with pytest.raises(ValueError, match="grid must be floating point"):
        sampling.sample(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 3, 3, 2), jnp.int32))
