"""Co-localisation data (paper appendix A.2): one digit class on an 84x84 canvas, with its box.

Each image is a 28x28 digit pasted at a uniformly random integer position fully inside a black
84x84 canvas (T); with clutter (TC) also `CLUTTER_PATCHES` = 16 patches of 6x6 cut at random
places from random digits of a clutter pool (the training digits, all classes), pasted at random
places and max-combined. The digit's true box (its 28x28 cell, in normalised coordinates,
`stn.boxes`) is kept beside the image; it is for evaluation only, never for training.

A co-localisation data set holds one digit class (`class_digits`). Every set is fixed: made in
chunks of `pipeline.TEST_CHUNK` images with keys `fold_in(fold_in(key(seed), stream), chunk)`,
so the same on every machine and every run. The training batches draw images from the fixed
training set in `pipeline.batch_indices` order, and beside each a random position
(`random_positions`, key `fold_in(fold_in(key(seed), RANDOM_PATCH), step)`) where the model
cuts the triplet loss's random patch `I_n^rand`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn import boxes
from stn.experiments.data import pipeline
from stn.experiments.data.sources import DigitSet

CANVAS = 84
DIGIT = 28
CLUTTER_PATCHES = 16
PATCH = 6
#: Stream tags of the fixed sets and of the training batches' random patches.
TRAIN, VALIDATION, TEST, RANDOM_PATCH = 0, 1, 2, 3


def class_digits(digits: DigitSet, digit_class: int) -> DigitSet:
    """`digits` restricted to one class in both splits (order kept)."""
    if not 0 <= int(digit_class) <= 9:
        raise ValueError(f"digit class {digit_class} must be in 0..9")
    train, test = digits.train_labels == digit_class, digits.test_labels == digit_class
    return digits._replace(train_images=digits.train_images[train],
                           train_labels=digits.train_labels[train],
                           test_images=digits.test_images[test],
                           test_labels=digits.test_labels[test],
                           name=f"{digits.name}/class{int(digit_class)}")


def _paste(canvas: jax.Array, patch: jax.Array, left: jax.Array, top: jax.Array) -> jax.Array:
    """Max-combines `patch` [h, w] into `canvas` [H, W] with its top-left pixel at (left, top)."""
    layer = jax.lax.dynamic_update_slice(jnp.zeros_like(canvas), patch, (top, left))
    return jnp.maximum(canvas, layer)


def compose(digits: jax.Array, pool: jax.Array, key: jax.Array, *,
            clutter: int) -> tuple[jax.Array, jax.Array]:
    """Places float `[B, 28, 28]` digits on 84x84 canvases -> (f32 `[B, 84, 84, 1]`, `[B, 4]`).

    Draws (all uniform, integer): the digit's top-left corner in [0, 56]^2; for each of the
    `clutter` patches a source digit of `pool` (float `[M, 28, 28]`), a 6x6 window inside it
    (top-left in [0, 22]^2) and a place on the canvas (top-left in [0, 78]^2). The second
    output is the digit's box (`stn.boxes`).
    """
    batch = digits.shape[0]
    k_digit, k_source, k_window, k_place = jax.random.split(key, 4)
    corner = jax.random.randint(k_digit, (batch, 2), 0, CANVAS - DIGIT + 1)
    source = jax.random.randint(k_source, (batch, clutter), 0, max(pool.shape[0], 1))
    window = jax.random.randint(k_window, (batch, clutter, 2), 0, DIGIT - PATCH + 1)
    place = jax.random.randint(k_place, (batch, clutter, 2), 0, CANVAS - PATCH + 1)

    blank = jnp.zeros((CANVAS, CANVAS), jnp.float32)

    def cut_and_paste(source, window, place):  # one clutter patch alone on a blank canvas
        patch = jax.lax.dynamic_slice(pool[source], (window[1], window[0]), (PATCH, PATCH))
        return _paste(blank, patch, place[0], place[1])

    def one(digit, corner, source, window, place):
        canvas = _paste(blank, digit, corner[0], corner[1])
        if clutter:
            canvas = jnp.maximum(canvas, jax.vmap(cut_and_paste)(source, window, place).max(0))
        return canvas

    images = jax.vmap(one)(digits, corner, source, window, place)[..., None]
    box = boxes.pixel_box(corner[:, 0], corner[:, 1], DIGIT, DIGIT, CANVAS, CANVAS)
    return images, box


def random_positions(key: jax.Array, batch: int) -> jax.Array:
    """`[B, 2]` uniform in [-1, 1]^2: where each random patch lies, as a fraction of the room
    its size leaves (`stn.experiments.models.colocalisation.random_patch_params`)."""
    return jax.random.uniform(key, (batch, 2), jnp.float32, -1.0, 1.0)


def fixed_set(images: np.ndarray, pool: np.ndarray, *, clutter: int, seed: int,
              stream: int) -> dict[str, np.ndarray]:
    """A fixed set from uint8 `[N, 28, 28]` digits: `{"image": f32 [N, 84, 84, 1], "box":
    f32 [N, 4], "rand_pos": f32 [N, 2]}` (numpy), made in chunks of `pipeline.TEST_CHUNK` with
    keys from `(seed, stream, chunk)`; `pool` uint8 `[M, 28, 28]` gives the clutter."""
    if clutter and len(pool) == 0:
        raise ValueError("co-localisation clutter needs a non-empty pool of digits")
    base = jax.random.fold_in(jax.random.key(seed), stream)
    pool = pipeline.to_float(pool)[..., 0]
    make = jax.jit(lambda d, k: compose(d, pool, k, clutter=clutter))
    parts = {"image": [], "box": [], "rand_pos": []}
    for number, start in enumerate(range(0, len(images), pipeline.TEST_CHUNK)):
        chunk = pipeline.to_float(images[start:start + pipeline.TEST_CHUNK])[..., 0]
        key_place, key_patch = jax.random.split(jax.random.fold_in(base, number))
        image, box = make(chunk, key_place)
        parts["image"].append(np.asarray(image))
        parts["box"].append(np.asarray(box))
        parts["rand_pos"].append(np.asarray(random_positions(key_patch, len(chunk))))
    empty = {"image": (0, CANVAS, CANVAS, 1), "box": (0, 4), "rand_pos": (0, 2)}
    return {k: np.concatenate(v) if v else np.zeros(empty[k], np.float32)
            for k, v in parts.items()}


def train_batch(images: jax.Array, true_boxes: jax.Array, seed: jax.Array | int,
                step: jax.Array | int, *, batch_size: int) -> dict[str, jax.Array]:
    """The training batch of `step` from the fixed training set (`fixed_set`'s `image` and
    `box`): `{"image": [B, 84, 84, 1], "box": [B, 4], "rand_pos": [B, 2]}`; pure and jittable
    with `batch_size` static, a function of `(seed, step)` only."""
    index = pipeline.batch_indices(images.shape[0], seed, step, batch_size)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), RANDOM_PATCH), step)
    return {"image": jnp.asarray(images)[index], "box": jnp.asarray(true_boxes)[index],
            "rand_pos": random_positions(key, batch_size)}


def datasets(digits: DigitSet, *, digit_class: int, num_train: int, validation_size: int,
             validation_seed: int = 0, clutter: int,
             seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The fixed `train`, `validation` and `test` sets of one class (`fixed_set`, keys from
    `seed`).

    `validation_size` digits of all classes are first held out of the training digits
    (`pipeline.split_validation`, `validation_seed`); `train` is made from the first `num_train`
    remaining training digits of `digit_class` (the paper optimises on 100 images),
    `validation` from the held-out digits of that class, `test` from its test digits. The
    clutter of every set is cut from the remaining training digits, all classes.
    """
    train_digits, held_images, held_labels = pipeline.split_validation(
        digits, validation_size, seed=validation_seed, field="co-localisation validation_size")
    ours = class_digits(train_digits, digit_class)
    if not 0 < num_train <= len(ours.train_labels):
        raise ValueError(f"co-localisation num_train={num_train} must be in [1, "
                         f"{len(ours.train_labels)}] (training digits of class {digit_class})")
    pool = train_digits.train_images
    sources = {"train": ours.train_images[:num_train],
               "validation": held_images[held_labels == digit_class],
               "test": ours.test_images}
    streams = {"train": TRAIN, "validation": VALIDATION, "test": TEST}
    return {name: fixed_set(images, pool, clutter=clutter, seed=seed, stream=streams[name])
            for name, images in sources.items()}
