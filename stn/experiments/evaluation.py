"""Evaluation: a task's metrics of a model on a data set, and of a run's saved checkpoint.

`evaluate(task, graphdef, state, dataset, ...)` averages the task's per-example loss and metrics
over in-memory arrays, sharded over every device (the last batch padded and the padding masked
out). `evaluate_checkpoint(config, workdir)` restores a run's checkpoint, verified as every
restore is (`stn.experiments.checkpointing.restore`), and evaluates it with the run's own config
on the task's test or validation set, or on external data the task can read (eval.py's `--data`).
This module names no task and does not import the trainer.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from stn.experiments import checkpointing, config_compare, metrics_io, parallel, tasks


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
    same on every process), turned into the set's figures by the task's `set_metrics`:
    `{"error", "loss", ..., "num_examples"}`.

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
    return {**task.set_metrics({k: v / n for k, v in sums.items()}), "num_examples": int(n)}


IDENTITY_FIELDS = ("task", "model.name")  # what a run is: named first when two configs differ


def config_differences(old: dict, new: dict, **options) -> str:
    """The fields in which config `new` changes the numbers of `old`
    (`config_compare.differing_fields` with `options`), described with `task` and `model.name`
    first (another task's config differs in dozens of fields), or "" when none do."""
    fields = config_compare.differing_fields(old, new, **options)
    fields.sort(key=lambda f: IDENTITY_FIELDS.index(f) if f in IDENTITY_FIELDS
                else len(IDENTITY_FIELDS))
    return config_compare.describe(old, new, fields) if fields else ""


def config_of_run(workdir: str, config=None) -> ml_collections.ConfigDict:
    """The config to evaluate the run in `workdir` with: its own `config.json`, or `config`
    when it differs from that only in fields that cannot change the numbers.

    The comparison is a rerun's (`config_differences`): a field that changes the model, the
    data or the split (`data.validation_size`, `model.kernel`, ...) is refused in one line
    naming it; `eval.batch_size`, logging intervals and paths may differ.
    """
    recorded = ml_collections.ConfigDict(config_compare.run_config(workdir))
    if config is None:
        return recorded
    differences = config_differences(recorded.to_dict(), config.to_dict())
    if differences:
        raise ValueError(f"the config is not the one the run in {workdir} was trained with "
                         f"({differences}); these fields change the model, data or split, so "
                         f"the run is evaluated only with its own config: omit --config "
                         f"(eval.py then reads its config.json)")
    return config


def _checkpoint_step(mngr, workdir: str, step: int | None) -> int:
    """`step`, or the newest one; a one-line error when the run has no such checkpoint."""
    steps = mngr.all_steps()
    where = checkpointing.checkpoint_dir(workdir)
    if not steps:
        raise ValueError(f"no checkpoint in {where}; train first with train.py "
                         f"--workdir={workdir}")
    if step is None:
        return max(steps)
    if step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {where}; available: {sorted(steps)}")
    return step


def _restore_verified(mngr, step: int, state):
    """The parameters of checkpoint `step`, verified (`checkpointing.restore`); a checkpoint
    that fails verification is one line saying how to repair it (eval.py never moves files)."""
    try:
        return checkpointing.restore(mngr, step, state)[0]
    except checkpointing.CorruptCheckpoint as e:
        others = sorted(s for s in mngr.all_steps() if s != step)
        raise ValueError(f"{e}; it is not evaluated: rerun the run's train.py command (it sets "
                         f"a corrupt checkpoint aside and saves that step anew)"
                         + (f", or pass --checkpoint_step (also saved: {others})" if others
                            else "")) from None


def restore_run(workdir: str, config=None, *, step: int | None = None):
    """A run's model at checkpoint `step` (default the newest), verified.

    Returns `(config, task, graphdef, state, step, mesh)`: the run's config (`config_of_run`),
    its task, the model split by `nnx.split` with the checkpoint's parameters replicated over
    `mesh` (every device). Raises one-line ValueErrors as `evaluate_checkpoint` does.
    """
    mngr = checkpointing.manager(workdir, read_only=True)
    step = _checkpoint_step(mngr, workdir, step)
    config = config_of_run(workdir, config)
    task = tasks.for_config(config)
    task.validate_config(config)
    mesh = parallel.make_mesh()
    model = task.make_model(config, task.input_shape(config), nnx.Rngs(params=config.seed))
    graphdef, state = nnx.split(model)
    state = _restore_verified(mngr, step, jax.device_put(state, parallel.replicated(mesh)))
    return config, task, graphdef, state, step, mesh


def evaluate_checkpoint(config, workdir: str, *, step: int | None = None,
                        data: str | None = None) -> dict[str, Any]:
    """Restores a run's checkpoint (verified) and returns (and writes) its metrics on a set.

    Args:
      config: the run's config, or None for its `config.json`; a config that changes the
        model, data or split is refused (`config_of_run`).
      workdir: the run's workdir (holds `checkpoints/`).
      step: checkpoint step; default the latest.
      data: "test" (default), "validation", or an external source the task reads (e.g.
        `idx:DIR`, `npz:FILE`).
    Returns:
      `{"<split>_error", "<split>_loss", ... , "num_examples", "step", "data", "workdir"}` with
      split `validation` for the validation set and `test` otherwise (as in results.json); also
      written to `workdir/eval/step_<step>_<tag>.json`.
    Raises:
      ValueError: one line, for a config that is not the run's, a missing or unverified
        checkpoint, or bad data.
      ResultNotSaved: the result could not be written (it is the exception's `result`).
    """
    config, task, graphdef, state, step, mesh = restore_run(workdir, config, step=step)
    dataset, tag = task.load_eval_set(config, data or "test")
    metrics = evaluate(task, graphdef, state, dataset, batch_size=int(config.eval.batch_size),
                       mesh=mesh)
    split = "validation" if data == "validation" else "test"
    result = {**{(k if k == "num_examples" else f"{split}_{k}"): v for k, v in metrics.items()},
              "step": int(step), "data": data or "test", "workdir": os.path.abspath(workdir)}
    if jax.process_index() == 0:
        _write_result(result, os.path.join(workdir, "eval", f"step_{step}_{tag}.json"))
    return result


class ResultNotSaved(OSError):
    """An evaluation finished but its record could not be written; `result` holds it."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


def _write_result(result: dict[str, Any], path: str) -> None:
    """`result` as strict JSON at `path` (non-finite numbers as null), or `ResultNotSaved`."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        metrics_io.write_json(path, {k: (v if not isinstance(v, float) or np.isfinite(v)
                                         else None) for k, v in result.items()})
    except OSError as e:
        raise ResultNotSaved(f"the result was not saved: cannot write {e.filename or path} "
                             f"({e.strerror or e})", result) from None
