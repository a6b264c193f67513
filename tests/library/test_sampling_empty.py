"""Empty inputs: an empty batch, channel axis or grid samples to an empty
result of the right shape, in 2-D and 3-D, through `sample` and a whole SpatialTransformer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import layers, sampling, transforms

CASES = [  # image shape, grid shape, expected output shape
    ((0, 8, 8, 1), (0, 4, 5, 2), (0, 4, 5, 1)),
    ((2, 8, 8, 0), (2, 4, 5, 2), (2, 4, 5, 0)),
    ((2, 8, 8, 3), (2, 0, 5, 2), (2, 0, 5, 3)),
    ((8, 8, 0), (4, 5, 2), (4, 5, 0)),  # unbatched
    ((0, 6, 8, 8, 1), (0, 2, 4, 5, 3), (0, 2, 4, 5, 1)),
    ((2, 6, 8, 8, 0), (2, 2, 4, 5, 3), (2, 2, 4, 5, 0)),
]


@pytest.mark.parametrize("kernel", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("image_shape,grid_shape,expected", CASES)
def test_sample_of_nothing_is_an_empty_result_of_the_right_shape(image_shape, grid_shape,
                                                                 expected, kernel):
    image = jnp.ones(image_shape, jnp.float32)
    grid = jnp.zeros(grid_shape, jnp.float32)
    out = sampling.sample(image, grid, kernel=kernel)
    assert out.shape == expected and out.dtype == image.dtype
    jitted = jax.jit(lambda i, g: sampling.sample(i, g, kernel=kernel))(image, grid)
    assert jitted.shape == expected
    grad = jax.grad(lambda g: jnp.sum(sampling.sample(image, g, kernel=kernel)))(grid)
    assert grad.shape == grid_shape


def test_empty_inputs_are_still_checked():
    with pytest.raises(ValueError, match="batch sizes differ"):
        sampling.sample(jnp.ones((0, 8, 8, 1)), jnp.zeros((2, 4, 4, 2)))
    with pytest.raises(ValueError, match="padding must be one of"):
        sampling.sample(jnp.ones((0, 8, 8, 1)), jnp.zeros((0, 4, 4, 2)), padding="mirror")
    with pytest.raises(ValueError, match="kernel must be one of"):
        sampling.sample(jnp.ones((2, 8, 8, 0)), jnp.zeros((2, 4, 4, 2)), kernel="cubic")


@pytest.mark.slow
@pytest.mark.parametrize("ndim", [2, 3])
def test_spatial_transformer_on_an_empty_batch(ndim):
    shape = (10, 10, 1) if ndim == 2 else (6, 8, 8, 1)
    name = "affine" if ndim == 2 else "affine3d"
    identity = transforms.get(name).identity()
    loc = (layers.FullyConnectedLocNet(shape, identity, hidden=(4,), rngs=nnx.Rngs(0))
           if ndim == 2 else layers.ConvLocNet3D(shape, identity, rngs=nnx.Rngs(0)))
    st = layers.SpatialTransformer(loc, name, shape[:-1])
    out, theta = st(jnp.zeros((0, *shape)), return_params=True)
    assert out.shape == (0, *shape) and theta.shape[0] == 0
    full = st(jnp.ones((2, *shape)))  # the same transformer still samples a real batch
    np.testing.assert_allclose(full, 1.0, atol=1e-5)
