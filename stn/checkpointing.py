"""Orbax checkpoints of a training run: `workdir/checkpoints/<step>/{params,opt_state,meta}`.

Parameters and optimizer state are saved as flat lists of arrays; `meta` (JSON) records the step,
every parameter's path (`param_names`) and a SHA-256 digest of all saved bytes. Restoring checks
what comes back: the parameters are matched to the model by path (a renamed or missing layer is
a one-line error listing the first differing paths, never a silent load into the wrong layer),
and the digest and finiteness are verified, so a truncated, deleted or bit-flipped checkpoint is
detected; `restore_newest_good` then falls back to the newest checkpoint that verifies.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or of another model."""


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


def param_names(params: Any) -> list[str]:
    """The path of every leaf of a parameter tree, e.g. `['classifier']['kernel'].value`."""
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def digest(leaves: list) -> str:
    """SHA-256 over the dtype, shape and bytes of every array (the replicated host copy)."""
    h = hashlib.sha256()
    for leaf in leaves:
        x = np.asarray(leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf)
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def all_finite(leaves: list) -> bool:
    """Whether every floating array holds only finite values."""
    return all(bool(np.isfinite(np.asarray(x.addressable_data(0) if isinstance(x, jax.Array)
                                           else x)).all())
               for x in leaves if jax.numpy.issubdtype(x.dtype, jax.numpy.floating))


def save(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any) -> None:
    """Saves params, optimizer state, their paths and digest (skips an existing step)."""
    if step in mngr.all_steps():
        return
    p_leaves, o_leaves = jax.tree.leaves(params), jax.tree.leaves(opt_state)
    meta = {"step": int(step), "param_names": param_names(params),
            "digest": digest(p_leaves + o_leaves)}
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(p_leaves), opt_state=ocp.args.StandardSave(o_leaves),
        meta=ocp.args.JsonSave(meta)))
    mngr.wait_until_finished()


def _abstract(leaves: list[jax.Array]) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for x in leaves]


def _order_by_name(saved: list[str], wanted: list[str], step: int) -> list[int]:
    """For each wanted path, its index among the saved ones; a one-line error on a mismatch."""
    if sorted(saved) != sorted(wanted):
        missing = [n for n in wanted if n not in set(saved)][:3]
        extra = [n for n in saved if n not in set(wanted)][:3]
        raise CheckpointError(
            f"checkpoint {step} was saved from another model: the config's model has "
            f"{missing or 'nothing'} that the checkpoint lacks, and the checkpoint has "
            f"{extra or 'nothing'} that the model lacks (first differing paths); evaluate or "
            f"resume with the run's own config")
    position = {name: i for i, name in enumerate(saved)}
    return [position[name] for name in wanted]


def restore(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any | None = None):
    """Restores checkpoint `step` into the structure (and shardings) of `params` / `opt_state`.

    Parameters are matched by path; with `opt_state=None` only the parameters are read
    (evaluation). Raises `CheckpointError` (one line) for another model's checkpoint, an
    unreadable one, or one whose digest or finiteness does not verify.
    """
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # orbax raises many kinds for missing or truncated files
        raise CheckpointError(f"checkpoint {step} is unreadable ({type(e).__name__})") from None
    p_leaves, p_def = jax.tree.flatten(params)
    order = _order_by_name(meta.get("param_names", param_names(params)), param_names(params),
                           step)
    saved_abstract = [None] * len(p_leaves)
    for i, j in enumerate(order):
        saved_abstract[j] = _abstract([p_leaves[i]])[0]
    items = {"params": ocp.args.StandardRestore(saved_abstract)}
    if opt_state is not None:
        o_leaves, o_def = jax.tree.flatten(opt_state)
        items["opt_state"] = ocp.args.StandardRestore(_abstract(o_leaves))
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:
        raise CheckpointError(f"checkpoint {step} is unreadable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    saved_params = list(restored["params"])
    saved_opt = list(restored["opt_state"]) if opt_state is not None else []
    if "digest" in meta and opt_state is not None and digest(saved_params + saved_opt) != \
            meta["digest"]:
        raise CheckpointError(f"checkpoint {step} does not match its digest (corrupt data)")
    if not all_finite(saved_params + saved_opt):
        raise CheckpointError(f"checkpoint {step} holds non-finite values")
    new_params = jax.tree.unflatten(p_def, [saved_params[j] for j in order])
    if opt_state is None:
        return new_params, None
    return new_params, jax.tree.unflatten(o_def, saved_opt)


def restore_newest_good(mngr: ocp.CheckpointManager, params: Any, opt_state: Any,
                        log=print) -> tuple[int, Any, Any]:
    """Restores the newest checkpoint that verifies (`restore`), newest first.

    Returns `(step, params, opt_state)`, or `(0, params, opt_state)` unchanged when there is no
    checkpoint. Each checkpoint skipped as corrupt is reported in one line through `log`; a
    checkpoint of another model stops at once (older ones would not fit either).
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            new_params, new_opt = restore(mngr, step, params, opt_state)
        except CheckpointError as e:
            if "another model" in str(e):
                raise
            log(f"skipping checkpoint {step} in {mngr.directory}: {e}")
            continue
        return int(step), new_params, new_opt
    if mngr.all_steps():
        log(f"no checkpoint in {mngr.directory} verifies; starting from step 0")
    return 0, params, opt_state
