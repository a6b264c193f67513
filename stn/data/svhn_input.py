"""Input for the sequence task: SVHN multi-digit (tfds) or the `mnist_sequences` stand-in.

`load(config) -> SequenceData`: the training arrays (kept on the devices), a jittable
`train_batch(images, labels, seed, step)` that makes each batch on device, deterministic in
`(seed, step)`, and the fixed test set (numpy). Batches are
`{"image": f32 [B, H, W, C] in [0, 1], "label": int32 [B, 5]}` (digits, blank 10 after the end).

Config fields (`configs/svhn.py`, `configs/mnist_sequences.py`):

- `data.name`: `svhn_multidigit` or `mnist_sequences`.
- SVHN: `data.variant` (`64px` / `128px`), `data.crop_size` (random training crops, centre
  crops for test: 54 of 64 as in Goodfellow et al. 2014; 108 of 128), `data.train_split`
  (`train+extra` as in the paper), `data.test_split`, `data.tfds_data_dir` (empty: tfds'
  default), `data.manual_dir` (folder with `train.tar.gz`, `test.tar.gz`, `extra.tar.gz`, used
  to build the set the first time), `data.max_train_examples` / `data.max_test_examples`
  (0 = all; for smoke runs).
- Stand-in: `data.source` (a base digit source for `load_digits`: `sample`, `idx:DIR`,
  `tfds:mnist`), `data.canvas_size` (64 or 128), `data.num_test_examples`, `data.test_seed`.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stn.data import arrays, mnist_sequences, pipeline

NAMES = ("svhn_multidigit", "mnist_sequences")
SVHN_VARIANTS = {"64px": 64, "128px": 128}
_SVHN_CROP_STREAM = 3  # random-stream tag, apart from pipeline's 0..2


class SequenceData(NamedTuple):
    """Everything the training loop needs from the data side of the sequence task."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test: dict
    train_batch: Callable  # (images, labels, seed, step) -> batch; batch_size bound, jittable
    input_shape: tuple[int, int, int]


def validate_config(config) -> None:
    """One-line ValueErrors for bad data fields of a sequence config."""
    name = config.data.get("name", None)
    if name not in NAMES:
        raise ValueError(f"config.data.name={name!r} is unknown for task 'sequences'; set it to "
                         f"one of {', '.join(NAMES)}")
    if name == "svhn_multidigit":
        variant = config.data.get("variant", None)
        if variant not in SVHN_VARIANTS:
            raise ValueError(f"config.data.variant={variant!r}; expected one of "
                             f"{', '.join(SVHN_VARIANTS)}")
        crop = int(config.data.get("crop_size", 0))
        if not 0 < crop <= SVHN_VARIANTS[variant]:
            raise ValueError(f"config.data.crop_size={crop} must be in 1..{SVHN_VARIANTS[variant]} "
                             f"for the {variant} images")
        manual = config.data.get("manual_dir", "")
        if manual and not os.path.isdir(os.path.expanduser(manual)):
            raise ValueError(f"config.data.manual_dir={manual!r} is not a directory; put the SVHN "
                             f"format 1 archives there (see docs/svhn.md) or leave it empty")
    else:
        canvas = int(config.data.get("canvas_size", 64))
        if canvas < 28:
            raise ValueError(f"config.data.canvas_size={canvas} must be at least 28")


def input_shape(config) -> tuple[int, int, int]:
    """`(H, W, C)` of the images the model sees, without loading any data."""
    if config.data.name == "svhn_multidigit":
        crop = int(config.data.crop_size)
        return (crop, crop, 3)
    canvas = int(config.data.get("canvas_size", 64))
    return (canvas, canvas, 1)


def load(config) -> SequenceData:
    """Loads the configured sequence data set (see module docstring)."""
    validate_config(config)
    batch_size = int(config.train.batch_size)
    if config.data.name == "mnist_sequences":
        return _load_mnist_sequences(config, batch_size)
    return _load_svhn(config, batch_size)


# ----------------------------------------------------------------------------- stand-in


def _load_mnist_sequences(config, batch_size: int) -> SequenceData:
    from stn.data import sources
    digits = sources.load_digits(config.data.source)
    canvas = int(config.data.get("canvas_size", 64))
    num_test = int(config.data.get("num_test_examples", 0)) or None
    test = mnist_sequences.test_set(digits, canvas_size=canvas, num_examples=num_test,
                                    seed=int(config.data.get("test_seed", 0)))
    make = functools.partial(mnist_sequences.train_batch, batch_size=batch_size,
                             canvas_size=canvas)
    return SequenceData(digits.train_images, digits.train_labels, test, make,
                        (canvas, canvas, 1))


# ----------------------------------------------------------------------------- SVHN


def random_crops(images: jax.Array, key: jax.Array, crop_size: int) -> jax.Array:
    """uint8 `[B, S, S, C]` -> float32 `[B, crop, crop, C]` in [0, 1] at uniform random offsets."""
    batch, size = images.shape[0], images.shape[1]
    offsets = jax.random.randint(key, (batch, 2), 0, size - crop_size + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                     (crop_size, crop_size, image.shape[-1]))

    return jax.vmap(crop)(images, offsets).astype(jnp.float32) / 255.0


def centre_crops(images: np.ndarray, crop_size: int) -> np.ndarray:
    """uint8 `[N, S, S, C]` -> float32 `[N, crop, crop, C]` in [0, 1], the central window."""
    start = (images.shape[1] - crop_size) // 2
    window = images[:, start:start + crop_size, start:start + crop_size]
    return window.astype(np.float32) / 255.0


def svhn_train_batch(images: jax.Array, labels: jax.Array, seed, step, *, batch_size: int,
                     crop_size: int) -> dict:
    """Training batch `step`: epoch-permuted examples (`pipeline.batch_indices`), random crops."""
    index = pipeline.batch_indices(images.shape[0], seed, step, batch_size)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _SVHN_CROP_STREAM), step)
    return {"image": random_crops(images[index], key, crop_size),
            "label": jnp.asarray(labels)[index].astype(jnp.int32)}


def _svhn_builder(config):
    """The prepared `svhn_multidigit/<variant>` builder, building it first if needed."""
    import tensorflow_datasets as tfds

    from stn.data import svhn_multidigit  # registers the builder
    data_dir = config.data.get("tfds_data_dir", "") or os.environ.get("TFDS_DATA_DIR") or None
    builder = svhn_multidigit.SvhnMultidigit(config=config.data.variant, data_dir=data_dir)
    if not builder.is_prepared():
        manual = os.path.expanduser(config.data.get("manual_dir", "") or "") or None
        if manual is None:
            from stn.data.sources import host_reachable
            if not host_reachable("ufldl.stanford.edu", port=80):
                raise ValueError(
                    f"svhn_multidigit/{config.data.variant} is not prepared in "
                    f"{builder.data_dir} and ufldl.stanford.edu is unreachable: download "
                    f"train.tar.gz, test.tar.gz (and extra.tar.gz) by hand and set "
                    f"config.data.manual_dir (see docs/svhn.md)")
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder


def _read_split(builder, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[N, S, S, 3]` and int32 labels `[N, 5]` of a split (`a+b` allowed).

    Refuses (one line) an empty split and labels outside 0..9 and the blank class 10.
    """
    source = builder.as_data_source(split=split)
    n = len(source) if not limit else min(limit, len(source))
    size = builder.builder_config.size
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, 5), np.int64)  # as stored; checked, then int32
    for start in range(0, n, 2048):
        keys = list(range(start, min(n, start + 2048)))
        for k, example in zip(keys, source.__getitems__(keys)):
            images[k] = example["image"]
            labels[k] = example["label"]
    what = f"{builder.name}/{builder.builder_config.name} split {split!r}"
    arrays.check_not_empty(images, what=f"{what} images")
    return images, arrays.check_labels(labels, mnist_sequences.BLANK + 1, what=f"{what} labels",
                                       example_shape=(mnist_sequences.MAX_DIGITS,))


def _load_svhn(config, batch_size: int) -> SequenceData:
    builder = _svhn_builder(config)
    crop = int(config.data.crop_size)
    train_images, train_labels = _read_split(
        builder, config.data.get("train_split", "train+extra"),
        int(config.data.get("max_train_examples", 0)))
    test_images, test_labels = _read_split(builder, config.data.get("test_split", "test"),
                                           int(config.data.get("max_test_examples", 0)))
    test = {"image": centre_crops(test_images, crop), "label": test_labels}
    make = functools.partial(svhn_train_batch, batch_size=batch_size, crop_size=crop)
    return SequenceData(train_images, train_labels, test, make, (crop, crop, 3))
