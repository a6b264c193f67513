"""Layer 2 on volumes and dense flows: identity at initialisation, gradients reach every part,
kernel objects with learnt Phi, clear errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import kernels, layers, transforms


def _volume(shape=(2, 12, 12, 12, 1), seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", transforms.names(3))
def test_fresh_volume_transformer_is_identity_and_resizes(name):
    x = _volume()
    loc = layers.ConvLocNet3D(x.shape[1:], transforms.get(name).identity(), rngs=nnx.Rngs(0))
    assert isinstance(loc, layers.LocalisationNet)
    np.testing.assert_allclose(layers.SpatialTransformer(loc, name, 12)(x), x, atol=1e-5)
    small = layers.SpatialTransformer(loc, name, (6, 8, 10))(x)
    assert small.shape == (2, 6, 8, 10, 1)


@pytest.mark.slow
def test_volume_transformer_gradients_reach_the_regression_layer():
    x = _volume()
    loc = layers.ConvLocNet3D(x.shape[1:], transforms.get("affine3d").identity(),
                              rngs=nnx.Rngs(1))
    st = layers.SpatialTransformer(loc, "affine3d", 12, kernel="bicubic")
    target = jnp.roll(x, 1, axis=3)
    grads = nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2))(st)
    kernel_grad = grads["loc_net"]["regression"]["kernel"][...]
    assert np.all(np.isfinite(kernel_grad)) and np.any(kernel_grad != 0)
    assert layers.regression_paths(st) == ["loc_net.regression"]


@pytest.mark.slow
@pytest.mark.parametrize("ndim", [2, 3])
def test_learnt_kernel_parameters(ndim):
    x = _volume((2, 10, 10, 1) if ndim == 2 else (2, 8, 8, 8, 1))
    name = "affine" if ndim == 2 else "affine3d"
    identity = transforms.get(name).identity()
    loc = (layers.FullyConnectedLocNet(x.shape[1:], identity, hidden=(4,), rngs=nnx.Rngs(2))
           if ndim == 2 else layers.ConvLocNet3D(x.shape[1:], identity, rngs=nnx.Rngs(2)))
    st = layers.SpatialTransformer(loc, name, x.shape[1:-1], kernel=kernels.Gaussian(0.6, 2.0),
                                   learn_kernel=True)
    phi = nnx.state(st, nnx.Param)["sampling_kernel"]["phi"][...]
    np.testing.assert_allclose(phi, [0.6] * ndim)  # one sigma per axis
    grads = nnx.grad(lambda m: jnp.mean((m(x) - x) ** 2))(st)
    d_phi = grads["sampling_kernel"]["phi"][...]
    assert d_phi.shape == (ndim,) and np.all(np.isfinite(d_phi)) and np.all(d_phi != 0)
    # Without learn_kernel the same kernel is a constant of the module.
    fixed = layers.SpatialTransformer(loc, name, x.shape[1:-1], kernel=kernels.Gaussian(0.6, 2.0))
    assert "sampling_kernel" not in nnx.state(fixed, nnx.Param)
    np.testing.assert_allclose(fixed(x), st(x), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("shape,steps", [((2, 10, 12, 1), 0), ((2, 6, 7, 8, 2), 3)])
def test_fresh_flow_transformer_is_identity_and_learns(shape, steps):
    x = _volume(shape)
    ndim = len(shape) - 2
    net = layers.FlowNet(shape[1:], rngs=nnx.Rngs(3))
    assert isinstance(net, layers.LocalisationNet)
    flow = layers.FlowTransformer(net, integrate_steps=steps, ndim=ndim)
    np.testing.assert_allclose(flow(x), x, atol=1e-5)
    assert flow.displacement(x).shape == shape[:-1] + (ndim,)
    np.testing.assert_allclose(flow.displacement(x), 0.0)
    target = jnp.roll(x, 1, axis=2)
    grads = nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2))(flow)
    kernel_grad = grads["flow_net"]["regression"]["kernel"][...]
    assert np.all(np.isfinite(kernel_grad)) and np.any(kernel_grad != 0)
    assert layers.localisation_paths(flow) == ["flow_net"]


def test_flow_transformer_warps_the_source_by_the_field_of_x():
    """A registration net sees moving and fixed together; only the moving image is warped."""
    moving, fixed = _volume((1, 8, 9, 1), 4), _volume((1, 8, 9, 1), 5)

    class OnePixel(nnx.Module):  # u_x = 1 pixel everywhere
        def __call__(self, x):
            return jnp.zeros(x.shape[:-1] + (2,)).at[..., 0].set(1.0)

    flow = layers.FlowTransformer(OnePixel())
    out = flow(jnp.concatenate([moving, fixed], -1), source=moving)
    assert out.shape == moving.shape
    np.testing.assert_allclose(out[:, :, :-1], moving[:, :, 1:], atol=1e-5)


def test_bad_configurations_raise_value_error():
    x = _volume()
    identity = transforms.get("affine3d").identity()
    loc = layers.ConvLocNet3D(x.shape[1:], identity, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"output size must be an int or \(depth, height, width\)"):
        layers.SpatialTransformer(loc, "affine3d", (12, 12))
    with pytest.raises(ValueError, match=r"affine3d transforms \[B, D, H, W, C\] inputs"):
        layers.SpatialTransformer(loc, "affine3d", 12)(x[:, 0])
    with pytest.raises(ValueError, match="kernel must be one of"):
        layers.SpatialTransformer(loc, "affine3d", 12, kernel="lanczos")
    with pytest.raises(ValueError, match="has no parameters to learn"):
        layers.SpatialTransformer(loc, "affine3d", 12, learn_kernel=True)
    with pytest.raises(ValueError, match="padding must be one of"):
        layers.SpatialTransformer(loc, "affine3d", 12, padding="mirror")
    with pytest.raises(ValueError, match="too small"):
        layers.ConvLocNet3D((2, 12, 12, 1), identity, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"input_shape must be \(D, H, W, C\)"):
        layers.ConvLocNet3D((12, 12, 1), identity, rngs=nnx.Rngs(0))
    net = layers.FlowNet((8, 8, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="units must be one of"):
        layers.FlowTransformer(net, units="mm")
    with pytest.raises(ValueError, match="integrate_steps must be a non-negative integer"):
        layers.FlowTransformer(net, integrate_steps=-2)
