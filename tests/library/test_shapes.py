"""Shape and argument safety at the library's entry points: an ambiguous or wrong shape is a
one-line ValueError naming what was expected, raised where the mistake is made (when a layer is
built, before XLA sees the arrays), and the shapes the README offers are accepted."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import kernels, layers, sampling, transforms


def _one_line_error(call, match: str) -> str:
    with pytest.raises(ValueError, match=match) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- sample: batched or not


def test_a_4d_image_with_a_3_axis_grid_is_an_error_not_an_unbatched_volume():
    image = jnp.ones((2, 8, 8, 1))  # [B, H, W, C]
    grid = jnp.zeros((2, 4, 4, 3))  # a volume grid's last axis
    for method in ("auto", "jnp"):
        message = _one_line_error(lambda: sampling.sample(image, grid, method=method),
                                  r"grid must be \[B, H_out, W_out, 2\] for an image")
        assert "(2, 4, 4, 3)" in message and "[B, D, H, W, C]" in message


def test_unbatched_only_for_images_and_volumes_only_with_their_batch_axis():
    image = jnp.arange(8 * 8, dtype=jnp.float32).reshape(8, 8, 1)
    grid = transforms.base_grid(4, 5)
    np.testing.assert_array_equal(sampling.sample(image, grid),
                                  sampling.sample(image[None], grid[None])[0])
    _one_line_error(lambda: sampling.sample(image, jnp.zeros((4, 5, 3))),
                    r"grid must be \[H_out, W_out, 2\] for an unbatched image")
    volume = jnp.ones((1, 3, 4, 5, 1))
    assert sampling.sample(volume, jnp.zeros((1, 2, 2, 2, 3))).shape == (1, 2, 2, 2, 1)
    _one_line_error(lambda: sampling.sample(volume, jnp.zeros((1, 2, 2, 2))),
                    r"grid must be \[B, D_out, H_out, W_out, 3\] for a volume")


# ---------------------------------------------------------------- loc nets and the transformer


def _fc(input_shape, transform="affine"):
    return layers.FullyConnectedLocNet(input_shape, transforms.get(transform).identity(),
                                       hidden=(4,), rngs=nnx.Rngs(0))


def test_spatial_transformer_checks_the_loc_net_output_when_built():
    loc = _fc((12, 12, 1), "affine")  # regresses 6 numbers
    message = _one_line_error(lambda: layers.SpatialTransformer(loc, "projective", 12),
                              r"gives \[B, 6\], transform 'projective' needs \[B, 8\]")
    assert "FullyConnectedLocNet" in message
    _one_line_error(lambda: layers.SpatialTransformer(loc, "tps", 12), r"needs \[B, 32\]")
    volume_loc = layers.ConvLocNet3D((8, 8, 8, 1), transforms.get("attention3d").identity(),
                                     rngs=nnx.Rngs(0))
    _one_line_error(lambda: layers.SpatialTransformer(volume_loc, "affine3d", 8),
                    r"gives \[B, 4\], transform 'affine3d' needs \[B, 12\]")
    assert layers.SpatialTransformer(loc, "affine", 12)(jnp.ones((2, 12, 12, 1))).shape == (
        2, 12, 12, 1)


class _AnySizeLocNet(layers.LocalisationNet):
    """A loc net that names no input_shape (any size): regresses six zeros plus the bias."""

    def __init__(self):
        self.bias = nnx.Param(jnp.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def __call__(self, x):
        return jnp.zeros((x.shape[0], 6)) + self.bias[...][None]


def test_a_loc_net_without_input_shape_is_checked_at_call_time_in_one_line():
    transformer = layers.SpatialTransformer(_AnySizeLocNet(), "projective", 6)  # not probed
    message = _one_line_error(lambda: transformer(jnp.ones((2, 9, 7, 1))),
                              r"projective parameters must be \[B, 8\], got shape \(2, 6\)")
    assert message.count("[B, 8]") == 1


@pytest.mark.parametrize("make,shape,other", [
    (lambda s: _fc(s), (12, 12, 1), (2, 14, 12, 1)),
    (lambda s: layers.ConvLocNet(s, transforms.get("affine").identity(), rngs=nnx.Rngs(0)),
     (28, 28, 1), (2, 36, 36, 1)),
    (lambda s: layers.ConvLocNet3D(s, transforms.get("affine3d").identity(), rngs=nnx.Rngs(0)),
     (8, 8, 8, 1), (2, 8, 16, 8, 1)),
], ids=["fully_connected", "conv", "conv3d"])
def test_loc_nets_name_their_input_shape_and_refuse_another(make, shape, other):
    loc = make(shape)
    assert loc.input_shape == shape
    assert loc(jnp.ones((2, *shape))).shape[0] == 2
    message = _one_line_error(lambda: loc(jnp.ones(other)), "was built for inputs")
    assert f"[B, {', '.join(map(str, shape))}]" in message and str(other) in message
    _one_line_error(lambda: nnx.jit(lambda m, x: m(x))(loc, jnp.ones(other)),
                    "was built for inputs")


def test_flow_net_takes_any_size_but_only_its_channels():
    net = layers.FlowNet((8, 8, 2), rngs=nnx.Rngs(0))
    assert net(jnp.ones((1, 10, 6, 2))).shape == (1, 10, 6, 2)  # fully convolutional
    _one_line_error(lambda: net(jnp.ones((1, 8, 8, 3))), r"FlowNet was built for inputs "
                    r"\[B, H, W, 2\]")
    _one_line_error(lambda: net(jnp.ones((1, 4, 8, 8, 2))), "FlowNet was built for inputs")


# ---------------------------------------------------------------- affine_grid


def test_affine_grid_takes_flat_parameters_and_torch_sizes():
    rng = np.random.default_rng(0)
    theta = jnp.asarray(rng.normal(size=(2, 2, 3)), jnp.float32)
    expected = transforms.affine_grid(theta, 5, 7)
    for flat_or_not in (theta, theta.reshape(2, 6)):
        for size in ((5, 7), ((5, 7),), ((2, 3, 5, 7),), ([2, 1, 5, 7],)):
            np.testing.assert_array_equal(transforms.affine_grid(flat_or_not, *size), expected)
    theta3 = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    expected3 = transforms.affine_grid(theta3, 3, 5, 7, align_corners=True)
    np.testing.assert_array_equal(transforms.affine_grid(theta3.reshape(2, 12), (2, 1, 3, 5, 7),
                                                         align_corners=True), expected3)
    _one_line_error(lambda: transforms.affine_grid(theta, (3, 1, 5, 7)),
                    r"N = 3, but theta holds 2 transforms")
    _one_line_error(lambda: transforms.affine_grid(theta.reshape(2, 6), 3, 5, 7),
                    r"affine3d parameters must be \[B, 3, 4\] or \[B, 12\], got shape \(2, 6\)")
    _one_line_error(lambda: transforms.affine_grid(theta[:, :, :2], 5, 7),
                    r"affine parameters must be \[B, 2, 3\] or \[B, 6\]")
    _one_line_error(lambda: transforms.affine_grid(theta, "5", 7), "grid size must be")
    _one_line_error(lambda: transforms.affine_grid(theta, True, 7), "grid size must be")


# ---------------------------------------------------------------- kernel parameters


NOT_NUMBERS = {  # case: (a kernel built from it, the error)
    "keys_str": (lambda: kernels.Keys("a"), "Keys a must be a real number"),
    "keys_bool": (lambda: kernels.Keys(True), "Keys a must be a real number"),
    "keys_numpy_bool": (lambda: kernels.Keys(np.bool_(False)), "Keys a must be a real number"),
    "keys_none": (lambda: kernels.Keys(None), "Keys a must be a real number"),
    "keys_complex": (lambda: kernels.Keys(0.5j), "Keys a must be a real number"),
    "keys_vector": (lambda: kernels.Keys(jnp.zeros(3)), r"must be a real number \(a scalar\)"),
    "keys_nan": (lambda: kernels.Keys(float("nan")), "Keys a must be a finite number"),
    "sigma_str": (lambda: kernels.Gaussian("0.5"), "Gaussian sigma must be a real number"),
    "sigma_zero": (lambda: kernels.Gaussian(0.0), "Gaussian sigma must be a finite number > 0"),
    "sigma_negative_array": (lambda: kernels.Gaussian(jnp.asarray(-1.0)),
                             "Gaussian sigma must be a finite number > 0"),
    "radius_bool": (lambda: kernels.Gaussian(0.5, True), "Gaussian radius must be a real"),
    "radius_inf": (lambda: kernels.Gaussian(0.5, float("inf")), "Gaussian radius must be a "
                   "finite number"),
    "scale_str": (lambda: kernels.Stretched(kernels.Linear(), "2", 2.0),
                  "Stretched scale must be a real"),
    "max_scale_below_1": (lambda: kernels.Stretched(kernels.Linear(), 1.0, 0.5),
                          "Stretched max_scale must be a finite number >= 1"),
    "base_a_name": (lambda: kernels.Stretched("bilinear", 1.0, 2.0), "Stretched base must be"),
}


@pytest.mark.parametrize("case", list(NOT_NUMBERS))
def test_kernel_parameters_must_be_numbers(case):
    make, match = NOT_NUMBERS[case]
    _one_line_error(make, match)


def test_numpy_and_jax_scalars_are_numbers():
    image = jnp.asarray(np.random.default_rng(1).normal(size=(1, 6, 7, 2)), jnp.float32)
    grid = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, size=(1, 3, 4, 2)), jnp.float32)
    plain = sampling.sample(image, grid, kernel=kernels.Keys(-0.5))
    for a in (np.float32(-0.5), np.float64(-0.5), jnp.asarray(-0.5)):
        np.testing.assert_allclose(sampling.sample(image, grid, kernel=kernels.Keys(a)), plain,
                                   atol=1e-6)
    assert kernels.Gaussian(np.float32(0.6), np.int64(2)).num_taps == 4
    assert kernels.Keys(np.int64(-1)).a == -1


def test_kernels_stay_pytrees_of_any_leaves():
    """JAX rebuilds pytrees with leaves that are not numbers (None, sentinels, tracers): the
    constructor's checks are for users, not for unflattening."""
    keys = kernels.Keys(-0.5)
    assert jax.tree.map(lambda _: None, keys).a is None
    assert jax.tree.structure(keys) == jax.tree.structure(kernels.Keys(0.1))
    distance = jnp.linspace(-2.0, 2.0, 9)
    slope = jax.grad(lambda k: k(distance).sum())(keys)
    assert isinstance(slope, kernels.Keys) and np.isfinite(slope.a)
    values = jax.vmap(lambda a: kernels.Keys(a)(distance))(jnp.asarray([-0.5, -0.75]))
    np.testing.assert_allclose(values[1], kernels.Keys(-0.75)(distance), atol=1e-7)
    assert jax.jit(lambda k: k(distance))(kernels.Gaussian(0.6, 2.0)).shape == (9,)
