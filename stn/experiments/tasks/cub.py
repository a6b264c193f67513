"""Task `cub`: fine-grained birds, CUB-200-2011 (paper section 4.3, Table 3), and its CPU stand-in.

Config fields read here (configs/cub.py): `data.source` (`dir:PATH`, `tfds:caltech_birds2011`,
`synthetic`, `clutter:SOURCE`), `data.num_classes`, `data.store_size`, `data.image_size`,
`data.flip`, `data.validation_size`, `data.validation_seed`, `data.synthetic.*`,
`data.clutter.*`; `model.*` (`stn.experiments.models.cub.get_model`), `model.weights` (a timm
safetensors file loaded into every backbone, "" to start from scratch); `train.batch_size`;
`model.pretrain.*` (the stand-in's pretrained backbone, `pretrained_weights`).

The stand-in's "ImageNet" (`model.pretrain.steps > 0`, `clutter:` sources, `model.weights`
empty): the backbone is first trained once to classify centred, uncluttered items (training
items that no canvas uses), with batch-norm statistics learnt as usual, then written as a timm
safetensors file and cached under `model.pretrain.cache_dir` (default `$STN_CACHE_DIR/backbones`
or `~/.cache/stn/backbones`), in a folder named by a hash of everything that shapes it; every
run with the same settings loads that file through the published weights' importer.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from PIL import Image

from stn.experiments import embedding_cache, metrics_io
from stn import _xla_cpu
from stn.backbones import inception_v3, timm_import
from stn.experiments.data import cub as cub_data
from stn.experiments.data import pipeline, sources
from stn.experiments.models import cub as cub_models
from stn.experiments.tasks import Data, Task, classification

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
    pretrain = m.get("pretrain")
    if pretrain is not None and int(pretrain.steps) > 0:
        if not source.startswith("clutter:"):
            raise ValueError(f"config.model.pretrain.steps={pretrain.steps} needs a clutter: "
                             f"source (the stand-in); set it to 0 for {source!r}")
        if m.get("weights"):
            raise ValueError("config.model.pretrain.steps > 0 and config.model.weights are both "
                             "set; keep one")
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
    """The configured CNN / N x ST-CNN (`stn.experiments.models.cub`), with `model.weights` (or the
    stand-in's cached pretrained backbone, `pretrained_weights`) loaded into every backbone."""
    del shape
    model = cub_models.get_model(config.model, int(config.data.num_classes), rngs)
    path = config.model.get("weights") or ""
    pretrain = config.model.get("pretrain")
    if not path and pretrain is not None and int(pretrain.steps) > 0:
        path = pretrained_weights(config)
    if path:
        from safetensors.numpy import load_file

        cub_models.load_backbone_weights(model, load_file(path), what=path)
    return model


# ----------------------------------------------------------------------------- pretraining

def pretrain_spec(config) -> dict:
    """Everything that shapes the stand-in's pretrained backbone (the cache key): the item
    source and the first training item it may use, the backbone's shape, and
    `model.pretrain.*` except `cache_dir`."""
    m = config.model
    spec = {k: v for k, v in m.pretrain.to_dict().items() if k != "cache_dir"}
    spec.update(source=config.data.source[len("clutter:"):],
                first_item=int(config.data.clutter.train_limit), width=float(m.width),
                last_block=str(m.last_block), canvas=int(m.crop_size),
                num_classes=int(config.data.num_classes))
    return spec


def pretrained_weights(config) -> str:
    """The stand-in's pretrained backbone as a timm safetensors file: the cached one for
    `pretrain_spec(config)`, trained and cached first when absent (`_pretrain`).

    Raises:
      ValueError: one line when the cached folder's recorded config is not this one (a copied
        or stale folder).
    """
    spec = pretrain_spec(config)
    root = embedding_cache.cache_root(config.model.pretrain.get("cache_dir", ""), "backbones")
    folder = os.path.join(root, embedding_cache.config_key(spec))
    record_path, weights = (os.path.join(folder, n) for n in ("config.json", "model.safetensors"))
    if not os.path.isfile(record_path):
        os.makedirs(folder, exist_ok=True)
        backbone, measured = _pretrain(config)
        timm_import.save_safetensors(backbone, weights)
        metrics_io.write_json(record_path, {"config": spec, **measured})  # last: marks it whole
    with open(record_path) as f:
        stored = json.load(f).get("config")
    if stored != spec:
        raise ValueError(f"the pretrained backbone cached in {folder} was trained with another "
                         f"config ({embedding_cache.differences(stored or {}, spec)}); delete "
                         f"that folder")
    logging.info("pretrained backbone: %s", weights)
    return weights


def _pretraining_items(config) -> tuple[np.ndarray, np.ndarray]:
    """The training items no canvas uses (from `data.clutter.train_limit` on) and labels."""
    items = sources.load_digits(config.data.source[len("clutter:"):])
    first = int(config.data.clutter.train_limit)
    if first <= 0 or first >= len(items.train_images):
        raise ValueError(f"config.model.pretrain needs training items that no canvas uses: set "
                         f"config.data.clutter.train_limit in 1..{len(items.train_images) - 1} "
                         f"(now {first})")
    return items.train_images[first:], items.train_labels[first:]


def _pretrain(config) -> tuple[inception_v3.InceptionV3, dict]:
    """Trains an Inception (the backbone's width and depth, with a `num_classes` head) to
    classify centred items (`cub_data.centred_items` on a `crop_size` canvas): SGD with
    momentum, the learning rate / 10 after 2/3 of the steps, batch-norm statistics learnt
    (`inception_v3.learn_statistics`). Returns the network (statistics fixed again) and what
    was measured, including its error on `held_out` items it never trained on."""
    p, m = config.model.pretrain, config.model
    items, labels = _pretraining_items(config)
    held = int(p.held_out)
    if not 0 < held < len(items):
        raise ValueError(f"config.model.pretrain.held_out={held} must be in 1..{len(items) - 1}")
    canvases = cub_data.centred_items(items, canvas=int(m.crop_size),
                                      side_range=(int(p.side_min), int(p.side_max)),
                                      jitter=int(p.jitter), seed=int(p.seed),
                                      clutter=int(p.get("pieces", 0)))
    train_x, train_y = canvases[held:], labels[held:]
    held_x, held_y = canvases[:held], labels[:held]
    net = inception_v3.InceptionV3(num_classes=int(config.data.num_classes), width=float(m.width),
                                   last_block=str(m.last_block), rngs=nnx.Rngs(int(p.seed)),
                                   conv_general_dilated=_xla_cpu.conv_general_dilated)
    inception_v3.learn_statistics(net, True)
    steps = int(p.steps)
    schedule = optax.piecewise_constant_schedule(float(p.learning_rate),
                                                 {max(1, 2 * steps // 3): 0.1})
    optimizer = nnx.Optimizer(net, optax.sgd(schedule, momentum=float(p.momentum)),
                              wrt=nnx.Param)

    @nnx.jit
    def step(net, optimizer, images, labels):
        def loss_fn(net):
            logits = net(inception_v3.normalise(images))
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.Param))(net)
        optimizer.update(net, grads)
        return loss

    rng = np.random.default_rng(int(p.seed))
    start, losses = time.time(), []
    for k in range(steps):
        index = rng.integers(0, len(train_x), int(p.batch_size))
        losses.append(float(step(net, optimizer, _as_rgb(train_x[index]), train_y[index])))
        if (k + 1) % 100 == 0 or k + 1 == steps:
            logging.info("pretrain step %d/%d: loss %.4f", k + 1, steps, np.mean(losses[-100:]))
    inception_v3.learn_statistics(net, False)
    predict = nnx.jit(lambda net, x: net(inception_v3.normalise(x)).argmax(-1))
    wrong = sum(int((np.asarray(predict(net, _as_rgb(held_x[i:i + 500]))) !=
                     held_y[i:i + 500]).sum()) for i in range(0, held, 500))
    measured = {"held_out_error": wrong / held, "final_loss": float(np.mean(losses[-100:])),
                "wall_time_s": time.time() - start, "load_average": os.getloadavg()[0],
                "pretraining_items": len(train_x)}
    logging.info("pretrained backbone: held-out error %.4f", measured["held_out_error"])
    return net, measured


def _as_rgb(grey: np.ndarray) -> jax.Array:
    """uint8 `[B, S, S]` -> float32 `[B, S, S, 3]` in [0, 1]."""
    return jnp.asarray(np.repeat(grey[..., None], 3, -1), jnp.float32) / 255.0


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
