"""Batches of distorted digits, deterministic in `(seed, step)` and generated on device.

Random streams (all from `jax.random.key(seed)`, split by a stream tag so they never collide):

- example order: epoch `e` visits the training set in the permutation drawn from
  `fold_in(fold_in(key(seed), 0), e)`; step `t` takes the examples `t*B .. t*B + B - 1` of that
  endless sequence of epochs;
- training distortions: `fold_in(fold_in(key(seed), 1), t)`;
- the fixed test set: `fold_in(fold_in(key(seed), 2), chunk)` for chunks of `TEST_CHUNK`
  consecutive test digits (the chunk size is fixed, so the set does not depend on memory);
- the fixed validation set: the same with stream tag 4, on digits carved from the training set
  by `split_validation` (a numpy permutation of a fixed seed).

So a resumed run sees exactly the batches of an uninterrupted one, and the validation and test
sets are the same on every machine and every run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn.experiments.data import distortions as distortions_lib
from stn.experiments.data.sources import DigitSet

_ORDER, _TRAIN_DISTORTION, _TEST_DISTORTION, _VALIDATION_DISTORTION = 0, 1, 2, 4
#: Test digits distorted together (TC cuts its clutter from the other digits of a chunk).
TEST_CHUNK = 500


def _distortion(distortion: str | distortions_lib.Distortion) -> distortions_lib.Distortion:
    if isinstance(distortion, distortions_lib.Distortion):
        return distortion
    return distortions_lib.get(distortion)


def to_float(images: jax.Array) -> jax.Array:
    """uint8 `[B, 28, 28]` (or float in [0, 1]) -> float32 `[B, 28, 28, 1]` in [0, 1]."""
    images = jnp.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def batch_indices(num_examples: int, seed: jax.Array | int, step: jax.Array | int,
                  batch_size: int, *, stream: int = _ORDER) -> jax.Array:
    """int32 `[batch_size]` example indices of step `step` (a per-epoch permutation).

    A batch may straddle two epochs; each epoch is a fresh permutation, so every example is
    seen exactly once per epoch. `stream` tags the permutations (another tag gives another,
    independent order over the same examples, e.g. for a second digit per example).
    """
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples")
    order = jax.random.fold_in(jax.random.key(seed), stream)
    position = jnp.asarray(step, jnp.int32) * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    epoch, within = position // num_examples, position % num_examples
    first = epoch[0]
    permute = lambda e: jax.random.permutation(jax.random.fold_in(order, e), num_examples)  # noqa: E731
    current = permute(first)
    # The next epoch's permutation (an O(N) sort) only for the batches that straddle two epochs.
    following = jax.lax.cond(epoch[-1] > first, lambda: permute(first + 1), lambda: current)
    return jnp.where(epoch == first, current[within], following[within]).astype(jnp.int32)


def train_batch(images: jax.Array, labels: jax.Array, seed: jax.Array | int,
                step: jax.Array | int, *, batch_size: int,
                distortion: str | distortions_lib.Distortion) -> dict[str, jax.Array]:
    """The training batch of `step`: `{"image": f32 [B, S, S, 1], "label": int32 [B]}`.

    Pure and jittable with `batch_size` and `distortion` static; a function of `(seed, step)`
    only. `images` are the training digits (uint8 `[N, 28, 28]`, ideally already on device),
    `labels` int `[N]`.
    """
    distortion = _distortion(distortion)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if images.ndim not in (3, 4) or images.shape[0] != labels.shape[0]:
        raise ValueError(f"train_batch expects images [N, 28, 28] and labels [N], got "
                         f"{images.shape} and {labels.shape}")
    index = batch_indices(images.shape[0], seed, step, batch_size)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _TRAIN_DISTORTION), step)
    return {"image": distortion.apply(to_float(images[index]), key),
            "label": labels[index].astype(jnp.int32)}


def fixed_set(images: np.ndarray, labels: np.ndarray,
              distortion: str | distortions_lib.Distortion, *, seed: int = 0,
              stream: int = _TEST_DISTORTION) -> dict[str, np.ndarray]:
    """Distorts `images` once, deterministically: `{"image": f32 [N, S, S, 1], "label": int32}`.

    Chunks of `TEST_CHUNK` digits get the keys `fold_in(fold_in(key(seed), stream), chunk)`, so
    the set is identical on every machine and every run whatever the memory.
    """
    distortion = _distortion(distortion)
    base = jax.random.fold_in(jax.random.key(seed), stream)
    apply = jax.jit(distortion.apply)
    chunks = []
    for number, start in enumerate(range(0, len(images), TEST_CHUNK)):
        chunk = to_float(images[start:start + TEST_CHUNK])
        chunks.append(np.asarray(apply(chunk, jax.random.fold_in(base, number))))
    size = distortion.canvas_size
    image = np.concatenate(chunks) if chunks else np.zeros((0, size, size, 1), np.float32)
    return {"image": image, "label": np.asarray(labels, np.int32)}


def test_set(digits: DigitSet, distortion: str | distortions_lib.Distortion, *,
             seed: int = 0, limit: int | None = None) -> dict[str, np.ndarray]:
    """The fixed distorted test set of `digits.test_images` (`fixed_set`, test stream).

    `limit` keeps only the first `limit` test digits (same bytes as the start of the full set).
    """
    images, labels = digits.test_images, digits.test_labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return fixed_set(images, labels, distortion, seed=seed, stream=_TEST_DISTORTION)


test_set.__test__ = False  # not a pytest test, despite its name


def validation_set(images: np.ndarray, labels: np.ndarray,
                   distortion: str | distortions_lib.Distortion, *,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """The fixed distorted validation set (`fixed_set` on its own stream, apart from test's)."""
    return fixed_set(images, labels, distortion, seed=seed, stream=_VALIDATION_DISTORTION)


def split_validation(digits: DigitSet, size: int, *, seed: int = 0,
                     field: str = "validation size") -> tuple[DigitSet, np.ndarray, np.ndarray]:
    """Carves `size` training digits out as a validation split.

    Returns `(digits without them, validation images, validation labels)`. The split is a numpy
    `default_rng(seed)` permutation of the training indices (PCG64: the same on every machine);
    both parts keep the training set's order. `size=0` returns the digits unchanged and empty
    validation arrays. `field` names the setting in the one-line error for a bad size.
    """
    count = len(digits.train_images)
    if not 0 <= size < count:
        raise ValueError(f"{field}={size} must be in 0..{count - 1} (the {count} "
                         f"training examples of {digits.name})")
    held_out = np.zeros(count, bool)
    held_out[np.random.default_rng(seed).permutation(count)[:size]] = True
    remaining = digits._replace(train_images=digits.train_images[~held_out],
                                train_labels=digits.train_labels[~held_out])
    return remaining, digits.train_images[held_out], digits.train_labels[held_out]
