"""Evaluation: test error of parameters on a data set, and of a run's saved checkpoint.

`evaluate_arrays` computes the classification error of a model on in-memory images, sharded
over every device. `evaluate_checkpoint(config, workdir)` restores the latest (or a chosen)
checkpoint of a run and evaluates it on the config's distorted test set, or on local data:

- `idx:DIR`: a directory of MNIST-format IDX files (its test split is used, undistorted);
- `npz:FILE`: an `.npz` with `image` (`[N,H,W]` or `[N,H,W,C]`, uint8 in [0, 255] or float in
  [0, 1]) and `label` (`[N]` integers).

External images are used as given (no distortion is applied). Images smaller than the model's
input are centred on a zero (black) canvas of the input size; larger ones are rejected with a
`ValueError` (crop or resize them first). The channel count must match the model's (1 here).
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stn import checkpointing


def make_mesh() -> Mesh:
    """A 1-D mesh over every device (all hosts), axis name `data`."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy `[B]` of logits `[B, K]` and integer labels `[B]`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def classification_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example `[B]` bool: the arg-max class is the label."""
    return jnp.argmax(logits, axis=-1) == labels


@functools.lru_cache(maxsize=None)
def _eval_step(graphdef, loss_fn=classification_loss, correct_fn=classification_correct):
    """Jitted `(state, images, labels, mask) -> (num_correct, loss_sum)` for one batch.

    `loss_fn(outputs, labels) -> [B]` and `correct_fn(outputs, labels) -> [B]` define the task
    (default: classification; the sequence task passes `stn.models.svhn`'s).
    """

    def step(state, images, labels, mask):
        model = nnx.merge(graphdef, state)
        outputs = model(images)
        loss = loss_fn(outputs, labels)
        correct = correct_fn(outputs, labels).astype(jnp.float32)
        return jnp.sum(correct * mask), jnp.sum(loss * mask)

    return jax.jit(step)


def _global_array(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array sharded as `sharding` from the same host-side numpy array on every host."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def evaluate_arrays(graphdef, state, images: np.ndarray, labels: np.ndarray, *,
                    batch_size: int, mesh: Mesh | None = None,
                    loss_fn=classification_loss,
                    correct_fn=classification_correct) -> dict[str, float]:
    """Error and mean loss of the model `nnx.merge(graphdef, state)` on `images`/`labels`.

    Batches are padded to a multiple of the device count (padding is masked out), sharded along
    the mesh's `data` axis; every host must pass the same arrays.
    """
    mesh = mesh or make_mesh()
    n_dev = mesh.devices.size
    batch_size = max(n_dev, -(-batch_size // n_dev) * n_dev)
    sharding = NamedSharding(mesh, P("data"))
    step = _eval_step(graphdef, loss_fn, correct_fn)
    n = images.shape[0]
    correct = loss = 0.0
    for start in range(0, n, batch_size):
        x = np.asarray(images[start:start + batch_size], np.float32)
        y = np.asarray(labels[start:start + batch_size], np.int32)
        m = np.ones(x.shape[0], np.float32)
        pad = batch_size - x.shape[0]
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((pad, *y.shape[1:]), y.dtype)])  # [B] or [B, L]
            m = np.concatenate([m, np.zeros(pad, m.dtype)])
        c, l = step(state, _global_array(x, sharding), _global_array(y, sharding),
                    _global_array(m, sharding))
        correct += float(c)
        loss += float(l)
    return {"test_error": 1.0 - correct / n, "test_loss": loss / n, "num_examples": int(n)}


def prepare_images(images: np.ndarray, input_size: int, channels: int = 1) -> np.ndarray:
    """uint8/float `[N,H,W]` or `[N,H,W,C]` -> float32 `[N,S,S,C]` in [0, 1], centred on zeros.

    Raises ValueError for images larger than the model's input or with the wrong channels.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N,H,W] or [N,H,W,C], got shape {images.shape}")
    if images.shape[-1] != channels:
        raise ValueError(f"images have {images.shape[-1]} channels; the model expects {channels}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    else:
        images = images.astype(np.float32)
    n, h, w, c = images.shape
    if h > input_size or w > input_size:
        raise ValueError(f"images are {h}x{w}, larger than the model's {input_size}x{input_size} "
                         f"input; crop or resize them to at most {input_size}x{input_size}")
    if (h, w) == (input_size, input_size):
        return images
    canvas = np.zeros((n, input_size, input_size, c), np.float32)
    top, left = (input_size - h) // 2, (input_size - w) // 2
    canvas[:, top:top + h, left:left + w] = images
    return canvas


def load_external(spec: str) -> tuple[np.ndarray, np.ndarray, str]:
    """`idx:DIR` or `npz:FILE` -> (images, labels, tag) as stored (not yet resized)."""
    if spec.startswith("idx:"):
        from stn.data import sources  # layer 4 only when asked for
        digits = sources.load_digits(spec)
        return digits.test_images, digits.test_labels, "idx_" + os.path.basename(
            os.path.normpath(spec[4:]))
    if spec.startswith("npz:"):
        path = os.path.expanduser(spec[4:])
        if not os.path.isfile(path):
            raise ValueError(f"--data={spec}: no such file {path}")
        with np.load(path) as f:
            missing = {"image", "label"} - set(f.files)
            if missing:
                raise ValueError(f"{path} must hold arrays 'image' and 'label'; it has "
                                 f"{sorted(f.files)}")
            images, labels = f["image"], f["label"]
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{path}: 'label' must be [N] with N={images.shape[0]}, got "
                             f"{labels.shape}")
        return images, labels.astype(np.int32), "npz_" + os.path.splitext(os.path.basename(path))[0]
    raise ValueError(f"--data must be 'idx:DIR' or 'npz:FILE', got {spec!r}")


def evaluate_checkpoint(config, workdir: str, *, step: int | None = None,
                        data: str | None = None) -> dict[str, Any]:
    """Restores a run's checkpoint and returns (and writes) its test metrics.

    Args:
      config: the run's config (the model is rebuilt from it).
      workdir: the run's workdir (holds `checkpoints/`).
      step: checkpoint step; default the latest.
      data: `None` for the config's test set, else `idx:DIR` or `npz:FILE`.
    Returns:
      `{"test_error", "test_loss", "num_examples", "step", "data", "workdir"}`; also written
      to `workdir/eval/step_<step>_<data>.json`.
    """
    from stn import training  # same layer; training imports this module at top level

    mngr = checkpointing.manager(workdir, read_only=True)
    steps = mngr.all_steps()
    if not steps:
        raise ValueError(f"no checkpoint in {checkpointing.checkpoint_dir(workdir)}; train first "
                         f"with train.py --workdir={workdir}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {checkpointing.checkpoint_dir(workdir)};"
                         f" available: {sorted(steps)}")
    mesh = make_mesh()
    graphdef, state, input_size = training.build_model(config, mesh)
    state, _ = checkpointing.restore(mngr, step, state)
    if data is None:
        test = training.load_test_set(config)
        images, labels, tag = test["image"], test["label"], "test"
    else:
        raw, labels, tag = load_external(data)
        images = prepare_images(raw, input_size)
    loss_fn, correct_fn = training.task_functions(config)
    metrics = evaluate_arrays(graphdef, state, images, labels,
                              batch_size=config.eval.batch_size, mesh=mesh,
                              loss_fn=loss_fn, correct_fn=correct_fn)
    result = {**metrics, "step": int(step), "data": data or config.data.source,
              "workdir": os.path.abspath(workdir)}
    if jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        with open(os.path.join(workdir, "eval", f"step_{step}_{tag}.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result
