"""A run's workdir: the names of the files a run writes there, and the lock of a live run.

The names below are the only spelling of a run's files in the codebase (`read_config` reads
the config a run recorded, naming the file when it is missing or damaged). The lock
(`workdir/.lock`, the kernel's `flock`) marks a workdir as used by a live run.

`train.py` holds it for the whole run (`workdir_lock`) and writes its process id into the file,
so that anyone else can say which process holds it. The sweep runner asks `live_holder`
before it moves or restarts a point, and moves a run aside only while holding the lock itself
(`held_or_none`), so a live run is never moved under its feet. The kernel drops the lock when
its process dies (even by `kill -9`), so a dead run leaves no lock behind. Light on purpose:
no JAX, so the sweep runner imports it cheaply.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"  # the resolved config, written once every check has passed
CHECKPOINTS_DIR = "checkpoints"  # orbax, one folder per step
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step or evaluation
RESULTS_FILE = "results.json"  # written last: a finished run
IMAGES_DIR = "images"  # pictures of the transformers at each evaluation
#: What a run leaves in its workdir once it has started (config.json is written after every
#: check that can refuse it); a workdir without any of them holds no run.
RUN_FILES = (CONFIG_FILE, CHECKPOINTS_DIR, METRICS_FILE, RESULTS_FILE)


def read_config(workdir: str) -> dict:
    """The resolved config a run recorded in `workdir/config.json`, as a dict; a missing or
    damaged file is a one-line ValueError naming it."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist: point --workdir at a run's folder (train.py "
                         f"writes it there)")
    repair = ("so the run's config is unknown; restore the file (a finished run's "
              "results.json holds a copy under \"config\") or use another --workdir")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({e}), {repair}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not a config, {repair}")
    return config


def holds_a_run(workdir: str) -> bool:
    """Whether `workdir` holds anything of a started run (`RUN_FILES`)."""
    return any(os.path.exists(os.path.join(workdir, name)) for name in RUN_FILES)


def _read_pid(f) -> int | None:
    f.seek(0)
    text = f.read().strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def held_or_none(workdir: str) -> Iterator[int | None]:
    """Takes the workdir's lock if it is free, without waiting, and holds it for the block.

    Yields None when this process holds the lock (the folder may then be moved: the open file
    moves with it), else the id of the live process that holds it (0 when it wrote none).
    A folder without a lock file yields None and holds no lock (nothing can be using it).
    """
    path = os.path.join(workdir, LOCK_FILE)
    try:
        f = open(path)
    except FileNotFoundError:
        yield None
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(f)
            yield 0 if pid is None else pid
            return
        try:
            yield None
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def live_holder(workdir: str) -> int | None:
    """The id of the live process holding `workdir`'s lock (0 if it wrote none), else None."""
    with held_or_none(workdir) as holder:
        return holder


def describe_holder(pid: int) -> str:
    """The holder of a lock for a message: its process id, or 0 when it wrote none."""
    return f"process {pid}" if pid else "a process that wrote no id"


@contextlib.contextmanager
def workdir_lock(workdir: str, enabled: bool = True) -> Iterator[None]:
    """Holds an exclusive lock on `workdir/.lock` for the block, with this process's id in it;
    a second run on a busy workdir is refused at once (one-line ValueError naming the holder).

    A block that fails before the run wrote anything (`holds_a_run` is False: e.g. a config or
    data check refused it) leaves no lock file, nor the workdir if the block created it.
    """
    if not enabled:
        yield
        return
    created_dir = not os.path.isdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    created_lock = not os.path.exists(path)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(f)
            raise ValueError(f"another run is using {workdir} ({describe_holder(pid or 0)}); "
                             f"wait for it to finish or choose another --workdir") from None
        try:
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        except BaseException:
            if created_lock and not holds_a_run(workdir):
                _remove_refused(workdir, path, created_dir)
            raise
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_refused(workdir: str, path: str, created_dir: bool) -> None:
    """Removes the lock file (still held, so no other run can be inside) and, if this run made
    it and it is now empty, the workdir."""
    with contextlib.suppress(OSError):
        os.remove(path)
        if created_dir and not os.listdir(workdir):
            os.rmdir(workdir)
