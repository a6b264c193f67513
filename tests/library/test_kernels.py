"""Sampling kernels k(d; Phi): torch's numbers, pytree behaviour, the kernels' own properties.

The TORCH_* literals below were generated for these tests with torch 2.13.0 (CPU, float64) by
tools/fixtures/torch_grid_sample.py (torch is not a test dependency): 2-D ``grid_sample`` with
``mode="bicubic"`` and 5-D ``grid_sample`` with ``"bilinear"`` (trilinear) and ``"nearest"``, for
every padding mode and both ``align_corners``, on points inside, on the edge and far outside.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn import kernels, sampling

IMAGE_2D = (np.arange(20.0).reshape(4, 5) ** 1.5) / 10
POINTS_2D = [[-0.93, -0.41], [0.37, 0.88], [1.21, -1.35], [-1.62, 0.55], [0.05, 0.02], [2.7, 3.1]]
TORCH_BICUBIC = {  # (padding, align_corners) -> values at POINTS_2D
    ('zeros', False): [0.355901690312, 6.090672952074, 0.0013689, 0.0, 3.033628548523, 0.0],
    ('zeros', True): [0.974380274536, 7.708529169823, 0.135629213572, -0.468841815163, 3.001351456878, 0.0],
    ('border', False): [0.526294017842, 7.884160775229, 0.8, 4.929547988306, 3.033628548523, 8.281907992727],
    ('border', True): [0.906480360744, 7.032983140685, 0.659438740131, 4.198833848762, 3.001351456878, 8.281907992727],
    ('reflection', False): [0.512329761396, 7.994446698197, 1.067736830903, 5.529843492995, 3.033628548523, -0.167737701033],
    ('reflection', True): [0.871858653931, 7.298065619356, 1.305630768152, 5.036724891313, 3.001351456878, 0.061276290384],
}
VOLUME = (np.arange(60.0).reshape(3, 4, 5) ** 1.5) / 10
POINTS_3D = [[-0.93, -0.41, 0.3], [0.37, 0.88, -0.77], [1.21, -1.35, 0.1], [-1.62, 0.55, 1.4], [0.05, 0.02, -0.01], [0.6, -0.2, -1.3]]
TORCH_5D = {  # (mode, padding, align_corners) -> values at POINTS_3D
    ('bilinear', 'zeros', False): [12.912299461615, 4.745834852388, 0.0, 0.0, 16.133982501751, 0.136475530744],
    ('nearest', 'zeros', False): [12.5, 7.636753236815, 0.0, 0.0, 18.101933598376, 0.0],
    ('bilinear', 'zeros', True): [17.466746023028, 10.497863656427, 3.719367226445, 0.0, 16.138741723451, 1.987749516778],
    ('nearest', 'zeros', True): [12.5, 7.636753236815, 0.0, 0.0, 18.101933598376, 2.262741699797],
    ('bilinear', 'border', False): [19.129332535725, 7.58969271132, 14.371862873824, 38.615590631147, 16.133982501751, 2.729510614888],
    ('nearest', 'border', False): [12.5, 7.636753236815, 11.757550765359, 40.789091679026, 18.101933598376, 2.7],
    ('bilinear', 'border', True): [17.466746023028, 10.497863656427, 13.500425504336, 37.121308660729, 16.138741723451, 2.839642166826],
    ('nearest', 'border', True): [12.5, 7.636753236815, 11.757550765359, 35.355339059327, 18.101933598376, 2.262741699797],
    ('bilinear', 'reflection', False): [19.129332535725, 7.58969271132, 15.16186051761, 37.781830038092, 16.133982501751, 2.729510614888],
    ('nearest', 'reflection', False): [12.5, 7.636753236815, 11.757550765359, 41.906562731868, 18.101933598376, 2.7],
    ('bilinear', 'reflection', True): [17.466746023028, 10.497863656427, 15.260232836827, 30.630843292871, 16.138741723451, 6.729917828109],
    ('nearest', 'reflection', True): [12.5, 7.636753236815, 15.61697794069, 36.421284985569, 18.101933598376, 2.262741699797],
}


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("padding,align_corners", list(TORCH_BICUBIC))
def test_bicubic_matches_torch_including_taps_outside(padding, align_corners):
    image = jnp.asarray(IMAGE_2D)[None, :, :, None]
    grid = jnp.asarray(POINTS_2D)[None, None]
    for kernel in ("bicubic", kernels.Keys(-0.75)):
        out = sampling.sample(image, grid, kernel=kernel, padding=padding,
                              align_corners=align_corners)
        np.testing.assert_allclose(np.asarray(out).ravel(), TORCH_BICUBIC[padding, align_corners],
                                   atol=1e-11)


@pytest.mark.parametrize("mode,padding,align_corners", list(TORCH_5D))
def test_volumes_match_torch_5d_grid_sample(mode, padding, align_corners):
    volume = jnp.asarray(VOLUME)[None, ..., None]
    grid = jnp.asarray(POINTS_3D)[None, None, None]
    out = sampling.sample(volume, grid, kernel=mode, padding=padding, align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(out).ravel(), TORCH_5D[mode, padding, align_corners],
                               atol=1e-11)


def test_names_and_objects():
    assert kernels.get("bicubic") == kernels.Keys(-0.75)
    assert isinstance(kernels.get("bilinear"), kernels.Linear)
    assert isinstance(kernels.get("nearest"), kernels.Nearest)
    gaussian = kernels.Gaussian(0.5, 1.5)
    assert kernels.get(gaussian) is gaussian
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernels.get("lanczos")
    with pytest.raises(ValueError, match="Gaussian radius must be a finite number > 0"):
        kernels.Gaussian(0.5, 0.0)
    with pytest.raises(ValueError, match="Gaussian sigma must be a finite number > 0"):
        kernels.Gaussian(-1.0)


def test_taps_per_kernel():
    assert [kernels.get(n).num_taps for n in kernels.NAMES] == [1, 2, 4]
    assert kernels.Gaussian(0.5, 1.5).num_taps == 4 and kernels.Gaussian(1.0, 3.0).num_taps == 6
    x = jnp.array([-1.5, -0.2, 0.0, 0.49, 0.5, 2.7])
    np.testing.assert_array_equal(kernels.Nearest().first_tap(x), [-1, 0, 0, 0, 1, 3])
    np.testing.assert_array_equal(kernels.Linear().first_tap(x), [-2, -1, 0, 0, 0, 2])
    np.testing.assert_array_equal(kernels.Keys().first_tap(x), [-3, -2, -1, -1, -1, 1])


@pytest.mark.parametrize("kernel", [kernels.Linear(), kernels.Keys(-0.75), kernels.Keys(-0.5),
                                    kernels.Keys(0.3)])
def test_interpolating_kernels_are_a_partition_of_unity(kernel):
    """sum_m k(x - m) = 1 for every x (so a constant image is reproduced, and its grid
    gradient is zero); k(0) = 1 and k(m) = 0 at the other integers (interpolation)."""
    x = jnp.linspace(-3.0, 3.0, 601)
    first = kernel.first_tap(x)
    np.testing.assert_allclose(kernel.tap_weights(x, first).sum(-1), 1.0, atol=1e-14)
    np.testing.assert_allclose(kernel(jnp.arange(-3.0, 4.0)), [0, 0, 0, 1, 0, 0, 0], atol=1e-15)


def test_gaussian_lattice_sum_is_near_one_as_documented():
    x = jnp.linspace(0.0, 1.0, 101)
    for sigma, bound in [(0.5, 0.015), (0.7, 1e-3)]:
        kernel = kernels.Gaussian(sigma, 3 * sigma + 1)
        total = kernel.tap_weights(x, kernel.first_tap(x)).sum(-1)
        assert np.max(np.abs(np.asarray(total) - 1.0)) < bound


def test_one_sided_derivative_at_the_kinks():
    """Pieces on half-open intervals: autodiff takes the piece on the right of a kink."""
    slope = jax.vmap(jax.grad(kernels.Linear()))
    np.testing.assert_array_equal(slope(jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])),
                                  [1.0, 1.0, -1.0, -1.0, 0.0])
    # Keys' kernel is C1: at its knots both sides agree, k'(+-1) = +-a and k'(0) = k'(+-2) = 0.
    keys_slope = jax.vmap(jax.grad(kernels.Keys(-0.5)))
    np.testing.assert_allclose(keys_slope(jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])),
                               [0.0, 0.5, 0.0, -0.5, 0.0], atol=1e-14)


def test_kernels_are_pytrees_with_phi_as_leaves():
    keys = kernels.Keys(0.25)
    assert jax.tree_util.tree_leaves(keys) == [0.25]
    gaussian = kernels.Gaussian(0.8, 2.5)
    assert jax.tree_util.tree_leaves(gaussian) == [0.8]  # the radius is static
    assert gaussian.params() == {"sigma": 0.8} and kernels.Linear().params() == {}
    image = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 6, 1)))
    grid = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, size=(1, 3, 3, 2)))
    traces = []

    @jax.jit
    def sample(kernel):
        traces.append(kernel)  # runs once per trace, not per call
        return sampling.sample(image, grid, kernel=kernel)

    for a in (-0.75, -0.5, 0.1):  # one trace for every value of a
        np.testing.assert_allclose(sample(kernels.Keys(jnp.asarray(a))),
                                   sampling.sample(image, grid, kernel=kernels.Keys(a)),
                                   atol=1e-14)
    assert len(traces) == 1
    d_kernel = jax.grad(lambda k: sampling.sample(image, grid, kernel=k).sum())(
        kernels.Gaussian(jnp.asarray(0.8), 2.5))
    assert isinstance(d_kernel, kernels.Gaussian) and d_kernel.radius == 2.5


def test_kernel_weights_are_differentiable_in_phi():
    d = jnp.linspace(-2.4, 2.4, 13) + 0.013
    check_grads(lambda a: kernels.Keys(a)(d), (jnp.asarray(-0.6),), order=2, modes=("fwd", "rev"))
    check_grads(lambda s: kernels.Gaussian(s, 2.5)(d), (jnp.asarray(0.7),), order=2,
                modes=("fwd", "rev"))
