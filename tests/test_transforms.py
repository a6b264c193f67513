"""Grid generators: identity, sizes, agreement between transforms, TPS against SciPy."""

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


@pytest.mark.parametrize("name", transforms.NAMES)
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


@pytest.mark.parametrize("name", transforms.NAMES)
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


@pytest.mark.parametrize("name", transforms.NAMES)
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
    with pytest.raises(ValueError, match="grid size must be positive"):
        transforms.base_grid(0, 4)


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
