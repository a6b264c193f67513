"""Grid generators: identity, sizes, agreement between transforms, TPS against SciPy, volumes,
and dense displacement fields (composition, scaling and squaring) against hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import RBFInterpolator

from stn import sampling, transforms


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _torch_style_affine_grid(theta, height, width, align_corners):
    """torch.nn.functional.affine_grid, transcribed: base (x, y, 1) rows times theta^T."""

    def axis(size):
        values = np.linspace(-1.0, 1.0, size)
        return values if align_corners else values * (size - 1) / size

    base = np.ones((height, width, 3))
    base[..., 0] = axis(width)[None, :]
    base[..., 1] = axis(height)[:, None]
    return np.einsum("hwk,bjk->bhwj", base, np.asarray(theta))


@pytest.mark.parametrize("name", transforms.names(2))
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_parameters_give_the_identity_warp(name, align_corners):
    transform = transforms.get(name)
    params = jnp.tile(transform.identity(jnp.float64)[None], (2, 1))
    assert params.shape == (2, transform.num_params)
    grid = transform.grid(params, 6, 5, align_corners=align_corners)
    np.testing.assert_array_equal(
        grid, np.broadcast_to(transforms.base_grid(6, 5, align_corners=align_corners,
                                                   dtype=jnp.float64),
                              (2, 6, 5, 2)))
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 5, 3)))
    for kernel in sampling.KERNELS:
        warped = sampling.sample(image, grid, kernel=kernel, align_corners=align_corners)
        np.testing.assert_allclose(warped, image, atol=1e-12)


@pytest.mark.parametrize("name", transforms.names(2))
@pytest.mark.parametrize("size", [(3, 4), (28, 28), (40, 56)])
def test_any_output_size(name, size):
    transform = transforms.get(name)
    params = jnp.tile(transform.identity()[None], (3, 1))
    grid = transform.grid(params, *size)
    assert grid.shape == (3, *size, 2)
    image = jnp.ones((3, 14, 14, 2))
    assert sampling.sample(image, grid).shape == (3, *size, 2)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_torch_formula(align_corners):
    theta = np.random.default_rng(1).normal(size=(3, 2, 3))
    actual = transforms.affine_grid(jnp.asarray(theta), 7, 9, align_corners=align_corners)
    expected = _torch_style_affine_grid(theta, 7, 9, align_corners)
    np.testing.assert_allclose(actual, expected, atol=1e-14)


def test_flat_and_structured_affine_parameters_agree():
    theta = jnp.asarray(np.random.default_rng(2).normal(size=(2, 2, 3)))
    affine = transforms.get("affine")
    np.testing.assert_array_equal(affine.grid(theta.reshape(2, 6), 4, 5),
                                  transforms.affine_grid(theta, 4, 5))


def test_attention_is_scale_and_translation():
    params = jnp.array([[0.5, 0.2, -0.3]])
    grid = transforms.get("attention").grid(params, 4, 6)
    base = transforms.base_grid(4, 6, dtype=jnp.float64)
    np.testing.assert_allclose(grid[0, ..., 0], 0.5 * base[..., 0] + 0.2, atol=1e-15)
    np.testing.assert_allclose(grid[0, ..., 1], 0.5 * base[..., 1] - 0.3, atol=1e-15)


def test_projective_with_affine_parameters_equals_affine():
    theta = np.random.default_rng(3).normal(size=(2, 2, 3))
    params = np.concatenate([theta.reshape(2, 6), np.zeros((2, 2))], axis=1)
    np.testing.assert_allclose(transforms.get("projective").grid(jnp.asarray(params), 5, 7),
                               transforms.affine_grid(jnp.asarray(theta), 5, 7), atol=1e-14)


def test_projective_divides_by_the_third_coordinate():
    h = np.array([1.1, 0.2, 0.1, -0.1, 0.9, 0.05, 0.3, -0.2])
    grid = transforms.get("projective").grid(jnp.asarray(h[None]), 3, 4)
    base = np.asarray(transforms.base_grid(3, 4, dtype=jnp.float64))
    homogeneous = np.concatenate([base, np.ones((3, 4, 1))], -1) @ np.append(h, 1).reshape(3, 3).T
    np.testing.assert_allclose(grid[0], homogeneous[..., :2] / homogeneous[..., 2:], atol=1e-14)


@pytest.mark.parametrize("name", ["tps", "tps3x3"])
def test_tps_moved_by_an_affine_map_equals_that_affine_grid(name):
    transform = transforms.get(name)
    control = np.asarray(transform.identity(jnp.float64)).reshape(-1, 2)
    theta = np.array([[[0.9, 0.2, 0.1], [-0.15, 1.1, -0.05]]])
    moved = control @ theta[0, :, :2].T + theta[0, :, 2]
    for align_corners in (False, True):
        tps = transform.grid(jnp.asarray(moved[None]), 9, 11, align_corners=align_corners)
        affine = transforms.affine_grid(jnp.asarray(theta), 9, 11, align_corners=align_corners)
        np.testing.assert_allclose(tps, affine, atol=1e-12)


@pytest.mark.parametrize("name", ["tps", "tps3x3"])
def test_nonaffine_tps_matches_scipy_thin_plate_interpolator(name):
    transform = transforms.get(name)
    control = np.asarray(transform.identity(jnp.float64)).reshape(-1, 2)
    moved = control + np.random.default_rng(4).normal(scale=0.1, size=control.shape)
    grid = transform.grid(jnp.asarray(moved[None]), 8, 10)
    # SciPy's kernel is r^2 log r; ours r^2 log r^2 = 2 r^2 log r: the same interpolant.
    reference = RBFInterpolator(control, moved, kernel="thin_plate_spline", degree=1)
    expected = reference(np.asarray(transforms.base_grid(8, 10, dtype=jnp.float64)).reshape(-1, 2))
    # SciPy solves its own (rescaled) system: agreement to ~1e-9 in float64.
    np.testing.assert_allclose(np.asarray(grid).reshape(-1, 2), expected, atol=1e-8)
    # Interpolation: on a g x g output grid with align_corners=True the target points are the
    # control points themselves, which map to their source positions.
    size = int(np.sqrt(control.shape[0]))
    at_control = transform.grid(jnp.asarray(moved[None]), size, size, align_corners=True)
    np.testing.assert_allclose(np.asarray(at_control).reshape(-1, 2), moved, atol=1e-12)


def test_tps_radial_basis_is_zero_at_zero():
    values = transforms.tps_radial_basis(np.array([0.0, 1.0, np.e]))
    np.testing.assert_allclose(values, [0.0, 0.0, np.e])


@pytest.mark.parametrize("name", transforms.names(2))
def test_jit_vmap_grad_into_parameters(name):
    transform = transforms.get(name)
    rng = np.random.default_rng(5)
    image = jnp.asarray(rng.normal(size=(2, 8, 8, 1)))
    params = jnp.tile(transform.identity()[None], (2, 1)) + 0.01 * rng.normal(
        size=(2, transform.num_params))

    def loss(p):
        return jnp.sum(sampling.sample(image, transform.grid(p, 6, 6)) ** 2)

    grad = jax.jit(jax.grad(loss))(params)
    assert grad.shape == params.shape
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    per_example = jax.vmap(lambda p: transform.grid(p[None], 6, 6)[0])(params)
    np.testing.assert_allclose(per_example, transform.grid(params, 6, 6), atol=1e-14)


def test_unknown_transform_and_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="unknown transform 'similarity'"):
        transforms.get("similarity")
    with pytest.raises(ValueError, match=r"affine parameters must be \[B, 6\]"):
        transforms.get("affine").grid(jnp.zeros((2, 5)), 4, 4)
    with pytest.raises(ValueError, match="affine parameters must be"):
        transforms.affine_grid(jnp.zeros((2, 3, 3)), 4, 4)
    with pytest.raises(ValueError, match="tps parameters must be"):
        transforms.tps_grid(jnp.zeros((2, 5, 2)), 4, 4)
    with pytest.raises(ValueError, match="grid size must be"):
        transforms.base_grid(0, 4)
    with pytest.raises(ValueError, match="grid size must be"):
        transforms.base_grid(4)
    with pytest.raises(ValueError, match=r"affine3d needs an output size \(depth, height, width\)"):
        transforms.get("affine3d").grid(jnp.zeros((2, 12)), 4, 4)
    with pytest.raises(ValueError, match=r"affine needs an output size \(height, width\)"):
        transforms.get("affine").grid(jnp.zeros((2, 6)), 4, 4, 4)
    with pytest.raises(ValueError, match=r"affine3d parameters must be \[B, 3, 4\]"):
        transforms.affine_grid(jnp.zeros((2, 2, 3)), 4, 4, 4)


def test_compose_affine_is_the_outer_map_applied_to_the_inner_grid():
    """grid(compose(o, i)) == o applied (eq. 1) to the points of grid(i)."""
    key_o, key_i = jax.random.split(jax.random.PRNGKey(7))
    outer = jax.random.normal(key_o, (3, 2, 3))
    inner = jax.random.normal(key_i, (3, 2, 3))
    inner_grid = transforms.affine_grid(inner, 5, 6)
    expected = (jnp.einsum("bij,bhwj->bhwi", outer[:, :, :2], inner_grid)
                + outer[:, None, None, :, 2])
    np.testing.assert_allclose(transforms.affine_grid(transforms.compose_affine(outer, inner), 5, 6),
                               expected, rtol=1e-5, atol=1e-5)
    identity = jnp.broadcast_to(jnp.eye(2, 3), (3, 2, 3))
    np.testing.assert_allclose(transforms.compose_affine(identity, inner), inner, atol=1e-6)


# ---------------------------------------------------------------- volumes


def _torch_style_affine_grid_3d(theta, depth, height, width, align_corners):
    """torch.nn.functional.affine_grid for 5-D sizes, transcribed: (x, y, z, 1) rows times theta^T."""

    def axis(size):
        values = np.linspace(-1.0, 1.0, size)
        return values if align_corners else values * (size - 1) / size

    base = np.ones((depth, height, width, 4))
    base[..., 0] = axis(width)[None, None, :]
    base[..., 1] = axis(height)[None, :, None]
    base[..., 2] = axis(depth)[:, None, None]
    return np.einsum("dhwk,bjk->bdhwj", base, np.asarray(theta))


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_3d_matches_torch_formula(align_corners):
    theta = np.random.default_rng(8).normal(size=(2, 3, 4))
    actual = transforms.affine_grid(jnp.asarray(theta), 4, 5, 6, align_corners=align_corners)
    assert actual.shape == (2, 4, 5, 6, 3)
    expected = _torch_style_affine_grid_3d(theta, 4, 5, 6, align_corners)
    np.testing.assert_allclose(actual, expected, atol=1e-14)


@pytest.mark.parametrize("name", transforms.names(3))
@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_parameters_give_the_identity_warp_on_volumes(name, align_corners):
    transform = transforms.get(name)
    assert transform.ndim == 3
    params = jnp.tile(transform.identity(jnp.float64)[None], (2, 1))
    grid = transform.grid(params, 3, 4, 5, align_corners=align_corners)
    np.testing.assert_array_equal(
        grid, np.broadcast_to(transforms.base_grid(3, 4, 5, align_corners=align_corners,
                                                   dtype=jnp.float64), (2, 3, 4, 5, 3)))
    volume = jnp.asarray(np.random.default_rng(9).normal(size=(2, 3, 4, 5, 2)))
    for kernel in sampling.KERNELS:
        warped = sampling.sample(volume, grid, kernel=kernel, align_corners=align_corners)
        np.testing.assert_allclose(warped, volume, atol=1e-12)


def test_registry_counts_and_identities():
    assert set(transforms.names(2)) | set(transforms.names(3)) == set(transforms.NAMES)
    assert transforms.get("affine3d").num_params == 12
    assert transforms.get("attention3d").num_params == 4
    np.testing.assert_array_equal(transforms.get("affine3d").identity().reshape(3, 4),
                                  np.eye(3, 4))
    np.testing.assert_array_equal(transforms.get("attention3d").identity(), [1, 0, 0, 0])


@pytest.mark.parametrize("kernel", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_acting_in_x_y_only_equals_the_2d_warp_slice_by_slice(kernel, align_corners):
    rng = np.random.default_rng(10)
    theta_2d = np.array([[[0.9, 0.2, 0.1], [-0.25, 1.1, -0.05]], [[1.2, -0.1, 0.0], [0.1, 0.8, 0.2]]])
    theta_3d = np.zeros((2, 3, 4))
    theta_3d[:, :2, :2] = theta_2d[:, :, :2]
    theta_3d[:, :2, 3] = theta_2d[:, :, 2]
    theta_3d[:, 2, 2] = 1.0
    volume = jnp.asarray(rng.normal(size=(2, 4, 7, 9, 2)))
    grid_3d = transforms.get("affine3d").grid(jnp.asarray(theta_3d.reshape(2, 12)), 4, 5, 6,
                                              align_corners=align_corners)
    warped = sampling.sample(volume, grid_3d, kernel=kernel, align_corners=align_corners)
    grid_2d = transforms.affine_grid(jnp.asarray(theta_2d), 5, 6, align_corners=align_corners)
    for z in range(4):
        expected = sampling.sample(volume[:, z], grid_2d, kernel=kernel,
                                   align_corners=align_corners)
        np.testing.assert_allclose(warped[:, z], expected, atol=1e-12)


def test_attention3d_is_scale_and_translation():
    params = jnp.array([[0.5, 0.2, -0.3, 0.4]])
    grid = transforms.get("attention3d").grid(params, 3, 4, 6)
    base = transforms.base_grid(3, 4, 6, dtype=jnp.float64)
    np.testing.assert_allclose(grid[0], 0.5 * base + jnp.array([[[[0.2, -0.3, 0.4]]]]),
                               atol=1e-15)


@pytest.mark.parametrize("name", transforms.names(3))
def test_jit_vmap_grad_into_volume_parameters(name):
    transform = transforms.get(name)
    rng = np.random.default_rng(11)
    volume = jnp.asarray(rng.normal(size=(2, 6, 6, 6, 1)))
    params = jnp.tile(transform.identity()[None], (2, 1)) + 0.01 * rng.normal(
        size=(2, transform.num_params))

    def loss(p):
        return jnp.sum(sampling.sample(volume, transform.grid(p, 4, 5, 6)) ** 2)

    grad = jax.jit(jax.grad(loss))(params)
    assert grad.shape == params.shape
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


# ---------------------------------------------------------------- dense displacement fields


def test_zero_displacement_is_the_identity_grid():
    for size in [(4, 5), (3, 4, 5)]:
        for units in transforms.UNITS:
            zeros = jnp.zeros((2, *size, len(size)))
            grid = transforms.displacement_grid(zeros, units=units)
            np.testing.assert_array_equal(grid[0], transforms.base_grid(*size, dtype=jnp.float64))


@pytest.mark.parametrize("align_corners", [False, True])
def test_one_pixel_displacement_shifts_by_one_pixel(align_corners):
    """u_x = 1 pixel: output pixel (y, x) reads input (y, x + 1); u_z = -1: (z, ...) reads z - 1."""
    rng = np.random.default_rng(12)
    image = jnp.asarray(rng.normal(size=(1, 4, 6, 2)))
    shift = jnp.zeros((1, 4, 6, 2)).at[..., 0].set(1.0)
    out = sampling.sample(image, transforms.displacement_grid(shift, align_corners=align_corners),
                          align_corners=align_corners)
    np.testing.assert_allclose(out[:, :, :-1], image[:, :, 1:], atol=1e-12)
    np.testing.assert_allclose(out[:, :, -1], 0.0, atol=1e-12)
    volume = jnp.asarray(rng.normal(size=(1, 3, 4, 5, 1)))
    down = jnp.zeros((1, 3, 4, 5, 3)).at[..., 2].set(-1.0)
    out = sampling.sample(volume, transforms.displacement_grid(down, align_corners=align_corners),
                          align_corners=align_corners)
    np.testing.assert_allclose(out[:, 1:], volume[:, :-1], atol=1e-12)
    # The same shift in normalised units.
    scale = transforms.pixel_scale((3, 4, 5), align_corners)
    normalized = transforms.displacement_grid(down * scale.reshape(1, 1, 1, 1, 3), units="normalized",
                                              align_corners=align_corners)
    np.testing.assert_allclose(normalized, transforms.displacement_grid(
        down, align_corners=align_corners), atol=1e-15)


def test_pixel_scale_by_hand():
    np.testing.assert_allclose(transforms.pixel_scale((4, 8), False), [2 / 8, 2 / 4])
    np.testing.assert_allclose(transforms.pixel_scale((3, 4, 8), True), [2 / 7, 2 / 3, 2 / 2])


def test_compose_constant_displacements_adds_them():
    first = jnp.broadcast_to(jnp.array([[[[[1.5, -0.5, 0.25]]]]]), (1, 4, 5, 6, 3))
    second = jnp.broadcast_to(jnp.array([[[[[-2.0, 1.0, 0.5]]]]]), (1, 4, 5, 6, 3))
    np.testing.assert_allclose(transforms.compose_displacements(first, second),
                               first + second, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_compose_shift_then_ramp_by_hand(align_corners):
    """inner: u_x = 1 pixel; outer: u_x(x) = 0.1 x (pixels, x the pixel index along the width).
    u(p) = 1 + 0.1 (x + 1) wherever x + 1 is still inside; at the last column the outer field is
    read at its edge (border): 1 + 0.1 (W - 1)."""
    height, width = 3, 7
    x = jnp.arange(width, dtype=jnp.float64)
    inner = jnp.zeros((1, height, width, 2)).at[..., 0].set(1.0)
    outer = jnp.zeros((1, height, width, 2)).at[..., 0].set(jnp.broadcast_to(0.1 * x, (height, width)))
    composed = transforms.compose_displacements(outer, inner, align_corners=align_corners)
    expected_x = 1.0 + 0.1 * jnp.minimum(x + 1, width - 1)
    np.testing.assert_allclose(composed[0, :, :, 0], jnp.broadcast_to(expected_x, (height, width)),
                               atol=1e-12)
    np.testing.assert_allclose(composed[..., 1], 0.0, atol=1e-12)
    # And the other order: u(p) = 0.1 x + 1.
    other = transforms.compose_displacements(inner, outer, align_corners=align_corners)
    np.testing.assert_allclose(other[0, :, :, 0], jnp.broadcast_to(0.1 * x + 1.0, (height, width)),
                               atol=1e-12)


def test_composition_samples_like_two_warps_in_a_row():
    """Sampling with compose(outer, inner) == sampling with outer, then with inner. On a linear
    image with fields whose points stay inside, bilinear sampling is exact, so the two agree."""
    y, x = jnp.meshgrid(jnp.arange(9.0), jnp.arange(9.0), indexing="ij")
    outer = jnp.stack([0.1 * (x - 4), -0.05 * (y - 4)], -1)[None]
    inner = jnp.stack([0.2 + 0 * x, 0.1 * (x - 4)], -1)[None]
    ramp = (2.0 * x + 3.0 * y)[None, ..., None]
    once = sampling.sample(ramp, transforms.displacement_grid(
        transforms.compose_displacements(outer, inner)))
    twice = sampling.sample(sampling.sample(ramp, transforms.displacement_grid(outer)),
                            transforms.displacement_grid(inner))
    np.testing.assert_allclose(once[0, 2:-2, 2:-2], twice[0, 2:-2, 2:-2], atol=1e-12)


@pytest.mark.parametrize("size", [(6, 7), (4, 5, 6)])
@pytest.mark.parametrize("steps", [0, 1, 7])
def test_constant_velocity_integrates_to_a_translation(size, steps):
    constant = jnp.array([0.75, -1.25, 0.5][: len(size)]).reshape((1,) * (len(size) + 1) + (-1,))
    velocity = jnp.broadcast_to(constant, (2, *size, len(size)))
    displacement = transforms.integrate_velocity(velocity, steps=steps)
    np.testing.assert_allclose(displacement, velocity, atol=1e-12)


def test_linear_velocity_integrates_by_hand():
    """v(x) = lam (x - c) along x: each squaring maps u_k = g_k (x - c) to (2 g_k + g_k^2)(x - c),
    so u_N = ((1 + lam / 2^N)^(2^N) - 1) (x - c), close to the flow's exp(lam) - 1, wherever the
    composed points stay inside the field."""
    width, lam, steps = 33, 0.2, 4
    x = jnp.arange(width, dtype=jnp.float64)
    centre = (width - 1) / 2
    velocity = jnp.zeros((1, 1, width, 2)).at[0, 0, :, 0].set(lam * (x - centre))
    displacement = transforms.integrate_velocity(velocity, steps=steps, align_corners=True)
    gain = (1 + lam / 2**steps) ** (2**steps) - 1
    inside = slice(8, width - 8)  # |x - c| <= 8: every intermediate point stays in [0, 32]
    np.testing.assert_allclose(displacement[0, 0, inside, 0], gain * (x[inside] - centre),
                               atol=1e-12)
    assert abs(gain - (np.exp(lam) - 1)) < 2e-3


def test_displacement_functions_raise_value_errors():
    with pytest.raises(ValueError, match=r"displacement must be \[B, H, W, 2\] or \[B, D, H, W, 3\]"):
        transforms.displacement_grid(jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="units must be one of"):
        transforms.displacement_grid(jnp.zeros((1, 4, 4, 2)), units="mm")
    with pytest.raises(ValueError, match="must have the same shape"):
        transforms.compose_displacements(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 5, 2)))
    with pytest.raises(ValueError, match="velocity must be"):
        transforms.integrate_velocity(jnp.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        transforms.integrate_velocity(jnp.zeros((1, 4, 4, 2)), steps=-1)
