"""Experiments as data: a `Task` per experiment, looked up by `config.task` (layer 5).

A task holds everything that differs between experiments: its config checks, its data (the
training batches, the fixed validation and test sets), its model factory and the pretrained
weights a fresh run starts from, its per-example loss and metrics, how `eval.py` reads other
data, and its picture. `stn.experiments.training` and
`stn.experiments.evaluation` are handed a task and name none (as scenic's trainers take a model class and
nanodo's take `get_model_and_loss`).

Adding an experiment: a data module (`stn/experiments/data/`), a model module (`stn/experiments/models/`), a task module
`stn/experiments/tasks/<name>.py` defining `TASK`, one line in `_MODULES` below, and a config file.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from stn.experiments import pictures

Batch = dict  # name -> array with the batch axis first; always holds "image"


@dataclasses.dataclass(frozen=True)
class Data:
    """What the trainer needs from a task's data (numpy arrays on the host).

    Attributes:
      train_arrays: arrays put once on every device (replicated), e.g. `(images, labels)`.
      train_batch: `(train_arrays, seed, step) -> batch`: pure and jittable, batch size bound,
        a function of `(seed, step)` only (so a resumed run sees the same batches).
      validation: the fixed validation set carved from the training data, or None.
      test: the fixed test set.
      input_shape: the shape of one example's image, e.g. `(H, W, C)`.
      optimised: for a transductive task (co-localisation), the fixed examples training
        optimises on, as an eval set: scored at the end as split `train` and drawn at every
        evaluation instead of the test set; None for the others.
    """

    train_arrays: tuple[np.ndarray, ...]
    train_batch: Callable[..., Batch]
    validation: Batch | None
    test: Batch
    input_shape: tuple[int, ...]
    optimised: Batch | None = None

    def require_validation(self) -> Batch:
        """The validation set, or a one-line error when the config holds none out."""
        if self.validation is None:
            raise ValueError("the config has no validation split (config.data.validation_size "
                             "is 0)")
        return self.validation


def default_forward(model: nnx.Module, batch: Batch) -> Any:
    """The model's outputs for a batch: `model(batch["image"])`."""
    return model(batch["image"])


def no_pretrained_weights(config, model: nnx.Module) -> None:
    """A fresh run starts from the model's own initialisation."""
    del config, model


def means_only(means: dict[str, float]) -> dict[str, float]:
    """A set's figures are the means of its per-example metrics, as they are."""
    return means


@dataclasses.dataclass(frozen=True)
class Task:
    """One experiment. Every callable is pure data plumbing; see the module docstring.

    Attributes:
      name: the registry name (`config.task`).
      validate_config: raises a one-line ValueError naming the field to change (run before any
        data is read or anything compiles).
      load_data: `config -> Data`.
      input_shape: `config -> shape of one image`, without reading any data.
      make_model: `(config, input_shape, rngs) -> model` (the model contract,
        `stn.experiments.models`), at its initialisation: it reads no weights file.
      init_weights: `(config, model) -> None`: loads into `model`, in place, the pretrained
        weights a fresh run starts from (CUB's backbones, co-localisation's embedding CNN). The
        trainer calls it only for a run that restores no checkpoint; the evaluator never does
        (a checkpoint holds every parameter, so a run stays usable once its weights file moved).
      loss: `(outputs, batch) -> [B]` per-example loss; its mean is minimised.
      metrics: `(outputs, batch) -> {name: [B]}` per-example values averaged over a set; must
        hold "error", a fraction in [0, 1] (reported as test_error, validation_error, ...).
      set_metrics: `{name: mean over a set} -> {name: figure}`, the figures reported for a whole
        set, made from those means where a figure is no mean of per-example values (e.g. a
        correlation, from the means of products that `metrics` gives per example); default
        the means themselves.
      load_eval_set: `(config, spec) -> (batch of numpy arrays, tag)` for eval.py's `--data`:
        "test", "validation", or an external source (e.g. `idx:DIR`, `npz:FILE`).
      forward: `(model, batch) -> outputs`.
      train_forward: the forward of a training step where it differs from `forward`'s (e.g.
        batch-norm layers that normalise with the batch's statistics and update their running
        ones: the state the step returns holds what the forward wrote); None: `forward`.
      draw: `(batch, grids, outputs) -> PIL image` of what the transformers do (numpy inputs:
        the batch, each transformer's grid in the input frame, the input sampled on it).
      steps_caption: what the frames of images/transformer_steps.png (`draw`'s pictures at
        several steps) show, printed above them.
    """

    name: str
    validate_config: Callable[[Any], None]
    load_data: Callable[[Any], Data]
    input_shape: Callable[[Any], tuple[int, ...]]
    make_model: Callable[[Any, tuple[int, ...], nnx.Rngs], nnx.Module]
    loss: Callable[[Any, Batch], jax.Array]
    metrics: Callable[[Any, Batch], dict[str, jax.Array]]
    load_eval_set: Callable[[Any, str], tuple[Batch, str]]
    forward: Callable[[nnx.Module, Batch], Any] = default_forward
    draw: Callable[..., Any] = pictures.transformer_picture
    steps_caption: str = pictures.STEPS_CAPTION
    init_weights: Callable[[Any, nnx.Module], None] = no_pretrained_weights
    train_forward: Callable[[nnx.Module, Batch], Any] | None = None
    set_metrics: Callable[[dict[str, float]], dict[str, float]] = means_only


# The registry: task name -> module defining TASK (imported when first asked for).
_MODULES = {
    "classification": "stn.experiments.tasks.classification",
    "sequences": "stn.experiments.tasks.sequences",
    "addition": "stn.experiments.tasks.addition",
    "colocalisation": "stn.experiments.tasks.colocalisation",
    "cub": "stn.experiments.tasks.cub",
    "cub_pretrain": "stn.experiments.tasks.cub_pretrain",
}
NAMES = tuple(_MODULES)


def get(name: str) -> Task:
    """The task registered under `name` (one of `NAMES`)."""
    if name not in _MODULES:
        raise ValueError(f"config.task={name!r} is unknown; set it to one of {', '.join(NAMES)}")
    return importlib.import_module(_MODULES[name]).TASK


def for_config(config) -> Task:
    """The task of `config` (`config.task`), with a one-line error when the field is missing."""
    if "task" not in config:
        raise ValueError(f"the config has no 'task' field; set config.task to one of "
                         f"{', '.join(NAMES)}")
    return get(config.task)
