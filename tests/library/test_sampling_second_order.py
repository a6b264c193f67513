"""Derivatives of every order through stn.sampling.sample, on the default path and the jnp one.

On the CPU the default path (``method="auto"``) runs the native sampler for the bilinear kernel
(unless ``STN_NATIVE=0``); bicubic runs the jnp window path on both. Second derivatives are
checked against finite differences (``check_grads(order=2)``, forward and reverse), the two
paths against each other, and a Hessian through a ``SpatialTransformer`` in float32 as a user's
model would take it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads

from stn import layers, sampling, transforms

METHODS = ("auto", "jnp")


def _case(sizes, seed=0, channels=2):
    """An image and a grid whose points stay a margin away from integer pixel coordinates, so
    that finite differences do not cross the linear kernel's kinks."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, *sizes, channels))
    out = (3,) * len(sizes)
    axis_sizes = sizes[::-1]  # grid order (x, y[, z])
    pixels = rng.integers(1, 3, size=(2, *out, len(sizes))) + rng.uniform(0.2, 0.8,
                                                                           size=(2, *out, len(sizes)))
    grid = (2 * pixels + 1) / np.asarray(axis_sizes) - 1  # align_corners=False
    return jnp.asarray(image), jnp.asarray(grid)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kernel", ["bilinear", "bicubic"])
@pytest.mark.parametrize("sizes", [(5, 6), (4, 5, 6)], ids=["2d", "3d"])
def test_check_grads_order_two(sizes, kernel, method):
    with jax.enable_x64(True):
        image, grid = _case(sizes)
        fn = lambda u, g: sampling.sample(u, g, kernel=kernel, method=method)  # noqa: E731
        check_grads(jax.jit(fn), (image, grid), order=2, modes=("fwd", "rev"), eps=1e-5)


@pytest.mark.parametrize("sizes,padding", [((5, 6), "zeros"), ((5, 6), "reflection"),
                                          ((4, 5, 6), "border")],
                         ids=["2d-zeros", "2d-reflection", "3d-border"])
@pytest.mark.slow
def test_hessian_and_third_derivative_agree_across_paths(sizes, padding):
    """``hessian``, reverse over reverse and a third derivative: the default path (native on the
    CPU) gives the jnp path's numbers."""
    with jax.enable_x64(True):
        image, grid = _case(sizes, seed=1)

        def loss(u, g, method):
            return jnp.sum(jnp.sin(sampling.sample(u, g, padding=padding, method=method)))

        def derivatives(u, g, method):
            grad_x = jax.grad(loss, argnums=1)
            return (jax.hessian(loss, argnums=(0, 1))(u, g, method),
                    jax.grad(lambda x: jnp.sum(grad_x(u, x, method) ** 2))(g),
                    jax.jacfwd(jax.jacfwd(grad_x, argnums=1), argnums=1)(u, g[:, :1], method))

        derivatives = jax.jit(derivatives, static_argnums=2)
        for a, b in zip(jax.tree.leaves(derivatives(image, grid, "auto")),
                        jax.tree.leaves(derivatives(image, grid, "jnp"))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)


def test_hessian_through_a_spatial_transformer(monkeypatch):
    """``jax.hessian`` of a loss in a transformer's parameters, float32 on the CPU: the default
    path (native where it is on) gives the jnp path's Hessian."""
    x = jax.random.uniform(jax.random.key(0), (2, 10, 10, 1))
    loc = layers.FullyConnectedLocNet(x.shape[1:], transforms.get("affine").identity(),
                                      hidden=(4,), rngs=nnx.Rngs(0))
    graph, params, rest = nnx.split(layers.SpatialTransformer(loc, "affine", (8, 8)),
                                    nnx.Param, ...)
    flat, unravel = ravel_pytree(params)
    target = jnp.roll(x[:, 1:9, 1:9], 1, axis=1)

    def loss(flat_params):
        output = nnx.merge(graph, unravel(flat_params), rest)(x)
        return jnp.mean((output - target) ** 2)

    hessian = jax.jit(jax.hessian(loss))(flat)
    assert hessian.shape == (flat.size, flat.size) and np.all(np.isfinite(hessian))
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-6)
    assert np.max(np.abs(hessian)) > 1e-3  # the transformer's parameters do bend the loss
    monkeypatch.setenv("STN_NATIVE", "0")
    reference = jax.jit(jax.hessian(loss))(flat)
    np.testing.assert_allclose(hessian, reference, rtol=1e-4, atol=1e-6)
