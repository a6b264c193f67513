"""MNIST addition (paper appendix A.1): two digits, one per channel, labelled by their sum.

Each example is a 2-channel canvas: channel `c` holds one digit distorted on its own (RTS by
default: rotation, scale and a position on the 42x42 canvas, `stn.data.distortions`), and the
label is the sum of the two digits' classes, one of `NUM_CLASSES` = 19 (0..18).

Random streams, from `jax.random.key(seed)` as in `stn.data.pipeline` (whose tags 0-3 are
taken):

- the first digit of step `t` follows `pipeline.batch_indices` (tag 0), the second an
  independent permutation of the same digits (tag `SECOND_ORDER`);
- the training distortion of channel `c` at step `t`: `fold_in(fold_in(fold_in(key(seed), 1),
  t), c)`;
- the fixed test set pairs test digit `i` with test digit `pairing[i]`, a permutation drawn
  from tag `TEST_PAIRING`; channel 0 is `pipeline.test_set` of the digits in order (the Table-1
  test set of that distortion), channel 1 the same function on the paired digits with keys of
  tag `SECOND_TEST`, so the two channels are distorted independently.

So a training batch is a pure function of `(seed, step)`, and the test set is identical on every
machine and every run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn.data import distortions as distortions_lib
from stn.data import pipeline
from stn.data.sources import DigitSet

NUM_CLASSES = 19
CHANNELS = 2
SECOND_ORDER, TEST_PAIRING, SECOND_TEST = 10, 11, 12
_TRAIN_DISTORTION = 1  # the tag of pipeline's training distortions


def train_batch(images: jax.Array, labels: jax.Array, seed: jax.Array | int,
                step: jax.Array | int, *, batch_size: int,
                distortion: str | distortions_lib.Distortion = "rts") -> dict[str, jax.Array]:
    """The training batch of `step`: `{"image": f32 [B, S, S, 2], "label": int32 [B]}`.

    Pure and jittable with `batch_size` and `distortion` static; a function of `(seed, step)`
    only. `images` uint8 `[N, 28, 28]` training digits, `labels` int `[N]`; the label is the
    sum of the two digits' labels.
    """
    distortion = distortions_lib.get(distortion)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"addition.train_batch expects images [N, 28, 28] and labels [N], got "
                         f"{images.shape} and {labels.shape}")
    count = images.shape[0]
    picks = (pipeline.batch_indices(count, seed, step, batch_size),
             pipeline.batch_indices(count, seed, step, batch_size, stream=SECOND_ORDER))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _TRAIN_DISTORTION), step)
    channels = [distortion.apply(pipeline.to_float(images[index]), jax.random.fold_in(key, c))
                for c, index in enumerate(picks)]
    label = labels[picks[0]] + labels[picks[1]]
    return {"image": jnp.concatenate(channels, axis=-1), "label": label.astype(jnp.int32)}


def pairing(count: int, seed: int) -> np.ndarray:
    """int `[count]`: the fixed partner of each test digit (a permutation from `seed`)."""
    key = jax.random.fold_in(jax.random.key(seed), TEST_PAIRING)
    return np.asarray(jax.random.permutation(key, count))


def test_set(digits: DigitSet, distortion: str | distortions_lib.Distortion = "rts", *,
             seed: int = 0, limit: int | None = None) -> dict[str, np.ndarray]:
    """The fixed test set: `{"image": f32 [N, S, S, 2], "label": int32 [N]}` (numpy), one pair
    per test digit of `digits` (the first `limit` of them when given; see the module docstring).

    Give it the `validation` part of `pipeline.split_validation` for the validation set.
    """
    images, labels = digits.test_images, digits.test_labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    partner = pairing(len(labels), seed)
    first = pipeline.test_set(digits._replace(test_images=images, test_labels=labels),
                              distortion, seed=seed)
    second = pipeline.test_set(digits._replace(test_images=images[partner],
                                               test_labels=labels[partner]),
                               distortion, seed=seed, stream=SECOND_TEST)
    return {"image": np.concatenate([first["image"], second["image"]], axis=-1),
            "label": (first["label"] + second["label"]).astype(np.int32)}


test_set.__test__ = False  # not a pytest test, despite its name
