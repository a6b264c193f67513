"""Sweeps as data, and a runner that launches each point as an ordinary `train.py` process.

A sweep file (e.g. `configs/sweeps/table1.py`) defines `get_sweep(arg=None) -> list[dict]`; each
point is plain data:

    {"name": "rts-st_cnn-affine-s0",                 # unique; the run's folder under --workdir
     "config": "configs/mnist.py:rts,st_cnn,affine",  # the --config of train.py
     "overrides": {"seed": 0, "train.steps": 3000}}   # each becomes --config.KEY=VALUE

Run a sweep (see docs/sweeps.md):

    python -m stn.sweeps --sweep=configs/sweeps/table1.py:seeds=3 --workdir=runs/table1 \
        [--parallel=N] [--dry_run] [--emit=FILE] [--filter=REGEX]

Every point becomes `python train.py --config=CONFIG --workdir=WORKDIR/NAME --config.K=V ...`,
run as an argv list (never through a shell), its output in `WORKDIR/NAME/log.txt`. A point whose
`results.json` already exists is skipped, so re-running the same command resumes a sweep.
"""
from __future__ import annotations

import concurrent.futures
import datetime
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"
# A point's name is a folder name: keep it portable and shell-safe.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


# --------------------------------------------------------------------------------------------
# Building sweeps.


def product(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Cartesian product of named axes: `product(a=[1, 2], b="xy")` -> 4 dicts, last axis fastest."""
    names = list(axes)
    values = [list(v) for v in axes.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def zip_axes(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Zip named axes of equal length: `zip_axes(a=[1, 2], b=[3, 4])` -> [{a:1,b:3}, {a:2,b:4}]."""
    values = [list(v) for v in axes.values()]
    lengths = {len(v) for v in values}
    if len(lengths) > 1:
        raise ValueError(f"zip_axes needs axes of equal length, got lengths "
                         f"{ {k: len(v) for k, v in zip(axes, values)} }")
    return [dict(zip(axes, combo)) for combo in zip(*values)]


def point(name: str, config: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One sweep point as plain data (validated, so a bad sweep file fails before anything runs)."""
    p = {"name": name, "config": config, "overrides": dict(overrides or {})}
    validate_point(p)
    return p


# --------------------------------------------------------------------------------------------
# Loading and checking sweep files.


def validate_point(p: Mapping[str, Any]) -> None:
    """Raise ValueError unless `p` is {"name": str, "config": str, "overrides": {dotted: scalar}}."""
    if not isinstance(p, Mapping) or not {"name", "config"} <= set(p):
        raise ValueError(f"a sweep point must be a dict with 'name' and 'config', got {p!r}")
    extra = set(p) - {"name", "config", "overrides"}
    if extra:
        raise ValueError(f"sweep point {p.get('name')!r}: unexpected keys {sorted(extra)}")
    if not isinstance(p["name"], str) or not _NAME_RE.match(p["name"]):
        raise ValueError(f"sweep point name must match {_NAME_RE.pattern} (it is a folder name), "
                         f"got {p['name']!r}")
    if not isinstance(p["config"], str) or not p["config"]:
        raise ValueError(f"sweep point {p['name']!r}: 'config' must be a config path[:arg], "
                         f"got {p['config']!r}")
    overrides = p.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise ValueError(f"sweep point {p['name']!r}: 'overrides' must be a dict, got "
                         f"{type(overrides).__name__}")
    for key, value in overrides.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"sweep point {p['name']!r}: override key must be a dotted config "
                             f"field like 'train.steps', got {key!r}")
        if not isinstance(value, (bool, int, float, str)):
            raise ValueError(f"sweep point {p['name']!r}: override {key} must be a bool, int, "
                             f"float or str, got {type(value).__name__}")


def validate_sweep(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check every point and that names are unique; returns the points as plain dicts."""
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError(f"get_sweep() must return a non-empty list of points, got {points!r:.80}")
    seen: set[str] = set()
    out = []
    for p in points:
        validate_point(p)
        if p["name"] in seen:
            raise ValueError(f"sweep point name {p['name']!r} appears twice; names must be unique")
        seen.add(p["name"])
        out.append({"name": p["name"], "config": p["config"],
                    "overrides": dict(p.get("overrides", {}))})
    return out


def load_module(path: str | os.PathLike) -> Any:
    """Import a Python file by its path (sweep files are files, like configs, not packages)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {str(path)!r} not found (expected path/to/sweep.py[:arg])")
    module_spec = importlib.util.spec_from_file_location(f"_stn_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def data_source(value: str) -> str:
    """A data source from a sweep argument: a bare folder means `idx:FOLDER`, else kept as is."""
    return value if value.split(":", 1)[0] in ("idx", "tfds", "sample") else f"idx:{value}"


def load_sweep(spec: str) -> list[dict[str, Any]]:
    """Load `path/to/sweep.py[:arg]` by path (like a config file) and return its checked points."""
    path, sep, arg = spec.partition(".py:")
    path = path + ".py" if sep else spec
    arg = arg if sep else None
    module = load_module(path)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"sweep file {path!r} defines no get_sweep(arg=None)")
    return validate_sweep(module.get_sweep(arg))


def select(points: Sequence[dict[str, Any]], pattern: str | None) -> list[dict[str, Any]]:
    """The points whose name matches the regular expression `pattern` (all if None or empty)."""
    if not pattern:
        return list(points)
    regex = re.compile(pattern)
    return [p for p in points if regex.search(p["name"])]


# --------------------------------------------------------------------------------------------
# Commands.


def format_value(value: bool | int | float | str) -> str:
    """A config override value as text that `--config.KEY=` parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # repr round-trips exactly
    return str(value)


def point_command(p: Mapping[str, Any], workdir: str | os.PathLike, *,
                  python: str = sys.executable, train_script: str = "train.py") -> list[str]:
    """The argv list that runs one point: python train.py --config=... --workdir=... --config.K=V."""
    argv = [python, train_script, f"--config={p['config']}",
            f"--workdir={point_dir(p, workdir)}"]
    argv += [f"--config.{k}={format_value(v)}" for k, v in p.get("overrides", {}).items()]
    return argv


def point_dir(p: Mapping[str, Any], workdir: str | os.PathLike) -> Path:
    """The folder of one point's run: WORKDIR/NAME (absolute, so the cwd of a scheduler is free)."""
    return Path(workdir).absolute() / p["name"]


def is_finished(run_dir: str | os.PathLike) -> bool:
    """True when `run_dir/results.json` exists and parses (a half-written file means re-run)."""
    path = Path(run_dir) / RESULTS_FILE
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Running.


def run_point(argv: Sequence[str], run_dir: Path, *, env: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
    """Run one point's argv with its output appended to run_dir/log.txt; returns its outcome.

    A point counts as done only if the process exits 0 *and* wrote results.json.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_FILE
    start = time.time()
    with open(log_path, "a") as log:
        log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"{shlex.join(argv)}\n")
        log.flush()
        try:
            returncode = subprocess.run(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=dict(env) if env else None,
                                        check=False).returncode
        except OSError as e:  # e.g. the python executable does not exist
            log.write(f"# could not start: {e}\n")
            returncode = -1
    seconds = time.time() - start
    finished = returncode == 0 and is_finished(run_dir)
    outcome = {"name": run_dir.name, "returncode": returncode, "seconds": seconds,
               "log": str(log_path), "ok": finished}
    if finished:
        outcome["test_error"] = json.loads((run_dir / RESULTS_FILE).read_text()).get("test_error")
    elif returncode == 0:
        outcome["error"] = f"exited 0 but wrote no {RESULTS_FILE}"
    return outcome


def child_env(parallel: int) -> dict[str, str]:
    """Environment of the training processes.

    With several processes on one accelerator, JAX's default of pre-allocating most of the GPU
    memory in each process would make all but the first fail; allocate on demand instead unless
    the user chose otherwise.
    """
    env = dict(os.environ)
    if parallel > 1:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


def run_sweep(points: Sequence[dict[str, Any]], workdir: str | os.PathLike, *, parallel: int = 1,
              python: str = sys.executable, train_script: str = "train.py",
              log=print) -> dict[str, Any]:
    """Run every unfinished point, `parallel` at a time; a failure does not stop the others.

    Returns {"done": [...], "skipped": [names], "failed": [...]} where done/failed hold the
    outcomes of `run_point`.
    """
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    skipped = [p["name"] for p in points if is_finished(point_dir(p, workdir))]
    todo = [p for p in points if p["name"] not in set(skipped)]
    if skipped:
        log(f"skipping {len(skipped)} finished point(s) (results.json exists)")
    log(f"running {len(todo)} point(s), {parallel} at a time, in {workdir}")
    env = child_env(parallel)
    summary: dict[str, Any] = {"done": [], "skipped": skipped, "failed": []}
    lock = threading.Lock()
    counter = itertools.count(1)

    def one(p: dict[str, Any]) -> None:
        argv = point_command(p, workdir, python=python, train_script=train_script)
        outcome = run_point(argv, point_dir(p, workdir), env=env)
        with lock:
            i = next(counter)
            if outcome["ok"]:
                summary["done"].append(outcome)
                err = outcome.get("test_error")
                err = f"test_error={err:.4f}" if isinstance(err, (int, float)) else ""
                log(f"[{i}/{len(todo)}] done   {p['name']} ({outcome['seconds']:.0f} s) {err}")
            else:
                summary["failed"].append(outcome)
                why = outcome.get("error", f"exit code {outcome['returncode']}")
                log(f"[{i}/{len(todo)}] FAILED {p['name']} ({why}); log: {outcome['log']}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in [pool.submit(one, p) for p in todo]:
            future.result()
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines saying what ran, what was skipped and where the failures' logs are."""
    lines = [f"sweep summary: {len(summary['done'])} done, {len(summary['skipped'])} skipped "
             f"(already finished), {len(summary['failed'])} failed"]
    for f in summary["failed"]:
        why = f.get("error", f"exit code {f['returncode']}")
        lines.append(f"  FAILED {f['name']}: {why}; log: {f['log']}")
    return "\n".join(lines)


def write_manifest(points: Sequence[dict[str, Any]], workdir: Path, commands: list[list[str]],
                   spec: str) -> None:
    """Record the expanded sweep in WORKDIR/sweep.json, so a results folder says how it was made."""
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = {"sweep": spec, "points": [dict(p, command=c) for p, c in zip(points, commands)]}
    (workdir / "sweep.json").write_text(json.dumps(manifest, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str]) -> int:
    """Expand --sweep, then print (--dry_run), write (--emit) or run its points."""
    from absl import flags  # the flags are defined in _define_flags, at import of __main__
    f = flags.FLAGS
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {list(argv[1:])}")
    points = select(load_sweep(f.sweep), f.filter)
    if not points:
        print(f"no point of {f.sweep} matches --filter={f.filter!r}")
        return 1
    workdir = Path(f.workdir).absolute()
    if f.dry_run or f.emit:
        pending = [p for p in points if not is_finished(point_dir(p, workdir))]
        commands = [point_command(p, workdir, python=f.python, train_script=f.train_script)
                    for p in pending]
        lines = [shlex.join(c) for c in commands]
        note = f"# {len(pending)} of {len(points)} point(s) to run ({len(points) - len(pending)} " \
               f"finished)"
        if f.emit:
            Path(f.emit).parent.mkdir(parents=True, exist_ok=True)
            Path(f.emit).write_text("".join(line + "\n" for line in lines))
            print(f"wrote {len(lines)} command(s) to {f.emit}")
        if f.dry_run:
            print(note)
            print("\n".join(lines))
        return 0
    commands = [point_command(p, workdir, python=f.python, train_script=f.train_script)
                for p in points]
    write_manifest(points, workdir, commands, f.sweep)
    summary = run_sweep(points, workdir, parallel=f.parallel, python=f.python,
                        train_script=f.train_script)
    print(format_summary(summary))
    return 1 if summary["failed"] else 0


def _define_flags() -> None:
    """The command-line flags (defined only when run as a program, not on import)."""
    from absl import flags
    flags.DEFINE_string("sweep", None, "Sweep file path[:arg], e.g. configs/sweeps/table1.py:seeds=3.")
    flags.DEFINE_string("workdir", None, "Folder for the runs; point NAME runs in WORKDIR/NAME.")
    flags.DEFINE_integer("parallel", 1, "How many training processes run at once.")
    flags.DEFINE_boolean("dry_run", False, "Print the commands of unfinished points; run nothing.")
    flags.DEFINE_string("emit", None, "Write one shell-quoted command per unfinished point to this "
                        "file (for a scheduler, e.g. a SLURM array); run nothing.")
    flags.DEFINE_string("filter", None, "Only points whose name matches this regular expression.")
    flags.DEFINE_string("python", sys.executable, "Python interpreter for the training processes.")
    flags.DEFINE_string("train_script", "train.py", "Training script each point runs.")
    flags.mark_flags_as_required(["sweep", "workdir"])


if __name__ == "__main__":
    from absl import app
    _define_flags()

    def _main(argv: Sequence[str]) -> None:
        try:
            sys.exit(main(argv))
        except ValueError as e:  # a bad sweep file or argument: one line, no traceback
            sys.exit(f"error: {e}")

    app.run(_main)
