"""SVHN multi-digit input on device: random training crops, centre test crops, the tfds set.

`svhn_train_batch(images, labels, seed, step, ...)` makes each training batch on device,
deterministic in `(seed, step)`: epoch-permuted examples with random crops (54 of 64 as in
Goodfellow et al. 2014; 108 of 128). `centre_crops` makes the fixed test crops; `svhn_builder`
and `read_split` read the tfds `svhn_multidigit` set (building it once from the format 1
archives). Batches are `{"image": f32 [B, crop, crop, 3] in [0, 1], "label": int32 [B, 5]}`
(digits, blank 10 after the end).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from stn.experiments.data import arrays, mnist_sequences, pipeline

SVHN_VARIANTS = {"64px": 64, "128px": 128}
_SVHN_CROP_STREAM = 3  # random-stream tag, apart from pipeline's 0..2 and 4


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


def svhn_builder(variant: str, *, data_dir: str | None = None, manual_dir: str | None = None):
    """The prepared `svhn_multidigit/<variant>` builder, building it first if needed.

    `data_dir`: tfds data dir (default `$TFDS_DATA_DIR` or tfds' own); `manual_dir`: a folder
    with the format 1 archives (default: download them).
    """
    import tensorflow_datasets as tfds

    from stn.experiments.data import svhn_multidigit  # registers the builder
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    builder = svhn_multidigit.SvhnMultidigit(config=variant, data_dir=data_dir)
    if not builder.is_prepared():
        manual = os.path.expanduser(manual_dir) if manual_dir else None
        if manual is None:
            from stn.experiments.data.sources import host_reachable
            if not host_reachable("ufldl.stanford.edu", port=80):
                raise ValueError(
                    f"svhn_multidigit/{variant} is not prepared in {builder.data_dir} and "
                    f"ufldl.stanford.edu is unreachable: download train.tar.gz, test.tar.gz (and "
                    f"extra.tar.gz) by hand and set config.data.manual_dir (see docs/reports/svhn.md)")
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder


def read_split(builder, split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
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
