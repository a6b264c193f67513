"""Task `cub`: fine-grained birds, CUB-200-2011 (paper section 4.3, Table 3), and its CPU stand-in.

Config fields read here (configs/cub.py): `data.source` (`dir:PATH`, `tfds:caltech_birds2011`,
`synthetic`, `clutter:SOURCE`), `data.num_classes`, `data.store_size`, `data.image_size`,
`data.flip`, `data.validation_size`, `data.validation_seed`, `data.synthetic.*`,
`data.clutter.*`; `model.*` (`stn.models.cub.get_model`), `model.weights` (a timm
safetensors file loaded into every backbone, "" to start from scratch); `train.batch_size`.
"""
from __future__ import annotations

import functools
import os
import tempfile

import numpy as np
from flax import nnx
from PIL import Image

from stn.backbones import inception_v3
from stn.data import cub as cub_data
from stn.data import pipeline, sources
from stn.models import cub as cub_models
from stn.tasks import Data, Task, classification

SOURCE_FORMS = "'dir:PATH', 'tfds:caltech_birds2011', 'synthetic' or 'clutter:SOURCE'"


def validate_config(config) -> None:
    """One-line ValueErrors for the data and model fields, before any data is read."""
    d, m = config.data, config.model
    source = d.source
    if not (source.startswith(("dir:", "tfds:", "clutter:")) or source == "synthetic"):
        raise ValueError(f"config.data.source={source!r} is unknown; use {SOURCE_FORMS}")
    if source.startswith("clutter:"):
        sources.check_source(source[len("clutter:"):], field="config.data.source (clutter:)")
    if m.name not in cub_models.MODEL_NAMES:
        raise ValueError(f"config.model.name={m.name!r} is unknown; set it to one of "
                         f"{', '.join(cub_models.MODEL_NAMES)}")
    if m.last_block not in inception_v3.TRUNCATIONS:
        raise ValueError(f"config.model.last_block={m.last_block!r} is unknown; set it to one of "
                         f"{', '.join(inception_v3.TRUNCATIONS)}")
    if not 0 < int(d.image_size) <= int(d.store_size):
        raise ValueError(f"config.data.image_size={d.image_size} must be in 1..data.store_size "
                         f"({d.store_size})")
    if m.name == "st" and int(m.num_transformers) < 1:
        raise ValueError(f"config.model.num_transformers={m.num_transformers} must be >= 1")
    if m.get("weights") and not os.path.isfile(m.weights):
        raise ValueError(f"config.model.weights={m.weights!r} is not a file (timm's "
                         f"inception_v3.tv_in1k model.safetensors, or '' for no weights)")
    if int(d.get("validation_size", 0)) < 0:
        raise ValueError(f"config.data.validation_size={d.validation_size} must be >= 0")
    try:  # shapes only: a backbone too deep for its input fails here
        nnx.eval_shape(lambda: cub_models.get_model(m, int(d.num_classes), nnx.Rngs(0))(
            np.zeros((1,) + input_shape(config), np.float32)))
    except (ValueError, TypeError) as e:
        raise ValueError(f"config.model ({m.name}, last_block={m.last_block}, image "
                         f"{d.image_size}, crop {m.get('crop_size')}, loc {m.get('loc_size')}) "
                         f"does not fit: {str(e).splitlines()[0]}") from None


def input_shape(config) -> tuple[int, int, int]:
    """`(S, S, 3)`: the training crop's size."""
    size = int(config.data.image_size)
    return (size, size, 3)


def _synthetic_root(config) -> str:
    """The folder of the synthetic miniature: `data.synthetic.dir`, or one under the system's
    temp folder named by its settings (written once, reused)."""
    s = config.data.synthetic
    if s.get("dir"):
        return s.dir
    name = f"stn_cub_synthetic_c{s.num_classes}_tr{s.train_per_class}_te{s.test_per_class}_s{s.seed}"
    return os.path.join(tempfile.gettempdir(), name)


def load_images(config) -> sources.DigitSet:
    """The stored uint8 `[N, S, S, 3]` train / test images and labels of `data.source`."""
    d = config.data
    store = int(d.store_size)
    if d.source == "synthetic":
        root = _synthetic_root(config)
        if not os.path.isfile(os.path.join(root, cub_data.INDEX_FILES[-1])):
            s = d.synthetic
            cub_data.write_miniature(root, num_classes=int(s.num_classes),
                                     train_per_class=int(s.train_per_class),
                                     test_per_class=int(s.test_per_class), seed=int(s.seed))
        images = cub_data.load_dir(root, store)
    elif d.source.startswith("dir:"):
        images = cub_data.load_dir(d.source[len("dir:"):], store)
    elif d.source.startswith("tfds:"):
        images = cub_data.load_tfds(d.source[len("tfds:"):], store)
    else:
        images = _cluttered(config)
    top = max(int(images.train_labels.max()), int(images.test_labels.max()))
    if top >= int(d.num_classes):
        raise ValueError(f"{images.name} has labels up to {top}; config.data.num_classes="
                         f"{d.num_classes} is too small")
    return images


def _cluttered(config) -> sources.DigitSet:
    """The CPU stand-in: items of `clutter:SOURCE` on cluttered `clutter.canvas` canvases,
    stored at `store_size` (resized when smaller: the CNN row's lower-resolution view)."""
    c = config.data.clutter
    items = sources.load_digits(config.data.source[len("clutter:"):])
    make = functools.partial(cub_data.cluttered_objects, canvas=int(c.canvas),
                             scale_range=(float(c.scale_min), float(c.scale_max)),
                             clutter=int(c.pieces))
    store = int(config.data.store_size)

    def stored(images, labels, seed):
        canvases, labels = make(images, labels, seed=seed)
        if store != canvases.shape[1]:
            canvases = np.stack([np.asarray(Image.fromarray(x).resize((store, store),
                                                                      Image.BILINEAR))
                                 for x in canvases])
        return canvases, labels

    train_n, test_n = int(c.train_limit) or None, int(c.test_limit) or None
    train = stored(items.train_images[:train_n], items.train_labels[:train_n], int(c.seed))
    test = stored(items.test_images[:test_n], items.test_labels[:test_n], int(c.seed) + 1)
    return sources.DigitSet(*train, *test, f"clutter:{items.name}")


def load_data(config) -> Data:
    """Training images (minus the validation split) with their batch maker, and the fixed
    validation and test sets (centre crops)."""
    d = config.data
    images = load_images(config)
    size = int(d.get("validation_size", 0))
    images, held_images, held_labels = pipeline.split_validation(
        images, size, seed=int(d.get("validation_seed", 0)), field="config.data.validation_size")
    crop = int(d.image_size)
    batch = functools.partial(cub_data.train_batch, batch_size=int(config.train.batch_size),
                              size=crop, flip=bool(d.get("flip", True)))
    validation = ({"image": cub_data.centre_crop(held_images, crop), "label": held_labels}
                  if size else None)
    return Data(train_arrays=(images.train_images, images.train_labels),
                train_batch=lambda arrays, seed, step: batch(*arrays, seed, step),
                validation=validation,
                test={"image": cub_data.centre_crop(images.test_images, crop),
                      "label": images.test_labels},
                input_shape=input_shape(config))


def make_model(config, shape, rngs):
    """The configured CNN / N x ST-CNN (`stn.models.cub`), with `model.weights` loaded into
    every backbone when set."""
    del shape
    model = cub_models.get_model(config.model, int(config.data.num_classes), rngs)
    if config.model.get("weights"):
        from safetensors.numpy import load_file

        path = config.model.weights
        cub_models.load_backbone_weights(model, load_file(path), what=path)
    return model


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test` or `validation` (external sets: use another `data.source`)."""
    if spec == "test":
        images = load_images(config)
        crop = int(config.data.image_size)
        return {"image": cub_data.centre_crop(images.test_images, crop),
                "label": images.test_labels}, spec
    if spec == "validation":
        return load_data(config).require_validation(), spec
    raise ValueError(f"--data must be 'test' or 'validation' for the cub task, got {spec!r} "
                     f"(evaluate another folder by setting --config.data.source=dir:PATH)")


TASK = Task(name="cub", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=classification.loss,
            metrics=classification.metrics, load_eval_set=load_eval_set)
