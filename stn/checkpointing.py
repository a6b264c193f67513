"""Orbax checkpoints of a training run: `workdir/checkpoints/<step>/{params,opt_state,meta}`.

Parameters and optimizer state are saved as flat lists of arrays (their tree structure comes
back from the model and optimizer that the same config builds), so evaluation can restore the
parameters alone. `meta` is JSON: `{"step": ..., "param_names": [...]}`.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, *, max_to_keep: int | None = 3, read_only: bool = False
            ) -> ocp.CheckpointManager:
    """A synchronous CheckpointManager for `workdir/checkpoints` (saves finish before return)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("params", "opt_state", "meta"))


def _abstract(leaves: list[jax.Array]) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for x in leaves]


def save(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any,
         param_names: list[str]) -> None:
    """Saves params, optimizer state and the step (overwrites nothing; skips an existing step)."""
    if step in mngr.all_steps():
        return
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(jax.tree.leaves(params)),
        opt_state=ocp.args.StandardSave(jax.tree.leaves(opt_state)),
        meta=ocp.args.JsonSave({"step": int(step), "param_names": param_names})))
    mngr.wait_until_finished()


def restore(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any | None = None):
    """Restores into the structure (and shardings) of `params` / `opt_state`; returns them.

    With `opt_state=None` only the parameters are read (evaluation).
    """
    p_leaves, p_def = jax.tree.flatten(params)
    items = {"params": ocp.args.StandardRestore(_abstract(p_leaves))}
    if opt_state is not None:
        o_leaves, o_def = jax.tree.flatten(opt_state)
        items["opt_state"] = ocp.args.StandardRestore(_abstract(o_leaves))
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    if len(restored["params"]) != len(p_leaves):
        raise ValueError(f"checkpoint {step} holds {len(restored['params'])} parameter arrays but "
                         f"the config's model has {len(p_leaves)}: is it the same model config?")
    new_params = jax.tree.unflatten(p_def, list(restored["params"]))
    if opt_state is None:
        return new_params, None
    return new_params, jax.tree.unflatten(o_def, list(restored["opt_state"]))
