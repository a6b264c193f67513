"""Tests for stn.layers: identity initialisation, parameter output, several transformers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import layers, transforms, _xla_cpu


def _images(batch=3, size=12, channels=1, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, size, size, channels))


@pytest.mark.parametrize("name", ["affine", "projective", "tps", "attention"])
def test_fresh_fc_transformer_is_identity(name):
    x = _images()
    t = transforms.get(name)
    loc = layers.FullyConnectedLocNet(x.shape[1:], t.identity(), hidden=(8,), rngs=nnx.Rngs(0))
    st = layers.SpatialTransformer(loc, name, x.shape[1:3])
    out, theta = st(x, return_params=True)
    np.testing.assert_allclose(theta, jnp.broadcast_to(t.identity(), theta.shape), atol=0)
    np.testing.assert_allclose(out, x, atol=1e-5)


def test_fresh_conv_transformer_is_identity_and_resizes():
    x = _images(size=28, channels=2)
    t = transforms.get("affine")
    loc = layers.ConvLocNet(x.shape[1:], t.identity(), rngs=nnx.Rngs(1))
    np.testing.assert_allclose(layers.SpatialTransformer(loc, "affine", 28)(x), x, atol=1e-5)
    small = layers.SpatialTransformer(loc, "affine", (14, 10))(x)
    assert small.shape == (3, 14, 10, 2)


def test_regression_layer_gets_gradient_at_identity():
    """Zero weights must not block learning: the kernel's gradient is non-zero."""
    x = _images()
    t = transforms.get("affine")
    st = layers.SpatialTransformer(
        layers.FullyConnectedLocNet(x.shape[1:], t.identity(), hidden=(8,), rngs=nnx.Rngs(0)),
        "affine", 12)

    def loss(model):
        return jnp.sum(model(x) * jnp.arange(12.0)[None, None, :, None])

    grads = nnx.grad(loss)(st)
    assert float(jnp.abs(grads.loc_net.regression.kernel.value).sum()) > 0


def test_conv_loc_net_rejects_too_small_input():
    with pytest.raises(ValueError, match="too small"):
        layers.ConvLocNet((8, 8, 1), transforms.get("affine").identity(), rngs=nnx.Rngs(0))


class _TwoInSeries(nnx.Module):
    def __init__(self, rngs):
        ident = transforms.get("attention").identity()
        self.stack = layers.SerialTransformers([
            layers.SpatialTransformer(layers.FullyConnectedLocNet((12, 12, 1), ident, hidden=(4,),
                                                                  rngs=rngs), "attention", 12),
            layers.SpatialTransformer(layers.FullyConnectedLocNet((12, 12, 1), ident, hidden=(4,),
                                                                  rngs=rngs), "attention", 6),
        ])

    def __call__(self, x):
        return self.stack(x)


def test_transformers_in_series_and_parallel():
    x = _images()
    serial = _TwoInSeries(nnx.Rngs(0))
    out = serial(x)
    assert out.shape == (3, 6, 6, 1)
    # Two identity warps in series = one down-sampling to 6x6.
    ident = transforms.get("attention").identity()
    grid = transforms.get("attention").grid(jnp.broadcast_to(ident, (3, 3)), 6, 6)
    from stn import sampling
    np.testing.assert_allclose(out, sampling.sample(x, grid), atol=1e-5)

    rngs = nnx.Rngs(1)
    parallel = layers.ParallelTransformers([
        layers.SpatialTransformer(
            layers.FullyConnectedLocNet((12, 12, 1), transforms.get(n).identity(), hidden=(4,),
                                        rngs=rngs), n, 12)
        for n in ("affine", "tps")])
    both = parallel(x)
    assert both.shape == (3, 12, 12, 2)
    np.testing.assert_allclose(both[..., :1], x, atol=1e-5)
    np.testing.assert_allclose(both[..., 1:], x, atol=1e-5)
    # Each branch has its own loc net parameters.
    params = nnx.state(parallel, nnx.Param)
    assert len(jax.tree.leaves(params)) == 2 * 4


def test_parallel_requires_one_output_size():
    rngs = nnx.Rngs(0)
    ident = transforms.get("affine").identity()
    sts = [layers.SpatialTransformer(layers.FullyConnectedLocNet((12, 12, 1), ident, hidden=(),
                                                                 rngs=rngs), "affine", s)
           for s in (12, 6)]
    with pytest.raises(ValueError, match="output sizes must match"):
        layers.ParallelTransformers(sts)


@pytest.mark.parametrize("shape,kernel,overlap_add", [
    ((1, 40, 36, 8), (9, 7, 8, 2), False),  # padded and cropped, autodiff
    ((3, 11, 9, 5), (4, 3, 5, 2), True),  # padded forward, overlap-add dx
    ((2, 8, 8, 1), (5, 5, 1, 3), True),  # VALID forward (few channels), overlap-add dx
    ((2, 9, 7, 3), (3, 2, 3, 4), True)])
def test_conv_general_dilated_equals_lax_for_valid_convolutions(shape, kernel, overlap_add):
    """Every XLA:CPU path for VALID convolutions: same values and both gradients as lax."""
    assert (_xla_cpu._taps_per_example(shape, kernel) <= _xla_cpu.OVERLAP_ADD_MAX_TAPS) == overlap_add
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    w = jax.random.normal(jax.random.PRNGKey(1), kernel)
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (1, 1), "VALID", dimension_numbers=dn)))

    ours = _xla_cpu.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
    reference = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.grad(loss(_xla_cpu.conv_general_dilated), argnums=(0, 1))(x, w),
                    jax.grad(loss(jax.lax.conv_general_dilated), argnums=(0, 1))(x, w)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # strided and padded convolutions pass straight through
    for strides, padding in (((2, 2), "VALID"), ((1, 1), "SAME")):
        np.testing.assert_array_equal(
            _xla_cpu.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn),
            jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 11, 7, 2)])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_max_pool_equals_nnx_max_pool(shape, padding):
    """Values and (tie-free) gradients of the reshape max-pool equal nnx.max_pool's, odd sizes
    included (VALID drops the last row/column, SAME pads it)."""
    x = jax.random.normal(jax.random.PRNGKey(0), shape)

    def reference(x):
        return nnx.max_pool(x, (2, 2), strides=(2, 2), padding=padding)

    ours = layers.max_pool(x, 2, padding=padding)
    assert ours.shape == reference(x).shape
    np.testing.assert_array_equal(ours, reference(x))
    np.testing.assert_array_equal(
        jax.grad(lambda x: jnp.sum(jnp.sin(layers.max_pool(x, 2, padding=padding))))(x),
        jax.grad(lambda x: jnp.sum(jnp.sin(reference(x))))(x))


def test_max_pool_shares_the_gradient_of_ties_and_rejects_bad_padding():
    x = jnp.zeros((1, 2, 2, 1))
    np.testing.assert_allclose(jax.grad(lambda x: layers.max_pool(x).sum())(x), 0.25)
    with pytest.raises(ValueError, match="padding must be"):
        layers.max_pool(x, 2, padding="FULL")


@pytest.mark.parametrize("kernel,padding,align_corners", [
    ("nearest", "border", True), ("bilinear", "reflection", False), ("bilinear", "zeros", True)])
def test_transformer_samples_with_its_kernel_padding_and_align_corners(kernel, padding,
                                                                       align_corners):
    """Away from the identity the sampler's settings matter: the module's output is the sampler
    called with the configured ones, and differs from the default settings'."""
    from stn import sampling
    x = _images(batch=2, size=10)
    t = transforms.get("affine")
    loc = layers.FullyConnectedLocNet(x.shape[1:], t.identity(), hidden=(4,), rngs=nnx.Rngs(0))
    theta = jnp.array([1.3, 0.2, 0.37, -0.1, 0.9, -0.45])  # zoom out, shear, shift: off-grid
    loc.regression.bias.value = theta
    st = layers.SpatialTransformer(loc, "affine", (9, 11), kernel=kernel, padding=padding,
                                   align_corners=align_corners)
    grid = t.grid(jnp.tile(theta, (2, 1)), 9, 11, align_corners=align_corners)
    expected = sampling.sample(x, grid, kernel=kernel, padding=padding,
                               align_corners=align_corners)
    np.testing.assert_allclose(st(x), expected, atol=1e-6)
    default = sampling.sample(x, t.grid(jnp.tile(theta, (2, 1)), 9, 11))
    assert float(jnp.abs(st(x) - default).max()) > 1e-2


def test_regression_layers_built_from_one_identity_do_not_share_a_buffer():
    # Two loc nets given the same identity array (as parallel transformers are) must own their
    # biases: the trainer donates the state, and a buffer donated twice fails the train step.
    identity = transforms.get("affine").identity()
    rngs = nnx.Rngs(0)
    first = layers.regression_layer(4, identity, rngs=rngs)
    second = layers.regression_layer(4, identity, rngs=rngs)
    state = nnx.state(nnx.List([first, second]))
    step = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
    jax.block_until_ready(step(state))
