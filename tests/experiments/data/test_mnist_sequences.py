"""The mnist_sequences stand-in: layout, labels, determinism, and digits where they belong."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stn.experiments.data import mnist_sequences as ms
from stn.experiments.data.sources import DigitSet


def _digits(n=20, seed=0):
    """Tiny fake base set: digit k is a filled k-dependent block, so ink is easy to find."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 6:22, 8:20] = rng.integers(100, 256, size=(n, 16, 12))
    labels = np.arange(n, dtype=np.int32) % 10
    return images, labels


def _params(length, angle=0.0, scale=1.0, spacing=0.7, centre=(0.0, 0.0)):
    return {"length": jnp.array([length], jnp.int32), "angle": jnp.array([angle]),
            "scale": jnp.array([scale]), "spacing": jnp.array([spacing]),
            "centre": jnp.array([centre], jnp.float32)}


def test_single_digit_identity_placement_copies_the_digit():
    images, _ = _digits()
    digit = images[3].astype(np.float32) / 255
    slots = jnp.zeros((1, 5, 28, 28, 1)).at[0, 0, ..., 0].set(digit)
    canvas = np.asarray(ms.render(slots, _params(1), 64))[0, ..., 0]
    np.testing.assert_allclose(canvas[18:46, 18:46], digit, atol=1e-5)
    assert canvas.sum() == pytest.approx(digit.sum(), rel=1e-5)


def test_two_digits_sit_left_and_right_in_order():
    ones = np.zeros((28, 28), np.float32)
    ones[10:18, 10:18] = 1.0
    slots = jnp.zeros((1, 5, 28, 28, 1)).at[0, 0, ..., 0].set(ones).at[0, 1, ..., 0].set(ones * 0.5)
    canvas = np.asarray(ms.render(slots, _params(2, spacing=1.0), 64))[0, ..., 0]
    # slots at -14 and +14 px from the centre: first digit left (value 1), second right (0.5)
    assert canvas[:, :32].max() == pytest.approx(1.0) and canvas[:, 32:].max() == pytest.approx(0.5)
    # slots 2..4 (past the length) must not be drawn even if they hold ink
    slots = slots.at[0, 4, ..., 0].set(ones * 0.25)
    again = np.asarray(ms.render(slots, _params(2, spacing=1.0), 64))[0, ..., 0]
    np.testing.assert_allclose(again, canvas)


@pytest.mark.slow
@pytest.mark.parametrize("canvas_size", [64, 128])
def test_batch_shapes_labels_and_canvas_edges(canvas_size):
    images, labels = _digits()
    batch = jax.jit(ms.train_batch, static_argnames=("batch_size", "canvas_size", "max_digits"))(
        images, labels, 0, 3, batch_size=256, canvas_size=canvas_size)
    image, label = np.asarray(batch["image"]), np.asarray(batch["label"])
    assert image.shape == (256, canvas_size, canvas_size, 1) and image.dtype == np.float32
    assert label.shape == (256, 5) and label.dtype == np.int32
    assert 0.0 <= image.min() and image.max() <= 1.0
    length = np.sum(label != ms.BLANK, axis=1)
    assert set(length.tolist()) == {1, 2, 3, 4, 5}
    for row, n in zip(label, length):  # digits first, then only blanks
        assert (row[:n] < 10).all() and (row[n:] == ms.BLANK).all()
    # the layout keeps every digit's box on the canvas: the outer 1 px ring is (nearly) black
    ring = np.concatenate([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], axis=1)
    assert ring.max() < 0.05


@pytest.mark.slow
def test_deterministic_from_seed_and_step():
    images, labels = _digits()
    a = ms.train_batch(images, labels, 7, 11, batch_size=8)
    b = ms.train_batch(images, labels, 7, 11, batch_size=8)
    c = ms.train_batch(images, labels, 7, 12, batch_size=8)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(c["image"]))


@pytest.mark.slow
def test_test_set_uses_test_digits_and_is_fixed():
    images, labels = _digits()
    base = DigitSet(images, labels, images[:5], np.array([4, 4, 4, 4, 4], np.int32), "fake")
    first = ms.test_set(base, num_examples=30, chunk=16)
    second = ms.test_set(base, num_examples=30, chunk=16)
    assert first["image"].shape == (30, 64, 64, 1) and first["label"].shape == (30, 5)
    np.testing.assert_array_equal(first["image"], second["image"])
    assert set(np.unique(first["label"])) <= {4, ms.BLANK}


def test_bad_base_images_raise_one_line_error():
    with pytest.raises(ValueError, match="expected base digits"):
        ms.train_batch(np.zeros((4, 32, 32), np.uint8), np.zeros(4, np.int32), 0, 0, batch_size=2)


def _label_prior_entropy(max_digits: int = ms.MAX_DIGITS) -> float:
    """The loss of the best input-blind predictor (nats): the entropy of the length (uniform in
    1..L) plus, at each position k, that of {blank with prob k/L, each digit (1 - k/L)/10}."""
    total = np.log(max_digits)
    for k in range(max_digits):
        blank = k / max_digits
        digit = (1 - blank) / 10
        total += -(blank * np.log(blank) if blank else 0.0) - 10 * digit * np.log(digit)
    return float(total)


@pytest.mark.slow
def test_quick_standin_run_learns_beyond_the_label_prior(tmp_path):
    """`configs/mnist_sequences.py:cnn,quick` on the embedded real digits: its test loss ends
    well under the label prior's entropy (10.87 nats, where a dead net stays) and its sequence
    accuracy beats the best input-blind guess (length 1 and the commonest digit: 1/5 * 1/10)."""
    from configs import mnist_sequences
    from stn.experiments import training
    config = mnist_sequences.get_config("cnn,quick")
    config.train.num_images = 0
    config.data.validation_size = 0  # all 8,000 base digits, as the preset was sized for
    results = training.train_and_evaluate(config, str(tmp_path / "run"))
    prior = _label_prior_entropy()
    assert prior == pytest.approx(10.865, abs=1e-3)
    assert results["test_loss"] < 0.8 * prior
    assert 1.0 - results["test_error"] > 2 * (1 / 5) * (1 / 10)
