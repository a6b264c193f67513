"""MNIST addition: data (stn.experiments.data.addition) and models (stn.experiments.models.addition), on synthetic digits."""
import hashlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import layers, transforms
from stn.experiments.data import addition, pipeline
from stn.experiments.data.sources import DigitSet
from stn.experiments.models import addition as models


def synthetic_digits(n, seed=0):
    """uint8 `[n, 28, 28]` 'digits' (two bars inside the central 20x20 box) and labels 0..9."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for image in images:
        row, col = rng.integers(5, 22, 2)
        a, b = sorted(rng.integers(4, 24, 2))
        image[row:row + 2, a:b + 2] = 255
        image[a:b + 2, col:col + 2] = 180
    return images, rng.integers(0, 10, n).astype(np.int32)


def digit_set(n_train=300, n_test=120):
    train, train_labels = synthetic_digits(n_train, 0)
    test, test_labels = synthetic_digits(n_test, 1)
    return DigitSet(train, train_labels, test, test_labels, "synthetic")


def batch_fn(batch_size, distortion="rts"):
    return jax.jit(partial(addition.train_batch, batch_size=batch_size, distortion=distortion))


# ----------------------------------------------------------------------------- data
def test_batch_shapes_and_range():
    digits = digit_set()
    batch = batch_fn(16)(digits.train_images, digits.train_labels, 0, 0)
    assert batch["image"].shape == (16, 42, 42, 2) and batch["image"].dtype == jnp.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == jnp.int32
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert 0 <= int(batch["label"].min()) and int(batch["label"].max()) <= 18


def test_each_channel_holds_its_digit_and_the_label_is_the_sum():
    # With no distortion channel c is exactly the digit that stream c picked.
    digits = digit_set()
    seed, step, size = 3, 7, 32
    batch = batch_fn(size, "none")(digits.train_images, digits.train_labels, seed, step)
    first = np.asarray(pipeline.batch_indices(300, seed, step, size))
    second = np.asarray(pipeline.batch_indices(300, seed, step, size,
                                               stream=addition.SECOND_ORDER))
    assert not np.array_equal(first, second)
    for channel, index in enumerate((first, second)):
        np.testing.assert_array_equal(batch["image"][..., channel],
                                      digits.train_images[index] / np.float32(255.0))
    np.testing.assert_array_equal(batch["label"],
                                  digits.train_labels[first] + digits.train_labels[second])


@pytest.mark.slow
def test_rts_keeps_each_digit_whole_on_its_canvas():
    # No ink is cut off: each channel's ink mass is its source digit's times scale^2, with the
    # scale in [0.7, 1.2] (bilinear resampling changes the mass by a few percent at most).
    digits = digit_set()
    batch = batch_fn(64)(digits.train_images, digits.train_labels, 0, 2)
    picks = (pipeline.batch_indices(300, 0, 2, 64),
             pipeline.batch_indices(300, 0, 2, 64, stream=addition.SECOND_ORDER))
    for channel, index in enumerate(picks):
        source = digits.train_images[np.asarray(index)].sum((1, 2)) / 255.0
        ratio = np.asarray(batch["image"][..., channel].sum((1, 2))) / source
        assert ratio.min() > 0.7 ** 2 * 0.93 and ratio.max() < 1.2 ** 2 * 1.07


def test_channels_are_distorted_independently():
    # The same digit in both channels (a set of identical digits) comes out differently.
    images = np.repeat(synthetic_digits(1)[0], 40, axis=0)
    batch = batch_fn(8)(images, np.zeros(40, np.int32), 0, 0)
    for i in range(8):
        assert not np.allclose(batch["image"][i, ..., 0], batch["image"][i, ..., 1])


def test_batches_are_a_function_of_seed_and_step():
    digits = digit_set()
    make = batch_fn(8)
    a = make(digits.train_images, digits.train_labels, 1, 5)
    b = make(digits.train_images, digits.train_labels, 1, 5)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    c = make(digits.train_images, digits.train_labels, 1, 6)
    d = make(digits.train_images, digits.train_labels, 2, 5)
    assert not np.allclose(a["image"], c["image"]) and not np.allclose(a["image"], d["image"])


def test_bad_images_are_a_one_line_error():
    with pytest.raises(ValueError, match="addition.train_batch expects"):
        addition.train_batch(np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int32), 0, 0,
                             batch_size=2)


@pytest.mark.slow
def test_test_set_pairs_digits_with_independent_channels():
    digits = digit_set()
    test = addition.test_set(digits, "rts", seed=0)
    assert test["image"].shape == (120, 42, 42, 2) and test["label"].dtype == np.int32
    partner = addition.pairing(120, 0)
    assert sorted(partner) == list(range(120))
    np.testing.assert_array_equal(test["label"],
                                  digits.test_labels + digits.test_labels[partner])
    first, second, _ = addition.TEST_STREAMS
    np.testing.assert_array_equal(test["image"][..., :1], pipeline.fixed_set(
        digits.test_images, digits.test_labels, "rts", seed=0, stream=first)["image"])
    np.testing.assert_array_equal(test["image"][..., 1:], pipeline.fixed_set(
        digits.test_images[partner], digits.test_labels[partner], "rts", seed=0,
        stream=second)["image"])
    again = addition.test_set(digits, "rts", seed=0)
    np.testing.assert_array_equal(test["image"], again["image"])
    head = addition.test_set(digits, "rts", seed=0, limit=50)
    np.testing.assert_array_equal(head["label"],
                                  (digits.test_labels[:50]
                                   + digits.test_labels[:50][addition.pairing(50, 0)]))


# A stored hash of the uint8-rounded test set of `digit_set()` (like the Table-1 test sets in
# test_data_pipeline.py): threefry keys are platform-independent and the rounding absorbs float
# round-off, so it holds on any machine; a change means the test set changed.
EXPECTED_TEST_SHA256 = "d4dc10beba9089446c005265f3dba0ffcf773a3e780f7d9c947bd3f1dbf97d7e"


def test_test_set_bytes_match_stored_hash():
    test = addition.test_set(digit_set(), "rts", seed=0)
    quantised = np.round(test["image"][::7] * 255.0).astype(np.uint8)
    digest = hashlib.sha256(quantised.tobytes() + test["label"].tobytes()).hexdigest()
    assert digest == EXPECTED_TEST_SHA256


def test_validation_set_is_fixed_disjoint_and_distorted_like_the_test_set():
    digits = digit_set()
    train, images, labels = pipeline.split_validation(digits, 50, seed=0)
    assert len(train.train_labels) == 250 and len(labels) == 50
    rows = {bytes(x) for x in train.train_images}
    assert not any(bytes(x) in rows for x in images)
    valid = addition.validation_set(images, labels, "rts", seed=0)
    assert valid["image"].shape == (50, 42, 42, 2)
    np.testing.assert_array_equal(valid["image"],
                                  addition.validation_set(images, labels, "rts", seed=0)["image"])
    # the same digits as a test set get other distortions and partners (own streams)
    as_test = addition.fixed_pairs(images, labels, "rts", seed=0)
    assert not np.allclose(as_test["image"], valid["image"])


# ----------------------------------------------------------------------------- models
@pytest.mark.slow
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_output_shapes_and_grids(name):
    model = models.create(name, (42, 42, 2), st_output_size=30, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random((3, 42, 42, 2)), jnp.float32)
    assert model(x).shape == (3, 19)
    count = models.transformer_count(name)
    grids = model.transformer_grids(x)
    assert len(grids) == count and all(g.shape == (3, 30, 30, 2) for g in grids)
    assert len(layers.localisation_paths(model)) == count


@pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
def test_two_transformers_start_at_the_identity_with_independent_parameters(transform):
    model = models.create("2xst_fcn", (42, 42, 2), transform=transform, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).random((2, 42, 42, 2)), jnp.float32)
    first, second = model.transformers.transformers
    identity = transforms.get(transform).identity()
    for t in (first, second):
        np.testing.assert_allclose(t.loc_net(x), jnp.tile(identity, (2, 1)), atol=1e-6)
    # At the identity both outputs are the input: 4 channels = the 2 input channels twice.
    out = model.transformers(x)
    np.testing.assert_allclose(out, jnp.concatenate([x, x], axis=-1), atol=1e-5)
    # Independent parameters: different hidden weights, and updating one leaves the other.
    w1 = first.loc_net.hidden.layers[0].kernel.get_value()
    w2 = second.loc_net.hidden.layers[0].kernel.get_value()
    assert w1.shape == w2.shape and not np.allclose(w1, w2)
    first.loc_net.regression.bias.set_value(first.loc_net.regression.bias.get_value() + 0.1)
    np.testing.assert_allclose(second.loc_net(x), jnp.tile(identity, (2, 1)), atol=1e-6)


def test_equal_area_output_keeps_the_fcn_classifier_size():
    assert models.equal_area_output_size(42, 1) == 42
    assert models.equal_area_output_size(42, 2) == 30  # 30 * 30 * 4 = 3600 ~ 42 * 42 * 2 = 3528


def test_unknown_model_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown addition model"):
        models.create("3st_fcn", (42, 42, 2), rngs=nnx.Rngs(0))
