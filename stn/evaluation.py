"""Evaluation: a task's metrics of a model on a data set, and of a run's saved checkpoint.

`evaluate(task, graphdef, state, dataset, ...)` averages the task's per-example loss and metrics
over in-memory arrays, sharded over every device (the last batch padded and the padding masked
out). `evaluate_checkpoint(config, workdir)` restores a run's checkpoint and evaluates it on the
task's test or validation set, or on external data the task can read (eval.py's `--data`).
This module names no task and does not import the trainer.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stn import checkpointing, metrics_io, parallel, tasks


@functools.lru_cache(maxsize=None)
def _eval_step(graphdef, task: tasks.Task):
    """Jitted `(state, batch, mask) -> {name: masked sum over the batch}` of the task's loss and
    metrics."""

    def step(state, batch, mask):
        outputs = task.forward(nnx.merge(graphdef, state), batch)
        values = {**task.metrics(outputs, batch), "loss": task.loss(outputs, batch)}
        return {k: jnp.sum(v.astype(jnp.float32) * mask) for k, v in values.items()}

    return jax.jit(step)


def evaluate(task: tasks.Task, graphdef, state, dataset: dict[str, np.ndarray], *,
             batch_size: int, mesh=None) -> dict[str, float]:
    """Mean loss and metrics of `nnx.merge(graphdef, state)` over `dataset` (numpy arrays, the
    same on every process): `{"error", "loss", ..., "num_examples"}`.

    Batches are rounded up to a multiple of the device count; the last one is padded with zeros
    and the padding masked out of every sum.
    """
    mesh = mesh or parallel.make_mesh()
    n = len(dataset["image"])
    if n == 0:
        raise ValueError("cannot evaluate on an empty data set")
    devices = mesh.devices.size
    batch_size = max(devices, -(-batch_size // devices) * devices)
    sharding = parallel.batch_sharded(mesh)
    step = _eval_step(graphdef, task)
    sums: dict[str, float] = {}
    for start in range(0, n, batch_size):
        chunk = {k: np.asarray(v[start:start + batch_size]) for k, v in dataset.items()}
        chunk, mask = parallel.padded_batch(chunk, batch_size)
        totals = step(state, parallel.global_tree(chunk, sharding),
                      parallel.global_array(mask, sharding))
        for key, value in jax.device_get(totals).items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {**{k: v / n for k, v in sums.items()}, "num_examples": int(n)}


def evaluate_checkpoint(config, workdir: str, *, step: int | None = None,
                        data: str | None = None) -> dict[str, Any]:
    """Restores a run's checkpoint and returns (and writes) its metrics on a data set.

    Args:
      config: the run's config (the task and model are rebuilt from it).
      workdir: the run's workdir (holds `checkpoints/`).
      step: checkpoint step; default the latest.
      data: "test" (default), "validation", or an external source the task reads (e.g.
        `idx:DIR`, `npz:FILE`).
    Returns:
      `{"<split>_error", "<split>_loss", ... , "num_examples", "step", "data", "workdir"}` with
      split `validation` for the validation set and `test` otherwise (as in results.json); also
      written to `workdir/eval/step_<step>_<tag>.json`.
    """
    task = tasks.for_config(config)
    task.validate_config(config)
    mngr = checkpointing.manager(workdir, read_only=True)
    steps = mngr.all_steps()
    where = checkpointing.checkpoint_dir(workdir)
    if not steps:
        raise ValueError(f"no checkpoint in {where}; train first with train.py "
                         f"--workdir={workdir}")
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {where}; available: {sorted(steps)}")
    mesh = parallel.make_mesh()
    model = task.make_model(config, task.input_shape(config), nnx.Rngs(params=config.seed))
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, parallel.replicated(mesh))
    state, _ = checkpointing.restore(mngr, step, state)
    dataset, tag = task.load_eval_set(config, data or "test")
    metrics = evaluate(task, graphdef, state, dataset, batch_size=int(config.eval.batch_size),
                       mesh=mesh)
    split = "validation" if data == "validation" else "test"
    result = {**{(k if k == "num_examples" else f"{split}_{k}"): v for k, v in metrics.items()},
              "step": int(step), "data": data or "test", "workdir": os.path.abspath(workdir)}
    if jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        metrics_io.write_json(os.path.join(workdir, "eval", f"step_{step}_{tag}.json"),
                              {k: (v if not isinstance(v, float) or np.isfinite(v) else None)
                               for k, v in result.items()})
    return result
