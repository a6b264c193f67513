"""Antialiased sampling: `sample(..., antialias=True)` stretches each point's kernel
by the grid's footprint (stn.sampling, the antialiasing section).

Peers: tests/library/fixtures/antialias_torch.npz holds torch's `interpolate(..., antialias=True,
align_corners=False)` (made once by tools/fixtures/antialias_torch.py; torch is not a test
dependency); PIL's resize of float ("F") images is computed here.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from PIL import Image

from stn import kernels, sampling, transforms

import helpers

FIXTURE = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "antialias_torch.npz"))
SIZES = sorted({tuple(int(n) for n in key.split("_")[1].split("x"))
                for key in FIXTURE.files if key.startswith("bilinear_")})
# torch's and PIL's antialiased bicubic is Keys with a = -0.5 (torch's plain bicubic: -0.75).
PEER_KERNELS = {"bilinear": "bilinear", "bicubic": kernels.Keys(-0.5)}
WIDE_KERNELS = ["bilinear", "bicubic", kernels.Keys(-0.5), kernels.Gaussian(0.6, 2.0)]
WIDE_IDS = ["bilinear", "bicubic", "keys-0.5", "gaussian0.6"]


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


def _resize_grid(*size):
    """The grid of a plain resize to `size` (align_corners=False, float64): pixel centres
    `(2 i + 1) / n - 1`, last axis (x, y[, z])."""
    axes = [(2 * np.arange(n) + 1) / n - 1 for n in size]
    mesh = np.meshgrid(*axes, indexing="ij")
    return jnp.asarray(np.stack(mesh[::-1], axis=-1))[None]


def _antialiased(image, grid, kernel, **kwargs):
    return sampling.sample(image, grid, kernel=kernel, antialias=True, **kwargs)


def _renormalised(image, grid, kernel):
    """torch and PIL drop the taps outside the image and renormalise the rest: with zeros
    padding that is the antialiased sample divided by the antialiased sample of ones."""
    return (_antialiased(image, grid, kernel)
            / _antialiased(jnp.ones_like(image), grid, kernel))


@pytest.mark.parametrize("mode", list(PEER_KERNELS))
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_axis_aligned_resize_matches_torch_antialias(mode, size):
    image = jnp.asarray(FIXTURE["image"])[None, :, :, None]
    out = _renormalised(image, _resize_grid(*size), PEER_KERNELS[mode])
    np.testing.assert_allclose(np.asarray(out[0, :, :, 0]), FIXTURE[f"{mode}_{size[0]}x{size[1]}"],
                               atol=1e-12)


def test_away_from_the_edges_no_renormalising_is_needed():
    """12x10 -> 6x5 (bilinear, factor 2): outputs whose footprint lies in the image equal
    torch's as they are."""
    image = jnp.asarray(FIXTURE["image"])[None, :, :, None]
    out = _antialiased(image, _resize_grid(6, 5), "bilinear")[0, :, :, 0]
    np.testing.assert_allclose(np.asarray(out[1:-1, 1:-1]), FIXTURE["bilinear_6x5"][1:-1, 1:-1],
                               atol=1e-12)
    assert not np.allclose(np.asarray(out[0]), FIXTURE["bilinear_6x5"][0])  # the edge fades


@pytest.mark.slow
def test_volume_resize_matches_torch_per_slice():
    """A volume constant along y, resized in (z, x) as the fixture's image in (y, x) and kept in
    y, gives torch's 2-D result in every y row (the 3-D footprint and taps)."""
    plane = jnp.asarray(FIXTURE["image"])  # read as [D, W]
    volume = jnp.broadcast_to(plane[:, None, :], (12, 3, 10))[None, ..., None]
    for mode, kernel in PEER_KERNELS.items():
        out = _renormalised(volume, _resize_grid(4, 3, 3), kernel)
        for row in range(3):
            np.testing.assert_allclose(np.asarray(out[0, :, row, :, 0]), FIXTURE[f"{mode}_4x3"],
                                       atol=1e-12)


@pytest.mark.parametrize("mode,resample", [("bilinear", Image.BILINEAR),
                                           ("bicubic", Image.BICUBIC)])
@pytest.mark.parametrize("size", [(4, 3), (5, 4), (7, 9), (3, 8)])
def test_axis_aligned_resize_matches_pil(mode, resample, size):
    """PIL's resize of a float image (float32) is the same filter as torch's."""
    image = np.asarray(FIXTURE["image"], np.float32)
    pil = np.asarray(Image.fromarray(image, "F").resize(size[::-1], resample))
    out = _renormalised(jnp.asarray(image, jnp.float64)[None, :, :, None], _resize_grid(*size),
                        PEER_KERNELS[mode])
    np.testing.assert_allclose(np.asarray(out[0, :, :, 0]), pil, atol=1e-6)


def _affine_case(theta, out_size=(7, 8), in_size=(9, 10), channels=2, seed=0):
    image = jnp.asarray(np.random.default_rng(seed).normal(size=(1, *in_size, channels)))
    grid = transforms.affine_grid(jnp.asarray(theta, jnp.float64)[None], *out_size)
    return image, grid.astype(jnp.float64)


def _rotation(degrees, scale_x=1.0, scale_y=None):
    angle = np.deg2rad(degrees)
    scale_y = scale_x if scale_y is None else scale_y
    return [[scale_x * np.cos(angle), -scale_y * np.sin(angle), 0.05],
            [scale_x * np.sin(angle), scale_y * np.cos(angle), -0.1]]


UPSCALE_CASES = [  # (kernel, theta, padding)
    ("bilinear", _rotation(0.0), "zeros"), ("bicubic", _rotation(0.0), "reflection"),
    (kernels.Keys(-0.5), _rotation(0.0), "border"), ("bilinear", _rotation(30.0, 0.6), "zeros"),
    ("bicubic", _rotation(-70.0, 0.8), "border"),
    (kernels.Keys(-0.5), [[0.9, 0.1, 0.2], [-0.05, 0.7, 0.0]], "reflection"),
    # partly outside the image: index padding of the taps = coordinate padding for linear
    ("bilinear", [[0.7, 0.2, 0.6], [-0.2, 0.7, -0.5]], "reflection"),
    ("bilinear", [[0.7, 0.2, 0.6], [-0.2, 0.7, -0.5]], "border")]


@pytest.mark.parametrize("kernel,theta,padding", UPSCALE_CASES,
                         ids=["identity-bilinear-zeros", "identity-bicubic-reflection",
                              "identity-keys-border", "rotate30-zoomin-bilinear-zeros",
                              "rotate-70-zoomin-bicubic-border", "shear-zoomin-keys-reflection",
                              "outside-bilinear-reflection", "outside-bilinear-border"])
@pytest.mark.slow
def test_identity_and_upscaling_equal_plain_sampling(kernel, theta, padding):
    """Footprint <= 1 on every axis: values and gradients are those of plain sampling (the
    interpolating kernels' weights already sum to one)."""
    image, grid = _affine_case(theta, out_size=(9, 10) if theta == _rotation(0.0) else (12, 13))
    plain = lambda u, g: sampling.sample(u, g, kernel=kernel, padding=padding)  # noqa: E731
    wide = lambda u, g: _antialiased(u, g, kernel, padding=padding)  # noqa: E731
    np.testing.assert_allclose(np.asarray(wide(image, grid)), np.asarray(plain(image, grid)),
                               atol=1e-12)
    if theta != _rotation(0.0):  # the identity sits on the kink s = 1, up to rounding
        cotangent = jnp.asarray(np.random.default_rng(3).normal(size=(1, 12, 13, 2)))
        expected = jax.vjp(plain, image, grid)[1](cotangent)
        actual = jax.vjp(wide, image, grid)[1](cotangent)
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=1e-10)


def test_gaussian_is_normalised_even_unstretched():
    """The Gaussian's plain weights sum to about one; antialiased they sum to exactly one, so on
    an upscaling grid it is plain sampling divided by its lattice sum (plain sampling of ones
    with border padding)."""
    gaussian = kernels.Gaussian(0.5, 1.5)
    image, grid = _affine_case(_rotation(20.0, 0.7), out_size=(12, 13))
    ones = jnp.ones_like(image)
    expected = (sampling.sample(image, grid, kernel=gaussian, padding="border")
                / sampling.sample(ones, grid, kernel=gaussian, padding="border"))
    np.testing.assert_allclose(
        np.asarray(_antialiased(image, grid, gaussian, padding="border")), np.asarray(expected),
        atol=1e-12)


@pytest.mark.parametrize("kernel", WIDE_KERNELS, ids=WIDE_IDS)
@pytest.mark.parametrize("num_axes", [2, 3])
def test_constant_image_stays_constant_when_zooming_out(kernel, num_axes):
    """Border padding: every tap reads the constant, and the normalised weights sum to one."""
    if num_axes == 2:
        image, grid = _affine_case(_rotation(35.0, 2.3, 1.6), out_size=(5, 6))
    else:
        image = jnp.ones((1, 8, 9, 10, 1))
        theta = jnp.asarray([[[2.0, 0.3, 0.0, 0.1], [-0.2, 1.5, 0.4, 0.0],
                              [0.0, 0.1, 2.5, -0.2]]])
        grid = transforms.affine_grid(theta, 3, 4, 5)
    out = _antialiased(jnp.full_like(image, 0.7), grid, kernel, padding="border")
    np.testing.assert_allclose(np.asarray(out), 0.7, rtol=1e-12)


def test_footprint_is_the_jacobian_row_norm():
    """An affine grid's Jacobian in input pixels per output pixel is A diag(W/w, H/h) scaled per
    input axis: J = diag(W, H) A diag(1/w, 1/h). Row norms, clipped to [1, max_scale]."""
    theta = np.asarray(_rotation(45.0, 4.0, 1.0))
    width, height, out_w, out_h = 40, 40, 10, 10
    grid = transforms.affine_grid(jnp.asarray(theta)[None], out_h, out_w)
    coords = [sampling.unnormalize(grid[..., 1], height, False),
              sampling.unnormalize(grid[..., 0], width, False)]
    valid = jnp.ones(grid.shape[:-1], bool)
    jacobian = np.diag([width, height]) @ theta[:, :2] @ np.diag([1 / out_w, 1 / out_h])
    rows = np.linalg.norm(jacobian, axis=1)  # (x, y): both sqrt(17/2) * 4 / 4 ... = 11.66
    scales = sampling._antialias_scales(coords, valid, max_scale=100.0)
    np.testing.assert_allclose(np.asarray(scales[1]), rows[0], rtol=1e-9)  # x
    np.testing.assert_allclose(np.asarray(scales[0]), rows[1], rtol=1e-9)  # y
    np.testing.assert_allclose(rows, 4 * np.sqrt(8.5), rtol=1e-9)  # not the column norms 16, 4
    capped = sampling._antialias_scales(coords, valid, max_scale=3.0)
    np.testing.assert_array_equal(np.asarray(capped[0]), 3.0)


def test_antialias_removes_aliasing_of_fine_stripes():
    """Vertical stripes of period 2 pixels read at a spacing of 3 pixels: plain bilinear
    returns stripes of the wrong period with full contrast, the antialiased sampler about the
    mean (+-1/18: a triangle 3 pixels wide does not null period 2 exactly)."""
    stripes = jnp.asarray(np.tile([0.0, 1.0], 24))[None, None, :, None]
    image = jnp.broadcast_to(stripes, (1, 8, 48, 1))
    grid = _resize_grid(8, 16)
    plain = sampling.sample(image, grid)[0, 2:-2, 2:-2, 0]
    wide = _antialiased(image, grid, "bilinear")[0, 2:-2, 2:-2, 0]
    assert float(jnp.ptp(plain)) > 0.9
    np.testing.assert_allclose(np.asarray(wide), 0.5, atol=0.06)


def _zoom_out_case(num_axes, seed=0):
    """A random image and a grid that zooms out about 1.3-2.6x, jittered off every kink."""
    rng = np.random.default_rng(seed)
    if num_axes == 2:
        image = jnp.asarray(rng.normal(size=(1, 14, 15, 2)))
        theta = jnp.asarray([[[0.9, 0.35, 0.05], [-0.3, 0.8, 0.1]]])
        grid = transforms.affine_grid(theta, 8, 6)
    else:
        image = jnp.asarray(rng.normal(size=(1, 9, 8, 10, 1)))
        theta = jnp.asarray([[[0.9, 0.2, 0.0, 0.05], [-0.1, 0.8, 0.2, 0.0],
                              [0.1, 0.0, 0.85, -0.1]]])
        grid = transforms.affine_grid(theta, 4, 3, 5)
    grid = grid + 0.02 * jnp.asarray(rng.normal(size=grid.shape))
    return image, grid


GRAD_CASES = [(2, "bilinear", "zeros"), (2, "bicubic", "reflection"),
              (2, kernels.Keys(-0.5), "border"), (2, kernels.Gaussian(0.6, 2.0), "zeros"),
              (3, "bilinear", "border"), (3, "bicubic", "zeros")]


@pytest.mark.parametrize("num_axes,kernel,padding", GRAD_CASES,
                         ids=["2d-bilinear-zeros", "2d-bicubic-reflection", "2d-keys-border",
                              "2d-gaussian-zeros", "3d-bilinear-border", "3d-bicubic-zeros"])
@pytest.mark.slow
def test_check_grads_image_and_grid_through_the_footprint(num_axes, kernel, padding):
    image, grid = _zoom_out_case(num_axes)
    fn = lambda u, g: _antialiased(u, g, kernel, padding=padding, max_scale=3.0)  # noqa: E731
    scales = sampling._antialias_scales(
        [sampling.unnormalize(grid[..., num_axes - 1 - a], s, False)
         for a, s in enumerate(image.shape[1:-1])], jnp.ones(grid.shape[:-1], bool), 3.0)
    assert all(1.2 < float(s.min()) and float(s.max()) < 3.0 for s in scales)  # all stretched
    check_grads(jax.jit(fn), (image, grid), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_the_footprint_passes_a_gradient_to_the_grid():
    """Without the footprint's term the grid gradient would be wrong: compare with the one that
    holds the scales fixed."""
    image, grid = _zoom_out_case(2)
    loss = lambda g: jnp.sum(_antialiased(image, g, "bilinear") ** 2)  # noqa: E731
    full = jax.grad(loss)(grid)
    held = jax.grad(lambda g: jnp.sum(sampling.sample(
        image, g, kernel=_held_stretch(grid, image), padding="zeros") ** 2))(grid)
    assert float(jnp.abs(full - held).max()) > 1e-3


def _held_stretch(grid, image):
    """Per-axis `Stretched` kernels with the footprint of `grid` as constants (x, y order)."""
    sizes = image.shape[1:-1]
    coords = [sampling.unnormalize(grid[..., 1 - a], s, False) for a, s in enumerate(sizes)]
    max_scale = sampling.default_max_scale(sizes, grid.shape[1:-1])
    scales = sampling._antialias_scales(coords, jnp.ones(grid.shape[:-1], bool), max_scale)
    return tuple(kernels.Stretched(kernels.Linear(), jax.lax.stop_gradient(s), max_scale)
                 for s in scales[::-1])


def test_held_stretch_reproduces_the_values():
    image, grid = _zoom_out_case(2)
    np.testing.assert_allclose(
        np.asarray(sampling.sample(image, grid, kernel=_held_stretch(grid, image))),
        np.asarray(_antialiased(image, grid, "bilinear")), atol=1e-12)


@pytest.mark.parametrize("num_axes,make_kernel", [(2, kernels.Keys),
                                                  (3, lambda a: kernels.Gaussian(a, 2.0))],
                         ids=["2d-keys_a", "3d-gaussian_sigma"])
@pytest.mark.slow
def test_check_grads_kernel_parameters(make_kernel, num_axes):
    image, grid = _zoom_out_case(num_axes, seed=1)
    fn = lambda u, g, p: _antialiased(u, g, make_kernel(p), padding="border")  # noqa: E731
    check_grads(jax.jit(fn), (image, grid, jnp.asarray(0.7)), order=1, modes=("fwd", "rev"),
                eps=1e-6)


@pytest.mark.parametrize("kernel", WIDE_KERNELS, ids=WIDE_IDS)
def test_gather_and_window_paths_agree(kernel):
    image, grid = _zoom_out_case(2)
    cotangent = jnp.asarray(np.random.default_rng(2).normal(size=(1, 8, 6, 2)))
    results = []
    for method in ("gather", "window"):
        fn = lambda u, g: sampling._sample(u, g, kernel=kernel, padding="reflection",  # noqa
                                           align_corners=False, method=method,  # noqa: B023
                                           antialias=True)
        out, vjp = jax.vjp(fn, image, grid)
        results.append((out, *vjp(cotangent)))
    for a, b in zip(*results):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-11)


@pytest.mark.slow
def test_non_finite_points_sample_zero_and_neighbours_use_one_sided_differences():
    """NaN and inf points give 0 and no gradient; their neighbours' footprint comes from the
    valid side, which on an affine grid is the same, so every other value is unchanged."""
    image, grid = _affine_case(_rotation(25.0, 2.2), out_size=(6, 7))
    bad = grid.at[0, 2, 3].set(jnp.nan).at[0, 4, 0, 1].set(jnp.inf)
    loss_of = lambda g: _antialiased(image, g, "bicubic")  # noqa: E731
    clean, dirty = loss_of(grid), loss_of(bad)
    mask = np.ones((6, 7), bool)
    mask[2, 3] = mask[4, 0] = False
    np.testing.assert_allclose(np.asarray(dirty[0][mask]), np.asarray(clean[0][mask]),
                               atol=1e-10)
    np.testing.assert_array_equal(np.asarray(dirty[0][~mask]), 0.0)
    d_image, d_grid = jax.grad(lambda u, g: jnp.sum(_antialiased(u, g, "bicubic") ** 2),
                               argnums=(0, 1))(image, bad)
    assert np.all(np.isfinite(d_image)) and np.all(np.isfinite(d_grid))
    np.testing.assert_array_equal(np.asarray(d_grid[0][~mask]), 0.0)


def test_huge_points_widen_their_neighbours_to_max_scale_without_nan():
    image, grid = _affine_case(_rotation(0.0, 1.5), out_size=(5, 6))
    grid = grid.at[0, 2, 2, 0].set(3e38)
    out, vjp = jax.vjp(lambda u, g: _antialiased(u, g, "bilinear", max_scale=2.5), image, grid)
    d_image, d_grid = vjp(jnp.ones_like(out))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(d_image))
    assert np.all(np.isfinite(d_grid))


def test_single_point_and_size_one_axes_sample_as_plain():
    """No neighbour, no footprint: a 1x1 grid samples as without antialiasing."""
    image, _ = _affine_case(_rotation(0.0))
    point = jnp.asarray([[[[0.13, -0.4]]]])
    np.testing.assert_allclose(np.asarray(_antialiased(image, point, "bicubic")),
                               np.asarray(sampling.sample(image, point, kernel="bicubic")),
                               atol=1e-12)


def test_integer_images_and_unbatched_inputs():
    """Integer images take the gather path: the float result cast back, as plain sampling."""
    image, grid = _zoom_out_case(2)
    integers = (image[0] * 50).astype(jnp.int32)
    as_int = _antialiased(integers, grid[0], "bilinear")
    as_float = _antialiased(integers.astype(jnp.float64), grid[0], "bilinear")
    assert as_int.dtype == jnp.int32 and as_int.shape == (8, 6, 2)
    np.testing.assert_array_equal(np.asarray(as_int), np.asarray(as_float).astype(np.int32))


def test_bad_arguments_raise_one_line_errors():
    image, grid = _zoom_out_case(2)
    with pytest.raises(ValueError, match="nearest has none to stretch"):
        _antialiased(image, grid, "nearest")
    with pytest.raises(ValueError, match="nearest has none to stretch"):
        _antialiased(image, grid, ("bilinear", "nearest"))
    with pytest.raises(ValueError, match="max_scale must be a number >= 1"):
        _antialiased(image, grid, "bilinear", max_scale=0.5)
    with pytest.raises(ValueError, match="max_scale must be a number >= 1"):
        _antialiased(image, grid, "bilinear", max_scale=float("inf"))
    with pytest.raises(ValueError, match=r"max_scale must be a number >= 1 .*got True"):
        _antialiased(image, grid, "bilinear", max_scale=True)  # not read as 1
    np.testing.assert_array_equal(  # numpy's numbers are numbers
        np.asarray(_antialiased(image, grid, "bilinear", max_scale=np.float32(3))),
        np.asarray(_antialiased(image, grid, "bilinear", max_scale=3.0)))


# ------------------------------------------------------------- the transformer and the configs


@pytest.mark.slow
def test_spatial_transformer_samples_antialiased():
    from flax import nnx

    from stn import layers
    with jax.enable_x64(False):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 20, 20, 1)), jnp.float32)
        t = transforms.get("attention")
        loc = layers.FullyConnectedLocNet(x.shape[1:], t.identity(), hidden=(4,),
                                          rngs=nnx.Rngs(0))
        theta = jnp.array([0.9, 0.05, -0.1])  # 20 px of input read into 8: spacing 2.25
        loc.regression.bias.value = theta
        st = layers.SpatialTransformer(loc, "attention", 8, antialias=True)
        plain = layers.SpatialTransformer(loc, "attention", 8)
        grid = t.grid(jnp.tile(theta, (2, 1)), 8, 8)
        np.testing.assert_allclose(st(x), sampling.sample(x, grid, antialias=True), atol=1e-6)
        assert float(jnp.abs(st(x) - plain(x)).max()) > 1e-2
        assert np.allclose(st.warp(x, jnp.tile(theta, (2, 1))), st(x), atol=1e-6)
        with pytest.raises(ValueError, match="nearest has none"):
            layers.SpatialTransformer(loc, "attention", 8, kernel="nearest", antialias=True)


def _config(name, arg):
    import importlib.util
    path = os.path.join(helpers.ROOT, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("name,arg,task", [
    ("mnist", "rts,st_cnn,affine", "classification"), ("mnist_addition", "2xst_cnn", "addition"),
    ("colocalisation", "tc", "colocalisation"), ("svhn", None, "sequences"),
    ("mnist_sequences", None, "sequences")])
def test_configs_have_antialias_off_and_the_checks_accept_it(name, arg, task):
    from stn.experiments import tasks
    config = _config(name, arg)
    assert config.model.antialias is False
    checked = tasks.get(task).validate_config
    if task != "sequences":  # the sequence checks also look for data on disk
        checked(config)
        config.model.antialias = True
        checked(config)
    with pytest.raises(ValueError, match="config.model.antialias=true needs a kernel"):
        config.model.antialias = True
        config.model.kernel = "nearest"
        checked(config)


def test_every_st_model_builder_passes_antialias_on():
    """The builders the configs reach: MNIST, addition, SVHN / MNIST sequences, co-localisation."""
    from flax import nnx

    from stn.experiments.models import addition, colocalisation, mnist, svhn
    with jax.enable_x64(False):  # shapes only: nothing is initialised
        built = nnx.eval_shape(lambda: [
            mnist.get_model({"name": "st_cnn", "antialias": True}, 42, nnx.Rngs(0)).transformer,
            *addition.create("2xst_cnn", (42, 42, 2), antialias=True,
                             rngs=nnx.Rngs(0)).transformers.transformers,
            *svhn.get_model({"name": "st_cnn_single", "antialias": True}, (54, 54, 3),
                            nnx.Rngs(0)).transformers,
            colocalisation.CoLocaliser((84, 84, 1), mnist.CNN((42, 42, 1), rngs=nnx.Rngs(0)),
                                       antialias=True, rngs=nnx.Rngs(0)).transformer,
        ])
        plain = nnx.eval_shape(lambda: mnist.get_model({"name": "st_cnn"}, 42, nnx.Rngs(0)))
    assert len(built) == 5 and all(t.antialias for t in built)
    assert not plain.transformer.antialias
