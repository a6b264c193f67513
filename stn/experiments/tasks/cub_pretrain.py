"""Task `cub_pretrain`: the CUB stand-in's "ImageNet", the backbone every stand-in run starts from.

The paper's backbones are ImageNet-pretrained Inceptions; the stand-in's (docs/reports/results.md)
are pretrained here, by an ordinary run of this task: an Inception of the stand-in's width and
depth with a `data.num_classes` classifier learns to classify centred items
(`stn.experiments.data.cub.centred_items`: each item resized to a side in
`[data.side_min, data.side_max]`, shifted by at most `data.jitter` pixels from the centre of a
`data.canvas` canvas, with `data.pieces` clutter pieces), with its batch-norm statistics
learnt (`train_forward`). The items are the source's training items that no stand-in canvas
uses (from `data.first_item` on); the first `data.held_out` of them are the validation set,
never trained on; the test set is the same made of the first `data.test_limit` test items
(0: all). `pretrain_config(config)` builds this task's config from a stand-in config's
`model.pretrain` recipe (`configs/cub.py:pretrain`); the stand-in's `init_weights` loads the
finished run's backbone into every backbone through the published weights' importer
(`stn.experiments.tasks.cub`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from stn.backbones import inception_v3
from stn.experiments import config_args
from stn.experiments.data import cub as cub_data
from stn.experiments.data import pipeline, sources
from stn.experiments.models import cub as cub_models
from stn.experiments.tasks import Data, Task, classification

CLUTTER_PREFIX = "clutter:"


def pretrain_config(config) -> ml_collections.ConfigDict:
    """The pretraining run's config for the stand-in `config` (a `clutter:SOURCE` source and
    `model.pretrain.steps > 0`): its items, its backbones' width, depth and input size
    (`model.crop_size`), and the `model.pretrain` recipe: SGD with momentum for `steps` steps
    of `batch_size`, the learning rate divided by 10 after 2/3 of the steps, seeded by `seed`."""
    p, m, d = config.model.pretrain, config.model, config.data
    c = ml_collections.ConfigDict()
    c.name = "cub_pretrain"
    c.task = "cub_pretrain"
    c.seed = int(p.seed)
    c.distributed = bool(config.get("distributed", False))
    c.data = ml_collections.ConfigDict(dict(
        source=str(d.source)[len(CLUTTER_PREFIX):], first_item=int(d.clutter.train_limit),
        held_out=int(p.held_out), test_limit=int(d.clutter.test_limit),
        canvas=int(m.crop_size), side_min=int(p.side_min), side_max=int(p.side_max),
        jitter=int(p.jitter), pieces=int(p.get("pieces", 0)), num_classes=int(d.num_classes)))
    c.model = ml_collections.ConfigDict(dict(width=float(m.width), last_block=str(m.last_block)))
    steps = int(p.steps)
    c.train, c.eval = config_args.run_sections(
        steps=steps, batch_size=int(p.batch_size), learning_rate=float(p.learning_rate),
        momentum=float(p.momentum), lr_decay_every=max(1, 2 * steps // 3), lr_decay_factor=0.1,
        log_every=100, eval_every=steps, checkpoint_every=max(1, steps // 3), num_images=0,
        eval_batch_size=500)
    return c


def validate_config(config) -> None:
    """One-line ValueErrors for the data and model fields, before any data is read."""
    d, m = config.data, config.model
    sources.check_source(d.source, field="config.data.source")
    for key in ("first_item", "held_out", "canvas", "side_min", "num_classes"):
        if int(d[key]) < 1:
            raise ValueError(f"config.data.{key}={d[key]} must be >= 1")
    for key in ("jitter", "pieces", "test_limit"):
        if int(d[key]) < 0:
            raise ValueError(f"config.data.{key}={d[key]} must be >= 0")
    if int(d.side_min) > min(int(d.side_max), int(d.canvas)):
        raise ValueError(f"config.data.side_min={d.side_min} must be at most data.side_max="
                         f"{d.side_max} and data.canvas={d.canvas}")
    if m.last_block not in inception_v3.TRUNCATIONS:
        raise ValueError(f"config.model.last_block={m.last_block!r} is unknown; set it to one of "
                         f"{', '.join(inception_v3.TRUNCATIONS)}")
    if not float(m.width) > 0:
        raise ValueError(f"config.model.width={m.width} must be > 0")
    try:  # shapes only: a backbone too deep for its input fails here
        nnx.eval_shape(lambda: make_model(config, input_shape(config), nnx.Rngs(0))(
            jnp.zeros((1,) + input_shape(config), jnp.float32)))
    except ValueError as e:
        raise ValueError(f"config.model (last_block={m.last_block}) on {d.canvas}x{d.canvas} "
                         f"items does not fit: {str(e).splitlines()[0]}") from None


def input_shape(config) -> tuple[int, int, int]:
    """`(S, S, 1)`: grey canvases of `data.canvas` pixels."""
    size = int(config.data.canvas)
    return (size, size, 1)


def pretraining_items(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 `[N, 28, 28]` items and labels that no stand-in canvas uses (the source's training
    items from `data.first_item` on): `(training items, labels, held-out items, labels)`, the
    held-out ones the first `data.held_out` of them."""
    d = config.data
    items = sources.load_digits(d.source)
    count, first, held = len(items.train_images), int(d.first_item), int(d.held_out)
    if first >= count:
        raise ValueError(f"config.data.first_item={first} (the stand-in's data.clutter."
                         f"train_limit: the items before it make its canvases) leaves none of "
                         f"the {count} training items of {items.name} to pretrain on; the "
                         f"stand-in is set for Fashion-MNIST's 60,000: set the stand-in's "
                         f"data.source to clutter:idx:<a Fashion-MNIST folder>")
    if held >= count - first:
        raise ValueError(f"config.data.held_out={held} must be below the {count - first} "
                         f"pretraining items of {items.name} (from data.first_item={first} on)")
    top = int(items.train_labels.max())
    if top >= int(d.num_classes):
        raise ValueError(f"{items.name} has labels up to {top}; config.data.num_classes="
                         f"{d.num_classes} is too small")
    spare, labels = items.train_images[first:], items.train_labels[first:]
    return spare[held:], labels[held:], spare[:held], labels[:held]


def _centred(config, items: np.ndarray, seed: int) -> np.ndarray:
    """`cub_data.centred_items` with the config's settings."""
    d = config.data
    return cub_data.centred_items(items, canvas=int(d.canvas),
                                  side_range=(int(d.side_min), int(d.side_max)),
                                  jitter=int(d.jitter), seed=seed, clutter=int(d.pieces))


def _as_set(canvases: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 grey `[N, S, S]` canvases -> `{"image": float32 [N, S, S, 1] in [0, 1], "label"}`."""
    return {"image": canvases[..., None].astype(np.float32) / 255.0,
            "label": np.asarray(labels, np.int32)}


def train_batch(canvases: jax.Array, labels: jax.Array, seed, step, *,
                batch_size: int) -> dict[str, jax.Array]:
    """The training batch of `step` (`pipeline.batch_indices`: an epoch-wise permutation),
    float32 `[B, S, S, 1]` in [0, 1]; pure in `(seed, step)`."""
    index = pipeline.batch_indices(canvases.shape[0], seed, step, batch_size)
    return {"image": canvases[index][..., None].astype(jnp.float32) / 255.0,
            "label": labels[index].astype(jnp.int32)}


def load_data(config) -> Data:
    """The centred training items and their batch maker, the held-out items (validation) and
    the centred test items. The held-out and training canvases are one draw of
    `centred_items` over the pretraining items (held-out ones first), as before they were split."""
    train, train_labels, held, held_labels = pretraining_items(config)
    seed = int(config.seed)
    canvases = _centred(config, np.concatenate([held, train]), seed)
    items = sources.load_digits(config.data.source)
    limit = int(config.data.test_limit) or None
    test = _centred(config, items.test_images[:limit], seed + 1)
    batch = functools.partial(train_batch, batch_size=int(config.train.batch_size))
    return Data(train_arrays=(canvases[len(held):], np.asarray(train_labels, np.int32)),
                train_batch=lambda arrays, seed, step: batch(*arrays, seed, step),
                validation=_as_set(canvases[:len(held)], held_labels),
                test=_as_set(test, items.test_labels[:limit]), input_shape=input_shape(config))


def make_model(config, shape, rngs):
    """The Inception with a classifier (`stn.experiments.models.cub.PretrainingNet`)."""
    del shape
    return cub_models.pretraining_net(float(config.model.width), str(config.model.last_block),
                                      int(config.data.num_classes), rngs)


def train_forward(model: cub_models.PretrainingNet, batch: dict) -> jax.Array:
    """Logits of a training batch, every batch-norm layer normalising with the batch's
    statistics and updating its running ones (`inception_v3.learn_statistics`)."""
    return inception_v3.learn_statistics(model, True)(batch["image"])


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test` or `validation` (the held-out items)."""
    if spec not in ("test", "validation"):
        raise ValueError(f"--data must be 'test' or 'validation' for the cub_pretrain task, got "
                         f"{spec!r}")
    data = load_data(config)
    return (data.test if spec == "test" else data.validation), spec


TASK = Task(name="cub_pretrain", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=classification.loss,
            metrics=classification.metrics, load_eval_set=load_eval_set,
            train_forward=train_forward)
