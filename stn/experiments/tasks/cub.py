"""Task `cub`: fine-grained birds, CUB-200-2011 (paper section 4.3, Table 3), and its CPU stand-in.

Config fields read here (configs/cub.py): `data.source` (`dir:PATH`, `tfds:caltech_birds2011`,
`synthetic`, `clutter:SOURCE`), `data.num_classes`, `data.store_size`, `data.image_size`,
`data.flip`, `data.validation_size`, `data.validation_seed`, `data.synthetic.*`,
`data.clutter.*`; `model.*` (`stn.experiments.models.cub.get_model`), `model.weights` (a timm
safetensors file loaded into every backbone of a fresh run, "" to start from scratch);
`train.batch_size`; `model.pretrain.*` (the stand-in's pretrained backbone).

The stand-in's "ImageNet" (`model.pretrain.steps > 0`, `clutter:` sources, `model.weights`
empty): the backbone is first trained by a run of its own (`stn.experiments.tasks.cub_pretrain`,
`configs/cub.py:pretrain`) to classify centred, uncluttered items (training items that no
canvas uses); a fresh stand-in run loads that run's backbone into every backbone through the
published weights' importer (`init_weights`): the run in `model.pretrain.workdir`, or ("") the
cached one under `model.pretrain.cache_dir` (`stn.experiments.embedding_cache`), trained once
by the first run that asks. A run's checkpoints hold every parameter, so `eval.py` and a
resumed run read neither the weights file nor the pretraining run.
"""
from __future__ import annotations

import functools
import os
import tempfile

import numpy as np
from flax import nnx
from PIL import Image

from stn.backbones import inception_v3, timm_import
from stn.experiments import embedding_cache
from stn.experiments.data import cub as cub_data
from stn.experiments.data import pipeline, sources
from stn.experiments.models import cub as cub_models
from stn.experiments.tasks import Data, Task, classification, cub_pretrain

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
    if int(m.get("view_enlarged", 0)) < 0:
        raise ValueError(f"config.model.view_enlarged={m.view_enlarged} must be >= 0 (0: the "
                         f"views are not enlarged)")
    head = m.get("loc_head", "pooled")
    if head not in cub_models.LOC_HEADS:
        raise ValueError(f"config.model.loc_head={head!r} is unknown; set it to one of "
                         f"{', '.join(cub_models.LOC_HEADS)}")
    if m.name == "st" and head == "soft_argmax" and float(m.init_offset) != 0:
        raise ValueError(f"config.model.loc_head='soft_argmax' starts every box at the centre: "
                         f"set config.model.init_offset to 0 (now {m.init_offset})")
    if m.name == "st" and m.get("bounded_boxes"):
        scale, offset = float(m.init_scale), abs(float(m.init_offset))
        top = float(m.get("max_scale", 1.0))
        if not (0 < scale < top <= 1 and offset < 1 - scale):
            raise ValueError(f"config.model.bounded_boxes needs 0 < init_scale < max_scale <= 1 "
                             f"and init_offset < 1 - init_scale (boxes inside the image); got "
                             f"{scale}, {top}, {offset}")
    if _pretrained(config):
        if not source.startswith("clutter:"):
            raise ValueError(f"config.model.pretrain.steps={m.pretrain.steps} needs a clutter: "
                             f"source (the stand-in); set it to 0 for {source!r}")
        if m.get("weights"):
            raise ValueError("config.model.pretrain.steps > 0 and config.model.weights are both "
                             "set; keep one")
        if int(d.clutter.train_limit) <= 0:
            raise ValueError(f"config.model.pretrain needs training items that no canvas uses: "
                             f"set config.data.clutter.train_limit > 0 (now "
                             f"{d.clutter.train_limit}: every item makes a canvas)")
        cub_pretrain.validate_config(cub_pretrain.pretrain_config(config))
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
    store = int(config.data.store_size)

    def stored(images, labels, seed):
        canvases, labels, _ = _canvases_with_places(config, images, labels, seed)
        if store != canvases.shape[1]:
            canvases = np.stack([np.asarray(Image.fromarray(x).resize((store, store),
                                                                      Image.BILINEAR))
                                 for x in canvases])
        return canvases, labels

    for split, limit in (("train", int(c.train_limit)), ("test", int(c.test_limit))):
        count = len(getattr(items, f"{split}_images"))
        if limit > count:
            raise ValueError(
                f"config.data.clutter.{split}_limit={limit} asks for more {split} items than "
                f"config.data.source={config.data.source!r} holds ({count}); the standin preset "
                f"is set for Fashion-MNIST (60,000 / 10,000 items): set config.data.source="
                f"clutter:idx:<a Fashion-MNIST folder>, or lower the limit")
    train_n, test_n = int(c.train_limit) or None, int(c.test_limit) or None
    train = stored(items.train_images[:train_n], items.train_labels[:train_n], int(c.seed))
    test = stored(items.test_images[:test_n], items.test_labels[:test_n], int(c.seed) + 1)
    return sources.DigitSet(*train, *test, f"clutter:{items.name}")


def _canvases_with_places(config, images, labels, seed):
    """`cub_data.cluttered_objects_with_boxes` with the config's `data.clutter` settings."""
    c = config.data.clutter
    return cub_data.cluttered_objects_with_boxes(
        images, labels, canvas=int(c.canvas), scale_range=(float(c.scale_min),
                                                           float(c.scale_max)),
        clutter=int(c.pieces), seed=seed)


def standin_test_places(config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stand-in's test canvases at full size (uint8 `[N, canvas, canvas, 3]`), labels, and
    each item's `(top, left, side)` in canvas pixels: the ground truth that
    tools/analyses/cub_standin_boxes.py measures the learnt boxes against (never trained on)."""
    if not config.data.source.startswith("clutter:"):
        raise ValueError(f"config.data.source={config.data.source!r} is not the stand-in's "
                         f"(clutter:SOURCE); item places exist only there")
    c = config.data.clutter
    items = sources.load_digits(config.data.source[len("clutter:"):])
    test_n = int(c.test_limit) or None
    return _canvases_with_places(config, items.test_images[:test_n],
                                 items.test_labels[:test_n], int(c.seed) + 1)


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
    """The configured CNN / N x ST-CNN (`stn.experiments.models.cub`) at its initialisation
    (`init_weights` loads the pretrained backbones into a fresh run)."""
    del shape
    return cub_models.get_model(config.model, int(config.data.num_classes), rngs)


def _pretrained(config) -> bool:
    """Whether the backbones start from the stand-in's pretraining run."""
    pretrain = config.model.get("pretrain")
    return pretrain is not None and int(pretrain.steps) > 0


def init_weights(config, model: nnx.Module) -> None:
    """Loads one checkpoint into every backbone of `model` (in place) through the published
    weights' importer: the timm safetensors file `model.weights`, or the stand-in's pretrained
    backbone (`model.pretrain.steps > 0`): the final checkpoint of the `cub_pretrain` run of
    `pretrain_config(config)` in `model.pretrain.workdir`, or ("") the cached one."""
    path = config.model.get("weights") or ""
    if path:
        arrays = timm_import.read_safetensors(path, what="config.model.weights")
        cub_models.load_backbone_weights(model, arrays, what=path)
    elif _pretrained(config):
        pretrain = config.model.pretrain
        net, record = embedding_cache.pretrained_model(
            cub_pretrain.pretrain_config(config), workdir=str(pretrain.get("workdir", "")),
            cache_dir=str(pretrain.get("cache_dir", "")), kind="backbones",
            field="config.model.pretrain.workdir")
        cub_models.load_backbone_weights(model, timm_import.export_arrays(net),
                                         what=record["workdir"])
        print(f"pretrained backbone from {record['workdir']} "
              f"({100 * record['validation_error']:.2f}% error on its held-out items)",
              flush=True)


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test`, `validation`, or `dir:PATH`: the test split of another copy of the data in the
    official layout, read as the run's own test set is (stored at `data.store_size`, centre
    crops)."""
    crop, tag = int(config.data.image_size), spec
    if spec == "validation":
        return load_data(config).require_validation(), spec
    if spec == "test":
        images = load_images(config)
    elif spec.startswith("dir:"):
        root = spec[len("dir:"):]
        images = cub_data.load_dir(root, int(config.data.store_size))
        tag = "dir_" + os.path.basename(os.path.normpath(os.path.expanduser(root)))
        top = int(images.test_labels.max())
        if top >= int(config.data.num_classes):
            raise ValueError(f"--data={spec}: labels up to {top}, but the run has "
                             f"{config.data.num_classes} classes")
    else:
        raise ValueError(f"--data must be 'test', 'validation' or 'dir:PATH' (another copy of "
                         f"the data in the official layout) for the cub task, got {spec!r}")
    return {"image": cub_data.centre_crop(images.test_images, crop),
            "label": images.test_labels}, tag


TASK = Task(name="cub", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=classification.loss,
            metrics=classification.metrics, load_eval_set=load_eval_set,
            init_weights=init_weights)
