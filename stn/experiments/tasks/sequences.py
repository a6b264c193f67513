"""Task `sequences`: SVHN multi-digit (paper section 4.2, Table 2) and its offline stand-in.

Config fields read here (configs/svhn.py, configs/mnist_sequences.py):

- `data.name`: `svhn_multidigit` or `mnist_sequences`.
- SVHN: `data.variant` (`64px` / `128px`), `data.crop_size` (random training crops, centre
  crops for validation and test), `data.train_split` (`train+extra` as in the paper),
  `data.test_split`, `data.tfds_data_dir`, `data.manual_dir` (folder with the format 1
  archives), `data.max_train_examples` / `data.max_test_examples` (0 = all).
- Stand-in: `data.source` (base digits for `load_digits`), `data.canvas_size` (64 or 128),
  `data.num_test_examples`, `data.test_seed`.
- Both: `data.validation_size` (training examples held out: SVHN images, or the stand-in's
  base digits, from which as many validation sequences are made; 0 = none),
  `data.validation_seed`; `model.*` for `stn.experiments.models.svhn`; `train.batch_size`.

Labels are `[B, 5]` digits padded with the blank class 10. Loss (Goodfellow et al. 2014,
log P(S | X)): cross-entropy of the length plus each position's cross-entropy (positions past
the end trained towards the blank). Metric: sequence error, an example is right only if the
predicted length and every digit up to the true length are right.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stn.experiments.data import arrays, external, mnist_sequences, pipeline, sources, svhn_input
from stn.experiments.models import svhn
from stn.experiments.tasks import Data, Task, classification

DATA_NAMES = ("svhn_multidigit", "mnist_sequences")


def validate_config(config) -> None:
    """One-line ValueErrors for the model and data fields of a sequence config."""
    if config.model.name not in svhn.MODEL_NAMES:
        raise ValueError(f"config.model.name={config.model.name!r} is unknown for task "
                         f"'sequences'; set it to one of {', '.join(svhn.MODEL_NAMES)}")
    classification.validate_antialias(config)
    name = config.data.get("name", None)
    if name not in DATA_NAMES:
        raise ValueError(f"config.data.name={name!r} is unknown for task 'sequences'; set it to "
                         f"one of {', '.join(DATA_NAMES)}")
    if int(config.data.get("validation_size", 0)) < 0:
        raise ValueError(f"config.data.validation_size={config.data.validation_size} must be "
                         f">= 0 (0: no validation split)")
    if name == "mnist_sequences":
        sources.check_source(config.data.source, field="config.data.source")
        if int(config.data.get("canvas_size", 64)) < 28:
            raise ValueError(f"config.data.canvas_size={config.data.canvas_size} must be at "
                             f"least 28")
        return
    variant = config.data.get("variant", None)
    if variant not in svhn_input.SVHN_VARIANTS:
        raise ValueError(f"config.data.variant={variant!r}; expected one of "
                         f"{', '.join(svhn_input.SVHN_VARIANTS)}")
    crop = int(config.data.get("crop_size", 0))
    if not 0 < crop <= svhn_input.SVHN_VARIANTS[variant]:
        raise ValueError(f"config.data.crop_size={crop} must be in "
                         f"1..{svhn_input.SVHN_VARIANTS[variant]} for the {variant} images")
    manual = config.data.get("manual_dir", "")
    if manual and not os.path.isdir(os.path.expanduser(manual)):
        raise ValueError(f"config.data.manual_dir={manual!r} is not a directory; put the SVHN "
                         f"format 1 archives there (see docs/reports/svhn.md) or leave it empty")


def input_shape(config) -> tuple[int, int, int]:
    """`(H, W, C)` of the images the model sees, without loading any data."""
    if config.data.name == "svhn_multidigit":
        crop = int(config.data.crop_size)
        return (crop, crop, 3)
    canvas = int(config.data.get("canvas_size", 64))
    return (canvas, canvas, 1)


def _load_mnist_sequences(config) -> Data:
    digits = sources.load_digits(config.data.source)
    canvas = int(config.data.get("canvas_size", 64))
    size = int(config.data.get("validation_size", 0))
    digits, held_images, held_labels = pipeline.split_validation(
        digits, size, seed=int(config.data.get("validation_seed", 0)),
        field="config.data.validation_size")
    seed = int(config.data.get("test_seed", 0))
    validation = (mnist_sequences.validation_set(held_images, held_labels, num_examples=size,
                                                 canvas_size=canvas, seed=seed)
                  if size else None)
    test = mnist_sequences.test_set(digits, canvas_size=canvas, seed=seed,
                                    num_examples=int(config.data.get("num_test_examples", 0))
                                    or None)
    batch = functools.partial(mnist_sequences.train_batch, batch_size=int(config.train.batch_size),
                              canvas_size=canvas)
    return Data((digits.train_images, digits.train_labels),
                lambda arrays, seed, step: batch(*arrays, seed, step), validation, test,
                (canvas, canvas, 1))


def _load_svhn(config) -> Data:
    builder = svhn_input.svhn_builder(config.data.variant,
                                      data_dir=config.data.get("tfds_data_dir", "") or None,
                                      manual_dir=config.data.get("manual_dir", "") or None)
    crop = int(config.data.crop_size)
    images, labels = svhn_input.read_split(builder, config.data.get("train_split", "train+extra"),
                                           int(config.data.get("max_train_examples", 0)))
    size = int(config.data.get("validation_size", 0))
    if not 0 <= size < len(images):
        raise ValueError(f"config.data.validation_size={size} must be in 0..{len(images) - 1} "
                         f"(the training examples read)")
    held = np.zeros(len(images), bool)
    held[np.random.default_rng(int(config.data.get("validation_seed", 0))).permutation(
        len(images))[:size]] = True
    validation = ({"image": svhn_input.centre_crops(images[held], crop), "label": labels[held]}
                  if size else None)
    test_images, test_labels = svhn_input.read_split(
        builder, config.data.get("test_split", "test"), int(config.data.get("max_test_examples", 0)))
    batch = functools.partial(svhn_input.svhn_train_batch, batch_size=int(config.train.batch_size),
                              crop_size=crop)
    return Data((images[~held], labels[~held]), lambda arrays, seed, step: batch(*arrays, seed, step),
                validation, {"image": svhn_input.centre_crops(test_images, crop),
                             "label": test_labels}, (crop, crop, 3))


def load_data(config) -> Data:
    """The configured sequence data: SVHN (tfds, built once) or the stand-in."""
    if config.data.name == "mnist_sequences":
        return _load_mnist_sequences(config)
    return _load_svhn(config)


def make_model(config, shape, rngs):
    """The configured CNN / ST-CNN Single / ST-CNN Multi (`stn.experiments.models.svhn`)."""
    return svhn.get_model(config.model, shape, rngs)


def sequence_length(labels: jax.Array) -> jax.Array:
    """Padded labels `[B, L]` -> lengths `[B]` (positions that are not the blank)."""
    return jnp.sum(labels != svhn.BLANK, axis=-1)


def sequence_loss(outputs: dict[str, jax.Array], labels: jax.Array) -> jax.Array:
    """`-log P(length) - sum_i log P(s_i)`, `[B]` (Goodfellow et al. 2014, section 3)."""
    length_loss = optax.softmax_cross_entropy_with_integer_labels(outputs["length"],
                                                                  sequence_length(labels))
    digit_loss = optax.softmax_cross_entropy_with_integer_labels(outputs["digits"], labels)
    return length_loss + jnp.sum(digit_loss, axis=-1)


def predict(outputs: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """`(length [B], digits [B, L])`: the most likely length and digit at every position."""
    return jnp.argmax(outputs["length"], axis=-1), jnp.argmax(outputs["digits"], axis=-1)


def sequence_correct(outputs: dict[str, jax.Array], labels: jax.Array) -> jax.Array:
    """`[B]` bool: the predicted length and every digit before the true length are right."""
    length, digits = predict(outputs)
    true_length = sequence_length(labels)
    in_sequence = jnp.arange(labels.shape[-1])[None, :] < true_length[:, None]
    digits_right = jnp.all((digits == labels) | ~in_sequence, axis=-1)
    return (length == true_length) & digits_right


def loss(outputs: dict[str, jax.Array], batch: dict) -> jax.Array:
    """`sequence_loss` of the batch's labels."""
    return sequence_loss(outputs, batch["label"])


def metrics(outputs: dict[str, jax.Array], batch: dict) -> dict[str, jax.Array]:
    """`error`: sequence error, `[B]`."""
    return {"error": 1.0 - sequence_correct(outputs, batch["label"]).astype(jnp.float32)}


def fit_to_input(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 or float `[N, H, W, C]` -> float32 `[N, *shape]`: larger images centre-cropped (as
    the test crops), smaller ones centred on a black canvas."""
    if images.ndim != 4 or images.shape[-1] != shape[-1]:
        raise ValueError(f"images must be [N, H, W, {shape[-1]}], got shape {images.shape}")
    images = arrays.check_images(images, what="images")
    size = shape[0]
    n, h, w, c = images.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    images = images[:, top:top + size, left:left + size]
    canvas = np.zeros((n, size, size, c), np.float32)
    h, w = images.shape[1:3]
    canvas[:, (size - h) // 2:(size - h) // 2 + h, (size - w) // 2:(size - w) // 2 + w] = images
    return canvas


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test`, `validation`, or `npz:FILE` with `image` `[N, H, W, C]` (uint8, or float in
    [0, 1]) and `label` `[N, 5]` (digits, blank 10 after the end)."""
    if spec == "test":
        return load_data(config).test, spec
    if spec == "validation":
        return load_data(config).require_validation(), spec
    if not spec.startswith("npz:"):
        raise ValueError(f"--data for task 'sequences' must be 'test', 'validation' or "
                         f"'npz:FILE', got {spec!r}")
    loaded = external.load(spec, num_classes=svhn.NUM_DIGIT_CLASSES,
                           label_shape=(svhn.MAX_DIGITS,))
    return {"image": fit_to_input(loaded.images, input_shape(config)),
            "label": loaded.labels}, loaded.tag


TASK = Task(name="sequences", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=loss, metrics=metrics,
            load_eval_set=load_eval_set)
