"""Orbax checkpoints of a training run: `workdir/checkpoints/<step>/{params,opt_state,meta}`.

The model state and the optimizer state are saved as pytrees (orbax's `StandardSave`) and
restored by key into the abstract target (`jax.ShapeDtypeStruct`s with the caller's shardings).
`meta` (JSON) records the step and a SHA-256 digest of every array's path, dtype, shape and
bytes. Every restore (training's resume, `eval.py`) goes through `restore`, which checks what
orbax does not:

- structure: the saved trees' paths, shapes and dtypes (orbax's metadata, read before any
  array) must be the target's; another model's checkpoint is `OtherModelError`, one line naming
  the first differing paths or shapes, never a load into the wrong layer;
- integrity: the metadata must name its step and hold a digest, the arrays must read, match the
  digest and be finite, the optimizer state's included (else `CorruptCheckpoint`; a checkpoint
  without a digest is unverified and counts as corrupt).

`restore_newest_good` (training's resume) moves each corrupt checkpoint aside, to
`checkpoints/<step>.corrupt-<reason>` (kept for inspection; orbax does not read it as a step),
and falls back to the newest checkpoint that verifies, so the run saves those steps anew.
`save` reports a failed write (a full disk) in one line, holding back orbax's tracebacks.
"""
from __future__ import annotations

import errno
import gc
import hashlib
import io
import logging
import os
import shutil
import sys
import threading
import time
from typing import Any, Callable, NamedTuple, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from stn.experiments import workdir as workdir_lib

T = TypeVar("T")
CORRUPT_SUFFIX = ".corrupt-"  # checkpoints/<step>.corrupt-<reason>: set aside, not a step
ITEMS = ("params", "opt_state")  # the two pytrees of a checkpoint, beside its `meta`


class CheckpointError(ValueError):
    """A checkpoint that cannot be used or written (always a one-line message)."""


class OtherModelError(CheckpointError):
    """The checkpoint holds another model's parameters (paths, shapes or optimizer differ)."""


class CorruptCheckpoint(CheckpointError):
    """The checkpoint fails verification; `reason` is a short name for its folder."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), workdir_lib.CHECKPOINTS_DIR)


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Pytrees for params and opt_state, JSON for meta (also lets `item_metadata` read each
    array's shape and dtype without reading the array)."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in ITEMS:
        registry.add(item, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(item, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    registry.add("meta", ocp.args.JsonSave, ocp.JsonCheckpointHandler)
    registry.add("meta", ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


def manager(workdir: str, *, max_to_keep: int | None = 3, read_only: bool = False
            ) -> ocp.CheckpointManager:
    """A synchronous CheckpointManager for `workdir/checkpoints` (saves finish before return)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 handler_registry=_handler_registry())


def path_name(path) -> str:
    """The dotted name of a tree path, e.g. `classifier.kernel` (`jax.tree_util.keystr`'s
    simple form; the `value` inside an `nnx.Variable` is left out). A namedtuple's field and the
    dict key orbax saves it under, or a list index and its string, get the same name."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator=".").removesuffix(".value")


def named_leaves(tree: Any) -> dict[str, Any]:
    """`{path_name: leaf}` of every leaf of `tree`, in its flattening order."""
    return {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _host(x) -> np.ndarray:
    return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


def digest(tree: Any) -> str:
    """SHA-256 over the path, dtype, shape and bytes of every array of `tree` (the replicated
    host copy), in the order of their paths (so any container with the same paths agrees)."""
    h = hashlib.sha256()
    for name, leaf in sorted(named_leaves(tree).items()):
        x = _host(leaf)
        h.update(f"{name}|{x.dtype}|{x.shape}|".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def first_non_finite(tree: Any) -> str | None:
    """The path of the first floating array of `tree` holding a NaN or infinity, else None."""
    for name, leaf in named_leaves(tree).items():
        x = _host(leaf)
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
            return name
    return None


# ----------------------------------------------------------------------------- saving


def _join_threads_started_since(before: set, timeout: float = 30.0) -> None:
    """Waits for the threads started since `before` (orbax's writers and readers): after a
    failure they still log their own tracebacks, which must land while output is held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # again: a joined thread may have started another
        running = [t for t in set(threading.enumerate()) - before
                   if t is not threading.current_thread() and t.is_alive()]
        if not running:
            return
        for thread in running:
            try:  # orbax's threads re-raise their own error from join(): it is known already
                thread.join(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001
                pass


class Failure(NamedTuple):
    """What went wrong in an orbax call, kept as text (the exception itself, with its
    traceback and orbax's coroutines, is dropped while orbax's output is still held)."""

    line: str  # "Type: first line"
    disk_full: bool


def _is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` (or an error it wraps) is ENOSPC / EDQUOT, as an OSError or in the text
    of tensorstore's error (`No space left on device [os_error_code='28']`)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException, limit: int = 160) -> str:
    """`Type: first line` of an error, without tensorstore's appended spec dump."""
    text = str(error).strip()
    line = text.splitlines()[0].split(" See full TensorStore details")[0] if text else ""
    return f"{type(error).__name__}: {line[:limit]}"


def _held(action: Callable[[], T]) -> tuple[T | None, Failure | None]:
    """Runs `action()` holding what orbax prints or logs meanwhile: `(value, None)`, its
    output then passed on, or `(None, Failure)`, its output dropped.

    A failed orbax write or read makes each of its worker threads print its own traceback
    (about 235 lines on a full disk) and leaves coroutines whose clean-up prints more; callers
    report the failure in one line instead. So on a failure the threads started meanwhile are
    joined and the garbage collected before the output is released.
    """
    held_text, held_records = io.StringIO(), []
    absl_logger = logging.getLogger("absl")

    def hold(record: logging.LogRecord) -> bool:
        held_records.append(record)
        return False

    threads_before = set(threading.enumerate())
    previous_stderr, sys.stderr = sys.stderr, held_text
    absl_logger.addFilter(hold)
    try:
        try:
            return_value, failure = action(), None
        except Exception as e:  # orbax and tensorstore raise many kinds
            return_value, failure = None, Failure(_first_line(e), _is_disk_full(e))
        if failure is not None:
            _join_threads_started_since(threads_before)
            gc.collect()
    finally:
        sys.stderr = previous_stderr
        absl_logger.removeFilter(hold)
    if failure is None:  # nothing is lost from a good save or restore
        previous_stderr.write(held_text.getvalue())
        for record in held_records:
            absl_logger.handle(record)
    return return_value, failure


def save_failure_message(directory: str, step: int, failure: Failure,
                         newest: int | None) -> str:
    """One line: which checkpoint could not be written, why, what is kept, what to do."""
    kept = (f"the newest saved checkpoint is step {newest}" if newest is not None
            else "no checkpoint has been saved yet")
    if failure.disk_full:
        return (f"could not save checkpoint {step} in {directory}: the disk is full (no space "
                f"left on device); {kept}; free space on that disk and rerun the same command "
                f"to resume")
    return (f"could not save checkpoint {step} in {directory} ({failure.line}); {kept}; "
            f"check that the folder is writable and has space, and rerun the same command to "
            f"resume")


def _remove_partial_save(directory: str, step: int) -> None:
    """Deletes the temporary folder a failed save leaves (`<step>.orbax-checkpoint-tmp*`), so a
    full disk gets its space back; the finished checkpoints are untouched."""
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(f"{step}.orbax-checkpoint-tmp"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def save(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any) -> None:
    """Saves the model and optimizer states (pytrees) and their digest as checkpoint `step`.

    A step that already exists is an error, never skipped: training resumes from its newest
    verified checkpoint and sets newer corrupt ones aside, so no step it saves exists yet.
    A failed write raises `CheckpointError` (one line, `save_failure_message`) and removes
    the partial folder.
    """
    directory = os.fspath(mngr.directory)
    if step in mngr.all_steps():
        raise CheckpointError(f"checkpoint {step} already exists in {directory}; it was not "
                              f"overwritten")
    meta = {"step": int(step), "digest": digest({"params": params, "opt_state": opt_state})}

    def write() -> None:
        saved = mngr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
        if not saved:  # orbax skips a step below its newest one: never silently
            raise RuntimeError(f"orbax did not save it (the newest step is {mngr.latest_step()})")

    _, failure = _held(write)
    if failure is not None:
        _remove_partial_save(directory, step)
        mngr.reload()
        raise CheckpointError(save_failure_message(directory, step, failure, mngr.latest_step()))


# ----------------------------------------------------------------------------- restoring


def _read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    """The checkpoint's `meta` JSON, checked to name this step and hold a digest."""
    meta, failure = _held(lambda: mngr.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"])
    if failure is not None:
        raise CorruptCheckpoint(f"checkpoint {step} has unreadable metadata ({failure.line})",
                                "unreadable")
    if not isinstance(meta, dict) or "digest" not in meta:
        raise CorruptCheckpoint(f"checkpoint {step} has no digest in its metadata, so what it "
                                f"holds cannot be verified", "no-digest")
    if meta.get("step") != step or not isinstance(meta["digest"], str):
        raise CorruptCheckpoint(f"checkpoint {step} has malformed metadata (its step or "
                                f"digest)", "bad-metadata")
    return meta


def _saved_trees(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    """Orbax's metadata of each saved pytree (each array's shape and dtype, by path), read
    without reading the arrays."""
    def read() -> dict[str, Any]:
        found = mngr.item_metadata(step)
        if any(found[item] is None for item in ITEMS):
            raise ValueError("an item has no metadata")
        return {item: found[item] for item in ITEMS}

    trees, failure = _held(read)
    if failure is not None:
        raise CorruptCheckpoint(f"checkpoint {step} has unreadable array metadata "
                                f"({failure.line})", "unreadable")
    return trees


def _signature(tree: Any) -> dict[str, tuple]:
    """`{path: (shape, dtype)}` of a tree of arrays, abstract arrays or orbax metadata."""
    return {name: (tuple(x.shape), np.dtype(x.dtype)) for name, x in named_leaves(tree).items()}


def _describe(shape: tuple, dtype) -> str:
    return f"{tuple(shape)} {np.dtype(dtype).name}"


def _check_fits(saved: Any, target: Any, step: int, *, owner: str, what: str) -> None:
    """`target` has the saved tree's paths, and each path the saved shape and dtype; else a
    one-line `OtherModelError` (`owner`: "model" or "optimizer"; `what`: its arrays' noun)."""
    have, want = _signature(saved), _signature(target)
    origin = f"checkpoint {step} was saved {'from' if owner == 'model' else 'with'} another {owner}"
    missing, extra = [n for n in want if n not in have], [n for n in have if n not in want]
    if missing or extra:
        raise OtherModelError(
            f"{origin}: the config's {owner} has {', '.join(missing[:3]) or 'nothing'} that the "
            f"checkpoint lacks, and the checkpoint has {', '.join(extra[:3]) or 'nothing'} that "
            f"the {owner} lacks (first differing paths); evaluate or resume with the run's own "
            f"config")
    for name, shape_dtype in want.items():
        if have[name] != shape_dtype:
            raise OtherModelError(
                f"{origin}: the checkpoint's {what} {name} has shape {_describe(*have[name])}, "
                f"the config's {owner} wants {_describe(*shape_dtype)}; evaluate or resume with "
                f"the run's own config")


def _abstract(tree: Any, sharding=None) -> Any:
    """The restore target: each leaf's shape and dtype, with `sharding` or the leaf's own."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=x.sharding if sharding is None else sharding), tree)


def restore(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any | None = None):
    """Restores and verifies checkpoint `step` into the structure (and shardings) of `params`
    and `opt_state`: the one function every restore goes through.

    The optimizer state is always read (the digest covers it); with `opt_state=None`
    (evaluation) it is read in its saved structure, verified, and dropped. Returns
    `(params, opt_state or None)`.

    Raises:
      OtherModelError: parameter paths, shapes or dtypes (or the optimizer state's) differ from
        the given ones.
      CorruptCheckpoint: unreadable, without a digest, not matching its digest, or holding
        non-finite values.
    """
    meta = _read_meta(mngr, step)
    saved = _saved_trees(mngr, step)
    _check_fits(saved["params"], params, step, owner="model", what="parameter")
    if opt_state is not None:
        _check_fits(saved["opt_state"], opt_state, step, owner="optimizer", what="array")
        opt_target = _abstract(opt_state)
    else:
        opt_target = _abstract(saved["opt_state"], jax.tree.leaves(params)[0].sharding)
    restored, failure = _held(lambda: mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params)),
        opt_state=ocp.args.StandardRestore(opt_target))))
    if failure is not None:
        raise CorruptCheckpoint(f"checkpoint {step} is unreadable ({failure.line})", "unreadable")
    trees = {item: restored[item] for item in ITEMS}
    if digest(trees) != meta["digest"]:
        raise CorruptCheckpoint(f"checkpoint {step} does not match its digest (its data changed "
                                f"after it was saved)", "digest")
    bad = first_non_finite(trees)
    if bad is not None:
        raise CorruptCheckpoint(f"checkpoint {step} holds non-finite values (first in {bad})",
                                "non-finite")
    return trees["params"], trees["opt_state"] if opt_state is not None else None


def _sync(name: str) -> None:
    """Every process waits here (multi-host), so all see a folder one process moved."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def set_aside(mngr: ocp.CheckpointManager, step: int, reason: str) -> str:
    """Moves checkpoint `step` to `checkpoints/<step>.corrupt-<reason>[.N]` (kept for
    inspection, no longer a step orbax lists) and returns that path."""
    directory = os.fspath(mngr.directory)
    target = os.path.join(directory, f"{step}{CORRUPT_SUFFIX}{reason}")
    base, n = target, 1
    while os.path.exists(target):
        n += 1
        target = f"{base}.{n}"
    _sync(f"stn_set_aside_name_{step}")  # every process has chosen the name before the move
    if jax.process_index() == 0:
        os.rename(os.path.join(directory, str(step)), target)
    _sync(f"stn_set_aside_{step}")
    mngr.reload()
    return target


def _print_now(line: str) -> None:
    print(line, flush=True)


def restore_newest_good(mngr: ocp.CheckpointManager, params: Any, opt_state: Any,
                        log=_print_now) -> tuple[int, Any, Any]:
    """Restores the newest checkpoint that verifies (`restore`), newest first.

    Each checkpoint that fails verification is moved aside (`set_aside`) and reported in one
    line through `log`, so it is never reused or left as the newest: the run trains from the
    older one and saves those steps anew. Returns `(step, params, opt_state)`, or
    `(0, params, opt_state)` unchanged when no checkpoint verifies. Another model's checkpoint
    (`OtherModelError`) stops at once (older ones would not fit either).
    """
    set_aside_any = False
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            new_params, new_opt = restore(mngr, step, params, opt_state)
        except CorruptCheckpoint as e:
            kept = set_aside(mngr, step, e.reason)
            set_aside_any = True
            log(f"{e}: moved aside to {kept} (kept for inspection, not used)")
            continue
        return int(step), new_params, new_opt
    if set_aside_any:
        log(f"no checkpoint in {mngr.directory} verifies; starting from step 0")
    return 0, params, opt_state
