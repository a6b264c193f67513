"""The paper's distortions (R, RTS, P, E, TC) on synthetic digits the tests draw."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn.experiments.data import distortions as D


def synthetic_digits(n, seed=0):
    """`[n, 28, 28, 1]` float32 'digits': a horizontal and a vertical bar inside the central
    20x20 box (like MNIST), at random places and lengths, so each is asymmetric."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.float32)
    for image in images:
        row, col = rng.integers(5, 22, 2)
        a, b = sorted(rng.integers(4, 24, 2))
        c, d = sorted(rng.integers(4, 24, 2))
        image[row:row + 2, a:b + 2] = 1.0
        image[c:d + 2, col:col + 2] = 0.75
    return jnp.asarray(images[..., None])


CANVAS = {"none": 28, "r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60}


@pytest.mark.parametrize("name", D.NAMES)
def test_shapes_dtypes_ranges(name):
    images = synthetic_digits(8)
    distortion = D.get(name)
    assert distortion.name == name and distortion.canvas_size == CANVAS[name]
    out = jax.jit(distortion.apply)(images, jax.random.key(0))
    assert out.shape == (8, CANVAS[name], CANVAS[name], 1) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.max()) > 0.5  # the digit is still there
    if name == "none":
        np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("name", D.NAMES)
def test_same_key_same_bytes_other_key_other_images(name):
    images = synthetic_digits(8)
    apply = jax.jit(D.get(name).apply)
    a = np.asarray(apply(images, jax.random.key(3)))
    b = np.asarray(apply(images, jax.random.key(3)))
    assert a.tobytes() == b.tobytes()
    if name != "none":
        assert not np.array_equal(a, np.asarray(apply(images, jax.random.key(4))))


def test_case_insensitive_and_unknown_name():
    assert D.get("RTS").canvas_size == 42
    with pytest.raises(ValueError, match="expected one of none, r, rts, p, e, tc"):
        D.get("shear")


def test_wrong_image_shape_is_one_line_error():
    with pytest.raises(ValueError, match=r"\[B, 28, 28, 1\]"):
        D.get("r").apply(jnp.zeros((2, 28, 28)), jax.random.key(0))


# ---------------------------------------------------------------- parameter distributions
def _draw(name, n=4000, seed=0):
    images = synthetic_digits(n, seed)
    return images, jax.jit(D.recipe(name).sample_params)(jax.random.key(seed), images)


def _check_uniform(values, low, high):
    values = np.asarray(values)
    assert values.min() >= low and values.max() <= high
    width = high - low
    assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width
    assert abs(values.mean() - (low + high) / 2) < 0.03 * width
    assert abs(values.std() - width / np.sqrt(12)) < 0.03 * width


def test_r_angle_uniform_90():
    _, params = _draw("r")
    _check_uniform(params["angle"], -90.0, 90.0)


def test_rts_ranges_and_digit_stays_on_canvas():
    images, params = _draw("rts", n=2000)
    _check_uniform(params["angle"], -45.0, 45.0)
    _check_uniform(params["scale"], 0.7, 1.2)
    # The placed ink box lies inside the 42x42 canvas, and positions spread over it.
    extent = D.placed_extent(D.ink_box(images), params["angle"], params["scale"])
    low = np.asarray(extent[:, :2] + params["shift"])
    high = np.asarray(extent[:, 2:] + params["shift"])
    assert low.min() >= -21 - 1e-4 and high.max() <= 21 + 1e-4
    shift = np.asarray(params["shift"])
    assert shift.min() < -10 and shift.max() > 10 and abs(shift.mean()) < 1
    # Nothing of the digit is cut off: the ink mass scales with scale**2.
    out = jax.jit(D.recipe("rts").warp)(images[:200], jax.tree.map(lambda p: p[:200], params))
    ratio = np.asarray(out.sum((1, 2, 3)) / (images[:200].sum((1, 2, 3)) * params["scale"][:200] ** 2))
    assert 0.93 < ratio.min() and ratio.max() < 1.07


@pytest.mark.parametrize("name,key,std,count", [("p", "corner_noise", 5.0, 4),
                                                ("e", "point_noise", 1.5, 16)])
def test_p_and_e_scale_and_gaussian_noise(name, key, std, count):
    _, params = _draw(name)
    _check_uniform(params["scale"], 0.75, 1.0)
    noise = np.asarray(params[key])
    assert noise.shape == (4000, count, 2)
    assert abs(noise.mean()) < 0.05 * std and abs(noise.std() / std - 1) < 0.03
    # Independent across points and axes.
    flat = noise.reshape(4000, -1)
    correlation = np.corrcoef(flat, rowvar=False)
    assert np.abs(correlation - np.eye(flat.shape[1])).max() < 0.1


def test_tc_positions_uniform_and_inside():
    _, params = _draw("tc")
    digit = np.asarray(params["digit_offset"])
    source = np.asarray(params["patch_source"])
    offset = np.asarray(params["patch_offset"])
    assert source.shape == offset.shape == (4000, 6, 2)
    for values, top in [(digit, 32), (source, 22), (offset, 54)]:
        assert values.min() == 0 and values.max() == top  # every position reachable
        assert abs(values.mean() - top / 2) < 0.03 * top


# ---------------------------------------------------------------- the warps match their parameters
def test_rotation_matches_rot90():
    images = synthetic_digits(3, seed=5)
    for angle, turns in [(90.0, 1), (-90.0, -1), (180.0, 2)]:
        out = D.r_warp(images, {"angle": jnp.full((3,), angle)})
        # np.rot90 turns counter-clockwise as displayed (row 0 on top).
        expected = np.rot90(np.asarray(images), k=turns, axes=(1, 2))
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_rts_integer_shift_places_an_exact_copy():
    images = synthetic_digits(2, seed=6)
    params = {"angle": jnp.zeros(2), "scale": jnp.ones(2),
              "shift": jnp.asarray([[5.0, -3.0], [-7.0, 7.0]])}
    out = np.asarray(D.rts_warp(images, params))
    for i, (dx, dy) in enumerate([(5, -3), (-7, 7)]):
        x0, y0 = 7 + dx, 7 + dy
        np.testing.assert_allclose(out[i, y0:y0 + 28, x0:x0 + 28], images[i], atol=1e-6)
        assert abs(out[i].sum() - float(images[i].sum())) < 1e-3


def test_rts_scale_shrinks_about_the_centre():
    images = jnp.zeros((1, 28, 28, 1)).at[0, 4:24, 4:24].set(1.0)  # a 20x20 square
    out = np.asarray(D.rts_warp(images, {"angle": jnp.zeros(1), "scale": jnp.full(1, 0.7),
                                         "shift": jnp.zeros((1, 2))}))[0, ..., 0]
    rows = np.nonzero(out.max(1) > 0.5)[0]
    assert len(rows) == 14 and rows[0] == 14  # 20 * 0.7 = 14 px, centred at 21


def test_p_corner_translation_moves_the_digit():
    images = synthetic_digits(2, seed=7)
    shift = jnp.broadcast_to(jnp.asarray([4.0, -2.0]), (2, 4, 2))
    out = np.asarray(D.p_warp(images, {"scale": jnp.ones(2), "corner_noise": shift}))
    expected = np.zeros_like(out)
    expected[:, :26, 4:] = np.asarray(images)[:, 2:, :24]
    np.testing.assert_allclose(out, expected, atol=1e-4)
    identity = D.p_warp(images, {"scale": jnp.ones(2), "corner_noise": jnp.zeros((2, 4, 2))})
    np.testing.assert_allclose(identity, images, atol=1e-4)


def test_homography_from_points_maps_the_points():
    key = jax.random.key(1)
    target = jnp.asarray([[[-1., -1.], [1., -1.], [-1., 1.], [1., 1.]]]) * 0.8
    target = target + 0.1 * jax.random.normal(key, (1, 4, 2))
    source = jnp.asarray([[[-1., -1.], [1., -1.], [-1., 1.], [1., 1.]]])
    h = np.asarray(D.homography_from_points(target, source))[0]
    for (x, y), (xs, ys) in zip(np.asarray(target[0]), np.asarray(source[0])):
        w = h[6] * x + h[7] * y + 1
        np.testing.assert_allclose([(h[0] * x + h[1] * y + h[2]) / w,
                                    (h[3] * x + h[4] * y + h[5]) / w], [xs, ys], atol=1e-5)


def test_e_uniform_point_shift_moves_the_digit():
    images = synthetic_digits(2, seed=8)
    shift = jnp.broadcast_to(jnp.asarray([-3.0, 5.0]), (2, 16, 2))
    out = np.asarray(D.e_warp(images, {"scale": jnp.ones(2), "point_noise": shift}))
    expected = np.zeros_like(out)
    expected[:, 5:, :25] = np.asarray(images)[:, :23, 3:]
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_e_scale_matches_affine_scaling():
    images = synthetic_digits(2, seed=9)
    scale = jnp.asarray([0.8, 0.95])
    elastic = D.e_warp(images, {"scale": scale, "point_noise": jnp.zeros((2, 16, 2))})
    affine = D.rts_warp(images, {"angle": jnp.zeros(2), "scale": scale,
                                 "shift": jnp.zeros((2, 2))})[:, 7:35, 7:35]
    np.testing.assert_allclose(elastic, affine, atol=1e-4)


# ---------------------------------------------------------------- TC
def test_tc_digit_is_always_fully_inside():
    ones = jnp.ones((512, 28, 28, 1))
    params = D.tc_params(jax.random.key(2), ones)
    digit = np.asarray(jax.jit(D.tc_digit_layer)(ones, params))
    np.testing.assert_allclose(digit.sum((1, 2, 3)), 784.0, atol=1e-3)
    offsets = np.asarray(params["digit_offset"])
    for i in range(0, 512, 37):
        x, y = offsets[i]
        assert digit[i, y:y + 28, x:x + 28].min() > 0.999


@pytest.mark.slow
def test_tc_clutter_is_six_6x6_patches_of_other_digits():
    images = synthetic_digits(9, seed=10)
    params = D.tc_params(jax.random.key(4), images)
    clutter = np.asarray(jax.jit(D.tc_clutter_layer)(images, params))[..., 0]
    # Reference: paste patch j of digit (i + j + 1) mod B, max-combined, in numpy.
    source_images = np.asarray(images)[..., 0]
    source, offset = np.asarray(params["patch_source"]), np.asarray(params["patch_offset"])
    expected = np.zeros((9, 60, 60), np.float32)
    for i in range(9):
        for j in range(6):
            other = source_images[(i + j + 1) % 9]
            (sx, sy), (ox, oy) = source[i, j], offset[i, j]
            patch = other[sy:sy + 6, sx:sx + 6]
            window = expected[i, oy:oy + 6, ox:ox + 6]
            np.maximum(window, patch, out=window)
    np.testing.assert_allclose(clutter, expected, atol=1e-5)
    # With blank-free digits each patch is a full 6x6 square: the clutter is their union.
    ones = jnp.ones((4, 28, 28, 1))
    solid = np.asarray(jax.jit(D.tc_clutter_layer)(ones, D.tc_params(jax.random.key(5), ones)))[..., 0]
    offsets = np.asarray(D.tc_params(jax.random.key(5), ones)["patch_offset"])
    for i in range(4):
        union = np.zeros((60, 60), bool)
        for ox, oy in offsets[i]:
            union[oy:oy + 6, ox:ox + 6] = True
        np.testing.assert_array_equal(solid[i] > 0.5, union)
        assert union.sum() <= 6 * 36
        assert np.all((solid[i] < 1e-5) | (solid[i] > 1 - 1e-5))  # crisp integer pastes


@pytest.mark.slow
def test_tc_is_max_of_digit_and_clutter():
    images = synthetic_digits(7, seed=11)
    key = jax.random.key(6)
    params = D.tc_params(key, images)
    combined = np.maximum(jax.jit(D.tc_digit_layer)(images, params), jax.jit(D.tc_clutter_layer)(images, params))
    np.testing.assert_array_equal(jax.jit(D.get("tc").apply)(images, key), combined)
