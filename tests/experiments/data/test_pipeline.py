"""Deterministic training batches and the fixed test set, on synthetic digits."""
import hashlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn.experiments.data import pipeline
from stn.experiments.data.sources import DigitSet


def synthetic_uint8(n, seed=0):
    """uint8 `[n, 28, 28]` digits: two bars at random places inside the central 20x20 box."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for image in images:
        row, col = rng.integers(5, 22, 2)
        a, b = sorted(rng.integers(4, 24, 2))
        image[row:row + 2, a:b + 2] = 255
        image[a:b + 2, col:col + 2] = 180
    return images


def _batch_fn(batch_size, distortion):
    return jax.jit(partial(pipeline.train_batch, batch_size=batch_size, distortion=distortion))


def test_batch_shapes_and_image_label_pairing():
    images = synthetic_uint8(40)
    labels = np.arange(40, dtype=np.int32)  # label = index, to check the pairing
    batch = _batch_fn(8, "none")(images, labels, 0, 3)
    assert batch["image"].shape == (8, 28, 28, 1) and batch["image"].dtype == jnp.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == jnp.int32
    np.testing.assert_array_equal(batch["image"][..., 0] * 255.0,
                                  images[np.asarray(batch["label"])].astype(np.float32))


@pytest.mark.parametrize("num,batch_size", [(50, 10), (23, 10)])
def test_each_epoch_visits_every_example_once(num, batch_size):
    labels = np.arange(num, dtype=np.int32)
    fn = _batch_fn(batch_size, "none")
    images = synthetic_uint8(num)
    lcm = np.lcm(num, batch_size)  # whole batches covering whole epochs, at least two
    steps = lcm // batch_size * (2 if lcm == num else 1)
    seen = np.concatenate([np.asarray(fn(images, labels, 1, s)["label"]) for s in range(steps)])
    epochs = seen.reshape(-1, num)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), labels)
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh permutation per epoch


@pytest.mark.slow
def test_batches_are_a_function_of_seed_and_step():
    images, labels = synthetic_uint8(64), np.arange(64, dtype=np.int32) % 10
    fn = _batch_fn(16, "rts")
    a = fn(images, labels, 7, 11)
    b = fn(jnp.asarray(images), jnp.asarray(labels), jnp.int32(7), jnp.int32(11))
    assert np.asarray(a["image"]).tobytes() == np.asarray(b["image"]).tobytes()
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(a["image"], fn(images, labels, 7, 12)["image"])
    assert not np.array_equal(a["image"], fn(images, labels, 8, 11)["image"])
    # Steps within one epoch take different examples too.
    assert set(np.asarray(_batch_fn(16, "none")(images, np.arange(64), 7, 0)["label"])).isdisjoint(
        np.asarray(_batch_fn(16, "none")(images, np.arange(64), 7, 1)["label"]))


def test_distortion_canvas_and_bad_inputs():
    images, labels = synthetic_uint8(32), np.zeros(32, np.int32)
    assert _batch_fn(4, "tc")(images, labels, 0, 0)["image"].shape == (4, 60, 60, 1)
    with pytest.raises(ValueError, match="batch_size 64 exceeds the 32"):
        pipeline.train_batch(images, labels, 0, 0, batch_size=64, distortion="r")
    with pytest.raises(ValueError, match="labels"):
        pipeline.train_batch(images, labels[:5], 0, 0, batch_size=4, distortion="r")


def _digits(n_test):
    test = synthetic_uint8(n_test, seed=3)
    return DigitSet(synthetic_uint8(4, seed=2), np.zeros(4, np.int32), test,
                    (np.arange(n_test) % 10).astype(np.int32), "synthetic")


@pytest.mark.slow
def test_test_set_is_fixed_and_chunked(monkeypatch):
    monkeypatch.setattr(pipeline, "TEST_CHUNK", 64)
    digits = _digits(150)  # 3 chunks, the last one partial
    full = pipeline.test_set(digits, "rts")
    assert full["image"].shape == (150, 42, 42, 1) and full["image"].dtype == np.float32
    np.testing.assert_array_equal(full["label"], digits.test_labels)
    again = pipeline.test_set(digits, "rts")
    assert full["image"].tobytes() == again["image"].tobytes()
    prefix = pipeline.test_set(digits, "rts", limit=70)
    np.testing.assert_array_equal(prefix["image"], full["image"][:70])
    other_seed = pipeline.test_set(digits, "rts", seed=1, limit=70)
    assert not np.array_equal(other_seed["image"], prefix["image"])
    # Different chunks get different keys: the same digit distorts differently.
    same = DigitSet(None, None, np.repeat(digits.test_images[:1], 128, 0),
                    np.zeros(128, np.int32), "same")
    chunks = pipeline.test_set(same, "r")["image"]
    assert not np.array_equal(chunks[0], chunks[64])


# Stored hashes of uint8-rounded slices of the fixed test set of `_digits(600)` (two chunks of
# 500 with the default TEST_CHUNK). Threefry keys are platform-independent and the rounding
# absorbs float round-off, so these hold on any machine; a change means the test set changed.
EXPECTED_SHA256 = {
    "tc": "1ed053406cc4a210f1d03bef1f0737b13441e7a03b4b56153676c3a826b96af2",
    "rts": "c3a7a87970ee25ab9b465afbc52b64b17ce4a73885a5ba95937c38889e264c31",
    "e": "26ded17775aa455029fbc297ebc50583ce8b43218dc8170397234b89f0104fa9",
}


def slice_hash(images):
    quantised = np.round(np.asarray(images)[::37] * 255.0).astype(np.uint8)
    return hashlib.sha256(quantised.tobytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_SHA256))
def test_test_set_bytes_match_stored_hash(name):
    assert pipeline.TEST_CHUNK == 500
    images = pipeline.test_set(_digits(600), name)["image"]
    assert slice_hash(images) == EXPECTED_SHA256[name]


def _labelled_digits(n_train, n_test=20):
    """Synthetic digits whose label is their training index (to trace the split)."""
    return DigitSet(synthetic_uint8(n_train), np.arange(n_train, dtype=np.int32),
                    synthetic_uint8(n_test, seed=1), np.zeros(n_test, np.int32), "synthetic")


def test_validation_split_is_disjoint_fixed_and_distorted_apart_from_test():
    digits = _labelled_digits(300)
    rest, images, labels = pipeline.split_validation(digits, 50, seed=0)
    assert len(labels) == 50 and len(rest.train_labels) == 250
    assert not set(labels) & set(rest.train_labels)  # disjoint from train
    assert set(labels) | set(rest.train_labels) == set(range(300))
    np.testing.assert_array_equal(images, digits.train_images[labels])  # pairs kept
    # Fixed across runs and machines: a stored hash of the chosen indices (numpy PCG64).
    assert hashlib.sha256(np.asarray(labels, np.int64).tobytes()).hexdigest()[:16] == \
        VALIDATION_INDEX_SHA256
    again = pipeline.split_validation(digits, 50, seed=0)[2]
    np.testing.assert_array_equal(again, labels)
    assert not np.array_equal(pipeline.split_validation(digits, 50, seed=1)[2], labels)
    # Distorted on its own stream: the same digits as test digits would get other warps.
    validation = pipeline.validation_set(images, labels, "rts")
    as_test = pipeline.fixed_set(images, labels, "rts", stream=2)
    assert validation["image"].shape == (50, 42, 42, 1)
    assert not np.allclose(validation["image"], as_test["image"])
    with pytest.raises(ValueError, match="validation size=300 must be in 0..299"):
        pipeline.split_validation(digits, 300)
    unchanged, none, _ = pipeline.split_validation(digits, 0)
    assert len(none) == 0 and len(unchanged.train_images) == 300


VALIDATION_INDEX_SHA256 = "775570b03485cb0c"
