"""Orbax checkpoints of a training run: `workdir/checkpoints/<step>/{params,opt_state,meta}`.

Parameters and optimizer state are saved as flat lists of arrays; `meta` (JSON) records the step,
every parameter's path (`param_names`) and a SHA-256 digest of all saved bytes. Every restore
(training's resume, `eval.py`) goes through `restore`, which verifies what it reads:

- structure: the parameters are matched to the model by path, and each one's shape and dtype
  must be the model's (another model's checkpoint is `OtherModelError`, one line naming the
  first differing path or shape, never a silent load into the wrong layer);
- integrity: the metadata must name its step and hold a digest, the arrays must read, their
  digest must match and every value must be finite (else `CorruptCheckpoint`; a checkpoint
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
    """Array lists for params and opt_state, JSON for meta (also lets `item_metadata` read
    each array's shape and dtype without reading the array)."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in ("params", "opt_state"):
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


def _key_name(key) -> str:
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def param_names(params: Any) -> list[str]:
    """The dotted path of every leaf of a parameter tree, e.g. `classifier.kernel`."""
    return [".".join(_key_name(k) for k in path if _key_name(k) != "value")
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _host(x) -> np.ndarray:
    return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)


def digest(leaves: list) -> str:
    """SHA-256 over the dtype, shape and bytes of every array (the replicated host copy)."""
    h = hashlib.sha256()
    for leaf in leaves:
        x = _host(leaf)
        h.update(f"{x.dtype}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def all_finite(leaves: list) -> bool:
    """Whether every floating array holds only finite values."""
    return all(bool(np.isfinite(_host(x)).all())
               for x in leaves if jax.numpy.issubdtype(x.dtype, jax.numpy.floating))


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
    """Saves params, optimizer state, their paths and digest as checkpoint `step`.

    A step that already exists is an error, never skipped: training resumes from its newest
    verified checkpoint and sets newer corrupt ones aside, so no step it saves exists yet.
    A failed write raises `CheckpointError` (one line, `save_failure_message`) and removes
    the partial folder.
    """
    directory = os.fspath(mngr.directory)
    if step in mngr.all_steps():
        raise CheckpointError(f"checkpoint {step} already exists in {directory}; it was not "
                              f"overwritten")
    p_leaves, o_leaves = jax.tree.leaves(params), jax.tree.leaves(opt_state)
    meta = {"step": int(step), "param_names": param_names(params),
            "digest": digest(p_leaves + o_leaves)}

    def write() -> None:
        mngr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(p_leaves), opt_state=ocp.args.StandardSave(o_leaves),
            meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()

    _, failure = _held(write)
    if failure is not None:
        _remove_partial_save(directory, step)
        mngr.reload()
        raise CheckpointError(save_failure_message(directory, step, failure, mngr.latest_step()))


# ----------------------------------------------------------------------------- restoring


def _abstract(x: jax.Array) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)


def _read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    """The checkpoint's `meta` JSON, checked to name this step, its parameters and a digest."""
    meta, failure = _held(lambda: mngr.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"])
    if failure is not None:
        raise CorruptCheckpoint(f"checkpoint {step} has unreadable metadata ({failure.line})",
                                "unreadable")
    if not isinstance(meta, dict) or "digest" not in meta:
        raise CorruptCheckpoint(f"checkpoint {step} has no digest in its metadata, so what it "
                                f"holds cannot be verified", "no-digest")
    names = meta.get("param_names")
    if (meta.get("step") != step or not isinstance(meta["digest"], str)
            or not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise CorruptCheckpoint(f"checkpoint {step} has malformed metadata (its step, digest "
                                f"or parameter names)", "bad-metadata")
    return meta


def _order_by_name(saved: list[str], wanted: list[str], step: int) -> list[int]:
    """For each wanted path, its index among the saved ones; a one-line error on a mismatch
    (a path renamed, missing or extra, whatever the counts)."""
    if sorted(saved) != sorted(wanted):
        missing = [n for n in wanted if n not in set(saved)][:3]
        extra = [n for n in saved if n not in set(wanted)][:3]
        raise OtherModelError(
            f"checkpoint {step} was saved from another model: the config's model has "
            f"{', '.join(missing) or 'nothing'} that the checkpoint lacks, and the checkpoint "
            f"has {', '.join(extra) or 'nothing'} that the model lacks (first differing paths); "
            f"evaluate or resume with the run's own config")
    position = {name: i for i, name in enumerate(saved)}
    return [position[name] for name in wanted]


def _saved_arrays(mngr: ocp.CheckpointManager, step: int) -> dict[str, list]:
    """Shape and dtype of every saved array (`item_metadata`, without reading the data)."""
    def read() -> dict[str, list]:
        found = mngr.item_metadata(step)
        return {item: [(tuple(m.shape), np.dtype(m.dtype)) for m in found[item]]
                for item in ("params", "opt_state")}

    arrays, failure = _held(read)
    if failure is not None:
        raise CorruptCheckpoint(f"checkpoint {step} has unreadable array metadata "
                                f"({failure.line})", "unreadable")
    return arrays


def _describe(shape: tuple, dtype) -> str:
    return f"{tuple(shape)} {np.dtype(dtype).name}"


def _check_params_fit(saved: list, p_leaves: list, order: list[int], names: list[str],
                      step: int) -> None:
    """Each wanted parameter's shape and dtype equal the saved one of its name."""
    if len(saved) != len(p_leaves):
        raise CorruptCheckpoint(f"checkpoint {step} holds {len(saved)} parameter arrays but "
                                f"its metadata names {len(p_leaves)}", "bad-metadata")
    for i, j in enumerate(order):
        want = (tuple(p_leaves[i].shape), np.dtype(p_leaves[i].dtype))
        if saved[j] != want:
            raise OtherModelError(
                f"checkpoint {step} was saved from another model: the checkpoint's parameter "
                f"{names[i]} has shape {_describe(*saved[j])}, the config's model wants "
                f"{_describe(*want)}; evaluate or resume with the run's own config")


def _check_opt_fits(saved: list, o_leaves: list, step: int) -> None:
    """The caller's optimizer state has the saved one's arrays (e.g. momentum on in both)."""
    want = [(tuple(x.shape), np.dtype(x.dtype)) for x in o_leaves]
    if saved != want:
        raise OtherModelError(
            f"checkpoint {step} was saved with another optimizer: its state holds "
            f"{len(saved)} arrays, the config's optimizer wants {len(want)}"
            f"{'' if len(saved) != len(want) else ' of other shapes'}; resume with the run's "
            f"own config")


def restore(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any | None = None):
    """Restores and verifies checkpoint `step` into the structure (and shardings) of `params`
    and `opt_state`: the one function every restore goes through.

    The optimizer state is always read (the digest covers it); with `opt_state=None`
    (evaluation) it is read in the saved shapes, verified, and dropped. Returns
    `(params, opt_state or None)`.

    Raises:
      OtherModelError: parameter paths, shapes or dtypes (or the optimizer state) differ from
        the given ones.
      CorruptCheckpoint: unreadable, without a digest, not matching its digest, or holding
        non-finite values.
    """
    meta = _read_meta(mngr, step)
    p_leaves, p_def = jax.tree.flatten(params)
    names = param_names(params)
    order = _order_by_name(meta["param_names"], names, step)
    saved = _saved_arrays(mngr, step)
    _check_params_fit(saved["params"], p_leaves, order, names, step)
    params_target = [None] * len(p_leaves)
    for i, j in enumerate(order):
        params_target[j] = _abstract(p_leaves[i])
    if opt_state is not None:
        o_leaves, o_def = jax.tree.flatten(opt_state)
        _check_opt_fits(saved["opt_state"], o_leaves, step)
        opt_target = [_abstract(x) for x in o_leaves]
    else:
        sharding = p_leaves[0].sharding
        opt_target = [jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
                      for shape, dtype in saved["opt_state"]]
    restored, failure = _held(lambda: mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params_target),
        opt_state=ocp.args.StandardRestore(opt_target))))
    if failure is not None:
        raise CorruptCheckpoint(f"checkpoint {step} is unreadable ({failure.line})", "unreadable")
    saved_params, saved_opt = list(restored["params"]), list(restored["opt_state"])
    if digest(saved_params + saved_opt) != meta["digest"]:
        raise CorruptCheckpoint(f"checkpoint {step} does not match its digest (its data changed "
                                f"after it was saved)", "digest")
    if not all_finite(saved_params + saved_opt):
        raise CorruptCheckpoint(f"checkpoint {step} holds non-finite values", "non-finite")
    new_params = jax.tree.unflatten(p_def, [saved_params[j] for j in order])
    if opt_state is None:
        return new_params, None
    return new_params, jax.tree.unflatten(o_def, saved_opt)


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
