"""MNIST addition (paper appendix A.1): two digits, one per channel, labelled by their sum.

Each example is a 2-channel canvas: channel `c` holds one digit distorted on its own (RTS by
default: rotation, scale and a position on the 42x42 canvas, `stn.experiments.data.distortions`), and the
label is the sum of the two digits' classes, one of `NUM_CLASSES` = 19 (0..18).

Random streams, from `jax.random.key(seed)` as in `stn.experiments.data.pipeline` (whose tags 0-4 are
taken):

- the first digit of step `t` follows `pipeline.batch_indices` (tag 0), the second an
  independent permutation of the same digits (tag `SECOND_ORDER`);
- the training distortion of channel `c` at step `t`: `fold_in(fold_in(fold_in(key(seed), 1),
  t), c)`;
- the fixed test (validation) set pairs digit `i` with digit `pairing[i]`, a permutation drawn
  from the third tag of `TEST_STREAMS` (`VALIDATION_STREAMS`); channel 0 is
  `pipeline.fixed_set` of the digits in order, channel 1 of the paired digits, on the first
  and second tags, so the two channels are distorted independently.

So a training batch is a pure function of `(seed, step)`, and the test set is identical on every
machine and every run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn.experiments.data import distortions as distortions_lib
from stn.experiments.data import pipeline
from stn.experiments.data.sources import DigitSet

NUM_CLASSES = 19
CHANNELS = 2
SECOND_ORDER = 10
#: Stream tags of the fixed sets: (first channel, second channel, pairing).
TEST_STREAMS, VALIDATION_STREAMS = (20, 21, 22), (23, 24, 25)
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


def pairing(count: int, seed: int, stream: int = TEST_STREAMS[2]) -> np.ndarray:
    """int `[count]`: the fixed partner of each digit of a fixed set (a permutation)."""
    key = jax.random.fold_in(jax.random.key(seed), stream)
    return np.asarray(jax.random.permutation(key, count))


def fixed_pairs(images: np.ndarray, labels: np.ndarray,
                distortion: str | distortions_lib.Distortion = "rts", *, seed: int = 0,
                streams: tuple[int, int, int] = TEST_STREAMS) -> dict[str, np.ndarray]:
    """A fixed set of pairs, one per digit: `{"image": f32 [N, S, S, 2], "label": int32 [N]}`
    (numpy). Digit `i` is paired with digit `pairing(N, seed, streams[2])[i]`; each channel is
    `pipeline.fixed_set` of its digits, on streams `streams[0]` and `streams[1]`, so the two
    channels are distorted independently."""
    partner = pairing(len(labels), seed, streams[2])
    first = pipeline.fixed_set(images, labels, distortion, seed=seed, stream=streams[0])
    second = pipeline.fixed_set(np.asarray(images)[partner], np.asarray(labels)[partner],
                                distortion, seed=seed, stream=streams[1])
    return {"image": np.concatenate([first["image"], second["image"]], axis=-1),
            "label": (first["label"] + second["label"]).astype(np.int32)}


def test_set(digits: DigitSet, distortion: str | distortions_lib.Distortion = "rts", *,
             seed: int = 0, limit: int | None = None) -> dict[str, np.ndarray]:
    """The fixed test set: `fixed_pairs` of the test digits (the first `limit` when given)."""
    images, labels = digits.test_images, digits.test_labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return fixed_pairs(images, labels, distortion, seed=seed, streams=TEST_STREAMS)


test_set.__test__ = False  # not a pytest test, despite its name


def validation_set(images: np.ndarray, labels: np.ndarray,
                   distortion: str | distortions_lib.Distortion = "rts", *,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """The fixed validation set: `fixed_pairs` of the digits `pipeline.split_validation` held
    out, on streams of their own."""
    return fixed_pairs(images, labels, distortion, seed=seed, streams=VALIDATION_STREAMS)
