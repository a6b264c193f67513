"""stn.warps (pixel-space warps) and the thin-plate spline through arbitrary points: parity with
kornia on committed fixtures (tools/fixtures/kornia_warps.py; torch and kornia are not test
dependencies), the pixel geometry itself, gradients, and one-line errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from stn import sampling, transforms, warps

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "kornia_warps.npz")
IMAGE_SIZE, OUT_SIZE = (17, 23), (9, 14)
ALIGN = [False, True]


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def kornia():
    """The fixture's arrays (float32 values) as float64 NumPy."""
    with np.load(FIXTURE) as data:
        return {key: data[key].astype(np.float64) if data[key].dtype == np.float32 else data[key]
                for key in data.files}


def _close(actual, expected, atol=1e-6):
    """``actual`` against a fixture output stored in float32 (only its first channels)."""
    actual = np.asarray(actual)[..., :expected.shape[-1]]
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0)


def _rng_image(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


# ---------------------------------------------------------------- parity with kornia


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("kernel,padding", [("bilinear", "zeros"), ("bicubic", "reflection"),
                                            ("nearest", "fill")])
def test_warp_affine_matches_kornia(kornia, kernel, padding, align_corners):
    fill = kornia["fill"] if padding == "fill" else None
    out = warps.warp_affine(kornia["image"], kornia["affine"], OUT_SIZE, kernel=kernel,
                            padding=padding, fill_value=fill, align_corners=align_corners)
    assert out.shape == (1, *OUT_SIZE, 2)
    _close(out, kornia[f"warp_affine_{kernel}_{padding}"][int(align_corners)])


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("padding", ["zeros", "fill"])
def test_warp_perspective_matches_kornia(kornia, padding, align_corners):
    fill = kornia["fill"] if padding == "fill" else None
    out = warps.warp_perspective(kornia["image"], kornia["homography"], OUT_SIZE,
                                 padding=padding, fill_value=fill, align_corners=align_corners)
    _close(out, kornia[f"warp_perspective_bilinear_{padding}"][int(align_corners)])


def test_volume_warps_match_kornia(kornia):
    """kornia's 3-D warps normalise corner-aligned whatever the flag: compared at True."""
    volume = kornia["volume"]
    _close(warps.warp_affine(volume, kornia["affine3d"], (4, 5, 6), align_corners=True),
           kornia["warp_affine3d"])
    _close(warps.warp_perspective(volume, kornia["homography3d"], (4, 5, 6), align_corners=True),
           kornia["warp_perspective3d"])
    _close(warps.normalize_matrix(kornia["homography3d"], (5, 6, 7), (4, 5, 6),
                                  align_corners=True), kornia["normalized3d"])


@pytest.mark.parametrize("align_corners", ALIGN)
def test_conversions_match_kornia(kornia, align_corners):
    index = int(align_corners)
    _close(warps.pixel_to_normalized(IMAGE_SIZE, align_corners=align_corners, dtype=jnp.float64),
           kornia["normal_pixel"][index], atol=1e-7)
    _close(warps.normalize_matrix(kornia["homography"], IMAGE_SIZE, OUT_SIZE,
                                  align_corners=align_corners)[0], kornia["normalized"][index])


@pytest.mark.parametrize("align_corners", ALIGN)
def test_crop_and_resize_matches_kornia(kornia, align_corners):
    out = warps.crop_and_resize(kornia["image"], kornia["box"], (7, 10),
                                align_corners=align_corners)
    _close(out, kornia["crop"][int(align_corners)])


@pytest.mark.parametrize("align_corners", ALIGN)
def test_tps_points_grid_matches_kornia(kornia, align_corners):
    grid = transforms.tps_points_grid(kornia["tps_source"], kornia["tps_target"], *IMAGE_SIZE,
                                      align_corners=align_corners)
    out = sampling.sample(jnp.asarray(kornia["image"]), grid, align_corners=align_corners)
    _close(out, kornia["tps"][int(align_corners)])


def test_builders_match_kornia(kornia):
    inputs = jnp.asarray(kornia["builder_inputs"])
    center = inputs[:, :2]
    _close(warps.rotation_matrix(center, inputs[:, 2], inputs[:, 3:5]), kornia["rotation_matrix"])
    _close(warps.shear_matrix(center, inputs[:, 5], inputs[:, 6]), kornia["shear_matrix"])
    _close(warps.translation_matrix(inputs[:, 7:9]), kornia["translation_matrix"])
    _close(warps.invert_affine(kornia["affine"]), kornia["inverted"])


def test_rotation_about_the_centre_is_kornias_rotate(kornia):
    """The issue's example: a 30-degree turn of a 17 x 23 image about its centre."""
    image = jnp.asarray(kornia["image"])
    matrix = warps.rotation_matrix(jnp.asarray([[11.0, 8.0]]), 30.0)
    _close(warps.warp_affine(image, matrix, IMAGE_SIZE), kornia["rotate30"])


# ---------------------------------------------------------------- the pixel geometry


@pytest.mark.parametrize("align_corners", ALIGN)
def test_integer_translation_shifts_pixels(align_corners):
    image = _rng_image((2, 6, 7, 3))
    out = warps.warp_affine(image, warps.translation_matrix(jnp.asarray([[2.0, -1.0]])), (6, 7),
                            align_corners=align_corners, padding="fill", fill_value=9.0)
    expected = np.full((2, 6, 7, 3), 9.0)
    expected[:, :5, 2:] = np.asarray(image)[:, 1:, :5]  # out[y, x] = in[y + 1, x - 2]
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-12)


@pytest.mark.parametrize("padding", ["zeros", "border", "fill", "wrap"])
def test_geometry_does_not_depend_on_align_corners(padding):
    """Both conventions describe the same pixels (only reflection's mirror lines move)."""
    image = _rng_image((1, 8, 11, 2))
    matrix = jnp.asarray([[[0.9, -0.35, 2.2], [0.3, 1.2, -1.4]]])
    fill = 0.5 if padding == "fill" else None
    a, b = (warps.warp_affine(image, matrix, (7, 9), kernel="bicubic", padding=padding,
                              fill_value=fill, align_corners=ac) for ac in ALIGN)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)
    volume = _rng_image((1, 4, 5, 6, 1))
    matrix3 = jnp.asarray([[[0.9, 0.1, 0.0, 0.4], [-0.1, 1.1, 0.1, -0.6], [0.0, 0.2, 0.8, 0.3]]])
    a, b = (warps.warp_affine(volume, matrix3, (3, 4, 5), padding=padding, fill_value=fill,
                              align_corners=ac) for ac in ALIGN)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


def test_volume_translation_at_align_corners_false():
    """3-D pixel geometry at align_corners=False (where kornia has no 3-D reference)."""
    volume = _rng_image((1, 4, 5, 6, 2))
    out = warps.warp_affine(volume, warps.translation_matrix(jnp.asarray([[1.0, 0.0, -1.0]])),
                            (4, 5, 6))
    expected = np.zeros((1, 4, 5, 6, 2))
    expected[:, :3, :, 1:] = np.asarray(volume)[:, 1:, :, :5]  # out[z, y, x] = in[z + 1, y, x - 1]
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-12)


def test_perspective_of_an_affine_homography_is_the_affine_warp():
    image = _rng_image((2, 9, 12, 1))
    matrix = jnp.asarray([[[1.2, 0.1, -1.0], [-0.2, 0.9, 0.5]],
                          [[0.8, 0.0, 1.5], [0.3, 1.1, -2.0]]])
    homography = jnp.concatenate([matrix, jnp.broadcast_to(jnp.asarray([[[0.0, 0.0, 1.0]]]),
                                                           (2, 1, 3))], axis=1)
    np.testing.assert_allclose(
        np.asarray(warps.warp_perspective(image, 3.0 * homography, (5, 8))),  # any multiple
        np.asarray(warps.warp_affine(image, matrix, (5, 8))), atol=1e-12)


@pytest.mark.parametrize("align_corners", ALIGN)
@pytest.mark.parametrize("shape", [(2, 3), (3, 3), (3, 4), (4, 4)])
def test_conversions_round_trip(shape, align_corners):
    rows, columns = shape
    num_axes = columns - 1
    in_size, out_size = [(7, 10), (4, 6, 9)][num_axes - 2], [(5, 12), (3, 7, 5)][num_axes - 2]
    matrix = np.eye(rows, columns)[None] + 0.1 * np.random.default_rng(1).normal(size=(2, rows,
                                                                                         columns))
    if rows == columns:
        matrix[:, -1, -1] = 1.0
    matrix = jnp.asarray(matrix)
    options = dict(align_corners=align_corners)
    np.testing.assert_allclose(warps.denormalize_matrix(
        warps.normalize_matrix(matrix, in_size, out_size, **options), in_size, out_size,
        **options), matrix, atol=1e-12)
    theta = warps.matrix_to_theta(matrix, in_size, out_size, **options)
    assert theta.shape == matrix.shape
    np.testing.assert_allclose(warps.theta_to_matrix(theta, in_size, out_size, **options), matrix,
                               atol=1e-12)


@pytest.mark.parametrize("align_corners", ALIGN)
def test_theta_maps_output_pixels_to_input_pixels(align_corners):
    """``matrix_to_theta`` is the grid's map: output pixel p samples input pixel M^{-1} p."""
    matrix = jnp.asarray([[[1.3, 0.2, -3.0], [-0.4, 0.7, 2.0]]])
    theta = warps.matrix_to_theta(matrix, (11, 13), (6, 8), align_corners=align_corners)
    grid = transforms.affine_grid(theta, 6, 8, align_corners=align_corners)[0]
    pixel_x = sampling.unnormalize(grid[..., 0], 13, align_corners)
    pixel_y = sampling.unnormalize(grid[..., 1], 11, align_corners)
    y, x = np.mgrid[0:6, 0:8]
    inverse = np.linalg.inv(np.vstack([np.asarray(matrix[0]), [0, 0, 1]]))
    expected = np.einsum("ij,jhw->ihw", inverse, np.stack([x, y, np.ones_like(x)]))
    np.testing.assert_allclose(np.asarray(pixel_x), expected[0], atol=1e-12)
    np.testing.assert_allclose(np.asarray(pixel_y), expected[1], atol=1e-12)


def test_rotation_keeps_its_centre_and_inverts():
    center = jnp.asarray([[4.0, 2.5], [-1.0, 7.0]])
    matrix = warps.rotation_matrix(center, jnp.asarray([40.0, -75.0]), jnp.asarray([1.5, 0.5]))
    moved = jnp.einsum("bij,bj->bi", matrix[:, :, :2], center) + matrix[:, :, 2]
    np.testing.assert_allclose(np.asarray(moved), np.asarray(center), atol=1e-12)
    both = transforms.compose_affine(warps.invert_affine(matrix), matrix)
    np.testing.assert_allclose(np.asarray(both), np.broadcast_to(np.eye(2, 3), (2, 2, 3)),
                               atol=1e-12)


@pytest.mark.slow
def test_crop_and_resize_boxes():
    image = _rng_image((2, 9, 12, 2))
    boxes = jnp.asarray([[[1.0, 2.0, 8.5, 6.0], [10.0, 0.0, 3.0, 8.0], [-2.0, -1.0, 13.0, 9.5]],
                         [[0.0, 0.0, 11.0, 8.0], [4.0, 4.0, 4.0, 4.0], [2.5, 1.5, 9.0, 7.0]]])
    many = warps.crop_and_resize(image, boxes, (5, 6))
    assert many.shape == (2, 3, 5, 6, 2)
    for n in range(3):  # one crop per box, the same as boxes one at a time
        np.testing.assert_allclose(np.asarray(many[:, n]),
                                   np.asarray(warps.crop_and_resize(image, boxes[:, n], (5, 6))),
                                   atol=1e-12)
    whole = warps.crop_and_resize(image, jnp.asarray([[0.0, 0.0, 11.0, 8.0]] * 2), (9, 12))
    np.testing.assert_allclose(np.asarray(whole), np.asarray(image), atol=1e-12)
    centre = warps.crop_and_resize(image, jnp.asarray([[2.0, 3.0, 6.0, 5.0]] * 2), (1, 1))
    np.testing.assert_allclose(np.asarray(centre[:, 0, 0]), np.asarray(image[:, 4, 4]), atol=1e-12)
    antialiased = warps.crop_and_resize(image, boxes, (5, 6), antialias=True)
    for n in range(3):  # each crop's footprint from its own grid
        np.testing.assert_allclose(
            np.asarray(antialiased[:, n]),
            np.asarray(warps.crop_and_resize(image, boxes[:, n], (5, 6), antialias=True)),
            atol=1e-12)


# ---------------------------------------------------------------- thin-plate splines


@pytest.mark.parametrize("grid_size", [3, 4])
def test_tps_points_grid_on_the_regular_layout_is_tps_grid(grid_size):
    control = jnp.asarray(transforms.tps_control_points(grid_size))[None]
    noise = np.random.default_rng(2).normal(size=(2, *control.shape[1:]))
    params = control + 0.1 * jnp.asarray(noise)
    np.testing.assert_allclose(
        np.asarray(transforms.tps_points_grid(params, control, 7, 10)),
        np.asarray(transforms.tps_grid(params, 7, 10)), atol=1e-10)


def test_tps_interpolates_and_reproduces_affine_maps():
    rng = np.random.default_rng(3)
    control = jnp.asarray(rng.uniform(-1, 1, size=(2, 6, 2)))
    values = jnp.asarray(rng.uniform(-1, 1, size=(2, 6, 2)))
    np.testing.assert_allclose(np.asarray(transforms.tps_interpolate(control, control, values)),
                               np.asarray(values), atol=1e-10)
    linear, shift = jnp.asarray([[1.2, -0.3], [0.4, 0.9]]), jnp.asarray([[[0.1, -0.2]]])
    points = jnp.asarray(rng.uniform(-1.5, 1.5, size=(2, 20, 2)))
    np.testing.assert_allclose(
        np.asarray(transforms.tps_interpolate(points, control, control @ linear.T + shift)),
        np.asarray(points @ linear.T + shift), atol=1e-10)


@pytest.mark.slow
def test_warp_tps_in_pixels():
    """Pixel-space spline: an affine point map is warp_affine; target points read their
    sources; the result does not depend on align_corners."""
    image = _rng_image((2, 10, 13, 2))
    target = jnp.asarray(np.random.default_rng(4).uniform(0, 12, size=(1, 5, 2)))
    matrix = jnp.asarray([[[1.1, 0.2, -1.5], [-0.15, 0.95, 0.8]]])  # source -> target
    source = jnp.einsum("ij,bkj->bki", warps.invert_affine(matrix)[0, :, :2], target)
    source = source + warps.invert_affine(matrix)[:, None, :, 2]
    np.testing.assert_allclose(np.asarray(warps.warp_tps(image, source, target, (8, 11))),
                               np.asarray(warps.warp_affine(image, matrix, (8, 11))), atol=1e-10)
    target = jnp.asarray([[[2.0, 1.0], [9.0, 2.0], [4.0, 6.0], [10.0, 7.0], [6.0, 4.0]]])
    source = target + jnp.asarray(np.random.default_rng(5).uniform(-1, 1, size=target.shape))
    out = warps.warp_tps(image, source, target, (8, 11), kernel="bicubic")
    for (x, y), (sx, sy) in zip(np.asarray(target[0]).astype(int), np.asarray(source[0])):
        grid = jnp.asarray([[[[(2 * sx + 1) / 13 - 1, (2 * sy + 1) / 10 - 1]]]] * 2)
        expected = sampling.sample(image, grid, kernel="bicubic")[:, 0, 0]
        np.testing.assert_allclose(np.asarray(out[:, y, x]), np.asarray(expected), atol=1e-10)
    other = warps.warp_tps(image, source, target, (8, 11), kernel="bicubic", align_corners=True)
    np.testing.assert_allclose(np.asarray(other), np.asarray(out), atol=1e-10)


# ---------------------------------------------------------------- gradients


@pytest.mark.slow
def test_gradients_of_the_warps():
    image = _rng_image((1, 7, 9, 2))
    matrix = jnp.asarray([[[1.1, 0.2, -0.7], [-0.1, 0.9, 0.4]]])
    check_grads(lambda u, m: warps.warp_affine(u, m, (5, 6), kernel="bicubic"), (image, matrix),
                order=1, modes=["fwd", "rev"], eps=1e-6)
    homography = jnp.asarray([[[1.0, 0.1, 0.3], [-0.05, 0.95, -0.2], [0.01, -0.02, 1.0]]])
    check_grads(lambda u, h: warps.warp_perspective(u, h, (5, 6), kernel="bicubic"),
                (image, homography), order=1, modes=["fwd", "rev"], eps=1e-6)
    boxes = jnp.asarray([[1.3, 0.6, 6.2, 5.1]])
    check_grads(lambda u, b: warps.crop_and_resize(u, b, (4, 3), kernel="bicubic"), (image, boxes),
                order=1, modes=["fwd", "rev"], eps=1e-6)
    target = jnp.asarray([[[1.0, 1.0], [7.0, 1.5], [2.0, 5.0], [6.5, 5.5]]])
    source = target + jnp.asarray([[[0.3, -0.2], [-0.4, 0.1], [0.2, 0.3], [0.1, -0.3]]])
    check_grads(lambda u, s, t: warps.warp_tps(u, s, t, (5, 6), kernel="bicubic"),
                (image, source, target), order=1, modes=["fwd", "rev"], eps=1e-6)
    fill = jnp.asarray([0.3, -1.0])
    check_grads(lambda m, f: warps.warp_affine(image, m, (5, 6), padding="fill", fill_value=f,
                                               kernel="bicubic"), (matrix, fill), order=1,
                modes=["fwd", "rev"], eps=1e-6)


@pytest.mark.slow
def test_gradients_of_the_builders_and_conversions():
    center = jnp.asarray([[3.0, 2.0]])
    check_grads(lambda c, a, s: warps.rotation_matrix(c, a, s),
                (center, jnp.asarray([25.0]), jnp.asarray([[1.2, 0.8]])), order=2,
                modes=["fwd", "rev"])
    check_grads(lambda c, x, y: warps.shear_matrix(c, x, y),
                (center, jnp.asarray([0.2]), jnp.asarray([-0.3])), order=2, modes=["fwd", "rev"])
    matrix = jnp.asarray([[[1.1, 0.2, -0.7], [-0.1, 0.9, 0.4]]])
    check_grads(warps.invert_affine, (matrix,), order=2, modes=["fwd", "rev"])
    check_grads(lambda m: warps.matrix_to_theta(m, (7, 9), (5, 6)), (matrix,), order=2,
                modes=["fwd", "rev"])


@pytest.mark.slow
def test_second_derivatives_of_a_warp_on_the_jnp_path():
    """Bicubic weights are smooth between integer coordinates; a fractional shift keeps every
    point 0.37 pixel or more from them, so finite differences see a smooth function."""
    image = _rng_image((1, 6, 7, 1))
    matrix = warps.translation_matrix(jnp.asarray([[0.37, -0.41]]))
    check_grads(lambda m: warps.warp_affine(image, m, (4, 5), kernel="bicubic", method="jnp"),
                (matrix,), order=2, modes=["fwd", "rev"], eps=1e-5)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("call,message", [
    (lambda: warps.warp_affine(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 3, 3)), (4, 5)),
     r"matrix must be \[B, 2, 3\]"),
    (lambda: warps.warp_affine(jnp.zeros((1, 4, 5, 1)), jnp.zeros((2, 2, 3)), (4, 5)),
     "matrix batch must be 1 or the image's 1"),
    (lambda: warps.warp_affine(jnp.zeros((4, 5, 1)), jnp.zeros((1, 2, 3)), (4, 5)),
     r"image must be \[B, H, W, C\]"),
    (lambda: warps.warp_affine(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 2, 3)), (4, 5, 6)),
     r"out_size must be \(height, width\)"),
    (lambda: warps.warp_affine(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 2, 3)), (4, 0)),
     "out_size must be"),
    (lambda: warps.warp_perspective(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 2, 3)), (4, 5)),
     r"homography must be \[B, 3, 3\]"),
    (lambda: warps.warp_affine(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 2, 3)), (4, 5),
                               fill_value=1.0), "fill_value needs padding='fill'"),
    (lambda: warps.normalize_matrix(jnp.zeros((1, 2, 3)), (4, 5), (4, 5, 6)),
     "in_size and out_size must have the same number of axes"),
    (lambda: warps.normalize_matrix(jnp.zeros((1, 3, 4)), (4, 5), (4, 5)),
     r"matrix must be \[B, 2, 3\] or \[B, 3, 3\] for 2-D sizes"),
    (lambda: warps.matrix_to_theta(jnp.zeros((1, 2, 3), jnp.int32), (4, 5), (4, 5)),
     "matrix must be floating point"),
    (lambda: warps.invert_affine(jnp.zeros((2, 3))), r"matrix must be \[B, 2, 3\] or \[B, 3, 4\]"),
    (lambda: warps.rotation_matrix(jnp.zeros((2,)), 30.0), r"center must be \[B, 2\]"),
    (lambda: warps.rotation_matrix(jnp.zeros((2, 2)), jnp.zeros(3)),
     r"angle must be a number, \[B\]"),
    (lambda: warps.rotation_matrix(jnp.zeros((2, 2)), 1.0, jnp.zeros((2, 3))),
     r"scale must be a number, \[B\] or \[B, 2\]"),
    (lambda: warps.shear_matrix(jnp.zeros((2, 2)), jnp.zeros(4)), "shear_x must be"),
    (lambda: warps.translation_matrix(jnp.zeros((2, 4))), r"translation must be \[B, 2\]"),
    (lambda: warps.crop_and_resize(jnp.zeros((2, 4, 5, 1)), jnp.zeros((3, 4)), (2, 2)),
     r"boxes must be \[B, 4\] or \[B, N, 4\]"),
    (lambda: warps.crop_and_resize(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 4)), (2, 2, 2)),
     r"size must be \(height, width\)"),
    (lambda: warps.crop_and_resize(jnp.zeros((1, 3, 4, 5, 1)), jnp.zeros((1, 4)), (2, 2)),
     r"crop_and_resize needs an image \[B, H, W, C\]"),
    (lambda: warps.warp_tps(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 2, 2)), jnp.zeros((1, 2, 2)),
                            (4, 5)), "source_points and target_points must be"),
    (lambda: warps.warp_tps(jnp.zeros((1, 4, 5, 1)), jnp.zeros((1, 4, 2)), jnp.zeros((1, 5, 2)),
                            (4, 5)), "the same K >= 3"),
    (lambda: transforms.tps_points_grid(jnp.zeros((1, 4, 3)), jnp.zeros((1, 4, 2)), 4, 5),
     r"source must be \[B, K, 2\]"),
    (lambda: transforms.tps_points_grid(jnp.zeros((2, 4, 2)), jnp.zeros((3, 4, 2)), 4, 5),
     "target and source batches must agree"),
    (lambda: transforms.tps_interpolate(jnp.zeros((1, 4, 2)), jnp.zeros((1, 2, 2)),
                                        jnp.zeros((1, 2, 2))), "the same K >= 3"),
])
def test_errors_are_one_line_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
