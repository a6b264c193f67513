"""Boxes in normalised coordinates and their IoU (stn.boxes), on hand-made boxes."""
import jax.numpy as jnp
import numpy as np
import pytest

from stn import boxes, sampling, transforms


@pytest.mark.parametrize("a,b,expected", [
    ((0, 0, 2, 2), (0, 0, 2, 2), 1.0),            # identical
    ((0, 0, 1, 1), (2, 2, 3, 3), 0.0),            # disjoint
    ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),            # touching edges only
    ((0, 0, 2, 1), (1, 0, 3, 1), 1.0 / 3.0),      # half of each overlaps: 1 / (2 + 2 - 1)
    ((0, 0, 4, 4), (1, 1, 2, 2), 1.0 / 16.0),     # one inside the other: the area ratio
    ((-1, -1, 0, 0), (-0.5, -0.5, 0.5, 0.5), 0.25 / 1.75),
    ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),            # empty boxes
])
def test_iou_of_hand_made_boxes(a, b, expected):
    value = boxes.iou(jnp.asarray([a], jnp.float32), jnp.asarray([b], jnp.float32))
    assert value.shape == (1,)
    np.testing.assert_allclose(value, [expected], atol=1e-6)
    # symmetric
    np.testing.assert_allclose(boxes.iou(jnp.asarray([b], jnp.float32),
                                         jnp.asarray([a], jnp.float32)), value, atol=1e-7)


@pytest.mark.parametrize("crop,target,expected", [
    ((0, 0, 4, 4), (1, 1, 2, 2), 1.0),            # the whole target, however large the crop
    ((1, 1, 2, 2), (0, 0, 4, 4), 1.0 / 16.0),     # a small crop inside a large target
    ((0, 0, 1, 2), (0, 0, 2, 2), 0.5),            # the left half
    ((3, 3, 4, 4), (0, 0, 2, 2), 0.0),            # disjoint
    ((0, 0, 1, 1), (0, 0, 0, 0), 0.0),            # empty target
])
def test_covered_fraction_of_hand_made_boxes(crop, target, expected):
    value = boxes.covered_fraction(jnp.asarray([crop], jnp.float32),
                                   jnp.asarray([target], jnp.float32))
    np.testing.assert_allclose(value, [expected], atol=1e-6)


def test_pixel_box_and_attention_box_round_trip():
    box = boxes.pixel_box(jnp.asarray([0, 56]), jnp.asarray([28, 10]), 28, 28, 84, 84)
    np.testing.assert_allclose(box[0], [-1, -1 / 3, -1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(box[1], [1 / 3, 2 * 10 / 84 - 1, 1, 2 * 38 / 84 - 1], atol=1e-6)
    params = boxes.box_attention(box)
    np.testing.assert_allclose(params[:, 0], [1 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(boxes.attention_box(params), box, atol=1e-6)
    # a negative scale mirrors the crop but covers the same box
    flipped = params.at[:, 0].multiply(-1.0)
    np.testing.assert_allclose(boxes.attention_box(flipped), box, atol=1e-6)
    # the identity attention covers the whole image
    np.testing.assert_allclose(boxes.attention_box(jnp.asarray([[1.0, 0.0, 0.0]])),
                               [[-1, -1, 1, 1]])


def test_attention_crop_of_a_pixel_box_is_exactly_those_pixels():
    # The sampler agrees with the box convention: cropping the box of pixels [a, a + 28) to a
    # 28x28 output samples exactly those pixel centres.
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.random((2, 84, 84, 1)), jnp.float32)
    left, top = np.array([5, 40]), np.array([17, 56])
    params = boxes.box_attention(boxes.pixel_box(left, top, 28, 28, 84, 84))
    crop = sampling.sample(image, transforms.get("attention").grid(params, 28, 28))
    for i in range(2):
        np.testing.assert_allclose(crop[i], image[i, top[i]:top[i] + 28, left[i]:left[i] + 28],
                                   atol=1e-5)
