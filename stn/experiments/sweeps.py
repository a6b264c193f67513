"""Sweeps as data, and a runner that launches each point as an ordinary `train.py` process.

A sweep file (e.g. `configs/sweeps/table1.py`) defines `get_sweep(arg=None) -> list[dict]`; each
point is plain data:

    {"name": "rts-st_cnn-affine-s0",                 # unique; the run's folder under --workdir
     "config": "configs/mnist.py:rts,st_cnn,affine",  # the --config of train.py
     "overrides": {"seed": 0, "train.steps": 3000}}   # each becomes --config.KEY=VALUE

Run a sweep (see docs/guides/sweeps.md):

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table1.py:seeds=3 --workdir=runs/table1 \
        [--parallel=N] [--dry_run] [--emit=FILE] [--filter=REGEX] [--rerun_changed]

Every point becomes `python .../train.py --config=CONFIG --workdir=WORKDIR/NAME --config.K=V ...`
(the train.py beside the `stn` package), run as an argv list (never through a shell), its output
in `WORKDIR/NAME/log.txt`. A point whose finished run has the point's config is skipped, so
re-running the same command resumes a sweep; a point whose existing run has another config is
refused (or, with --rerun_changed, its old run is moved aside and the point runs afresh). A
point whose folder is locked by a live run (stn.experiments.workdir) is never moved, restarted or marked
changed: it is refused in one line naming that process, and the sweep goes on with the others.
SIGTERM or Ctrl-C stops the running points as a direct SIGTERM would (they save a checkpoint)
and starts no new ones.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stn.experiments import config_compare
from stn.experiments import workdir as workdir_lib

RESULTS_FILE, CONFIG_FILE, CHECKPOINTS_DIR = (workdir_lib.RESULTS_FILE, workdir_lib.CONFIG_FILE,
                                               workdir_lib.CHECKPOINTS_DIR)
LOG_FILE = "log.txt"
#: The repository root: train.py and configs/ sit beside the `stn` package.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Exit status of a sweep stopped by a signal (as train.py's after SIGTERM/SIGINT).
STOPPED_EXIT = 130
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


def default_train_script() -> str:
    """The train.py beside the `stn` package (so the runner works from any directory)."""
    path = REPO_ROOT / "train.py"
    if not path.is_file():
        raise ValueError(f"train.py not found beside the stn package (looked for {path}); pass "
                         f"--train_script=PATH/TO/train.py")
    return str(path)


def locate_config(spec: str) -> str:
    """A point's `path.py[:arg]` as train.py can open it from the current directory.

    Kept as written when the file is there (commands stay as they were from the repository
    root); else taken relative to the repository root when the file is there; else unchanged,
    so train.py reports it.
    """
    path, sep, arg = spec.partition(":")
    if os.path.isfile(path) or os.path.isabs(path) or not (REPO_ROOT / path).is_file():
        return spec
    return str(REPO_ROOT / path) + sep + arg


def point_command(p: Mapping[str, Any], workdir: str | os.PathLike, *,
                  python: str = sys.executable, train_script: str | None = None,
                  train_flags: Sequence[str] = ()) -> list[str]:
    """The argv list that runs one point: python train.py --config=... --workdir=... --config.K=V,
    then `train_flags` (process settings of train.py that are not config fields, e.g.
    `--cpu_devices=2`)."""
    return [python, train_script or default_train_script(),
            f"--config={locate_config(p['config'])}", f"--workdir={point_dir(p, workdir)}",
            *config_compare.override_args(p.get("overrides", {})), *train_flags]


def point_dir(p: Mapping[str, Any], workdir: str | os.PathLike) -> Path:
    """The folder of one point's run: WORKDIR/NAME (absolute, so the cwd of a scheduler is free)."""
    return Path(workdir).absolute() / p["name"]


def _read_json(path: Path) -> Any:
    """The parsed file, or None when it is missing or does not parse (e.g. half-written)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_finished(run_dir: str | os.PathLike) -> bool:
    """True when `run_dir/results.json` exists and parses (a half-written file means re-run)."""
    return _read_json(Path(run_dir) / RESULTS_FILE) is not None


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """True when `run_dir/checkpoints/` holds a step folder a rerun would resume from."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    return folder.is_dir() and any(c.name.isdigit() for c in folder.iterdir())


# --------------------------------------------------------------------------------------------
# Which points run: finished, resumable, or changed since their run.


@dataclasses.dataclass
class Plan:
    """What a sweep invocation does with each point, decided before anything runs.

    `todo`: points to run (fresh, resuming a checkpoint of the same config, or a finished run
    whose `train.steps` grew); `skipped`: names of points whose finished run has their config;
    `changed`: name -> description of the fields in which an existing run differs; `busy`:
    name -> id of the live process whose run holds the point's folder (0: it wrote no id).
    """

    todo: list[dict[str, Any]]
    skipped: list[str]
    changed: dict[str, str]
    busy: dict[str, int] = dataclasses.field(default_factory=dict)


def existing_config(run_dir: Path) -> tuple[str, dict[str, Any] | None] | None:
    """The config an existing run in `run_dir` was made with, if a rerun would build on it.

    ("finished", results.json's config) for a finished run, ("started", config.json's) for one
    with a checkpoint to resume, None for a folder with neither (a rerun starts afresh). The
    config is None when the file records none.
    """
    results = _read_json(run_dir / RESULTS_FILE)
    if results is not None:
        return "finished", results.get("config") if isinstance(results, dict) else None
    if has_checkpoint(run_dir):
        config = _read_json(run_dir / CONFIG_FILE)
        return "started", config if isinstance(config, dict) else None
    return None


def plan_sweep(points: Sequence[dict[str, Any]], workdir: str | os.PathLike) -> Plan:
    """Compare each point's resolved config with its existing run's (see `Plan`).

    A run whose config differs only by a smaller `train.steps` is run on (train.py resumes
    from its checkpoint); any other differing field (`config_compare.differing_fields`) marks
    the point changed.
    """
    plan = Plan([], [], {})
    for p in points:
        holder = workdir_lib.live_holder(str(point_dir(p, workdir)))
        if holder is not None:  # a live run: whatever its config, it is not ours to touch
            plan.busy[p["name"]] = holder
            continue
        existing = existing_config(point_dir(p, workdir))
        if existing is None:
            plan.todo.append(p)
            continue
        state, old = existing
        if old is None:
            record = RESULTS_FILE if state == "finished" else CONFIG_FILE
            plan.changed[p["name"]] = f"its {record} records no config to compare"
            continue
        try:
            new = config_compare.resolve(locate_config(p["config"]), p.get("overrides", {}))
        except ValueError as e:
            raise ValueError(f"sweep point {p['name']!r}: {e}") from None
        fields = config_compare.differing_fields(old, new, steps_may_grow=True)
        if fields:
            plan.changed[p["name"]] = config_compare.describe(old, new, fields)
        elif state == "finished" and not config_compare.differing_fields(old, new):
            plan.skipped.append(p["name"])
        else:  # a checkpoint of the same config to resume, or more steps for a finished run
            plan.todo.append(p)
    return plan


def changed_error(plan: Plan, workdir: Path) -> str:
    """The one-line refusal for points whose existing runs have another config."""
    shown = [f"{name} ({why})" for name, why in list(plan.changed.items())[:5]]
    more = len(plan.changed) - len(shown)
    return (f"{len(plan.changed)} point(s) differ from their existing runs in {workdir}: "
            f"{'; '.join(shown)}{f'; and {more} more' if more > 0 else ''}. Nothing was run: "
            f"pass --rerun_changed to move those runs to {superseded_dir(workdir)}/ and run the "
            f"points afresh, or use another --workdir")


def superseded_dir(workdir: Path) -> Path:
    """Where --rerun_changed moves old runs: beside WORKDIR, so `stn.experiments.results.tables` on WORKDIR (which
    reads every results.json below it) no longer counts them."""
    return workdir.parent / f"{workdir.name}.superseded"


def busy_line(name: str, workdir: Path, pid: int) -> str:
    """The one line that refuses a point whose folder a live run holds."""
    return (f"refused {name}: its run in {workdir / name} is live "
            f"({workdir_lib.describe_holder(pid)} holds its lock); it is "
            f"not moved, restarted or marked changed; rerun the sweep once that run has ended")


def move_aside(names: Iterable[str], workdir: Path, log=print) -> dict[str, int]:
    """Move each named run folder to `superseded_dir(workdir)/NAME-<time>`, holding its lock
    while it moves (so no run can start in it, and a live one is never moved). Returns
    name -> holder's process id for the folders left in place because a live run holds them."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    busy = {}
    for name in names:
        target = superseded_dir(workdir) / f"{name}-{stamp}"
        with workdir_lib.held_or_none(str(workdir / name)) as holder:
            if holder is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(workdir / name), str(target))
        if holder is None:
            log(f"moved the old run of {name} to {target}")
        else:  # a run started in it since the plan was made
            busy[name] = holder
    return busy


# --------------------------------------------------------------------------------------------
# Running.


class StopOnSignal:
    """SIGTERM/SIGINT to the runner: forward SIGTERM to the running points, start no new one.

    train.py saves a checkpoint and exits 130 on SIGTERM, so a stopped sweep resumes where it
    stopped. (Ctrl-C in a terminal also sends SIGINT to the children directly, which train.py
    treats the same way.) Handlers are installed only from the main thread, as Python requires.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._running: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        del frame
        self.signum = signum
        for proc in list(self._running.values()):  # no lock: a handler must not wait
            _terminate(proc)

    def start(self, argv: Sequence[str], **popen_kwargs) -> subprocess.Popen | None:
        """`Popen(argv)`, or None once a signal has come."""
        with self._lock:
            if self.signum is not None:
                return None
            proc = subprocess.Popen(list(argv), **popen_kwargs)
            self._running[proc.pid] = proc
        if self.signum is not None:  # the signal came while it started: the handler missed it
            _terminate(proc)
        return proc

    def wait(self, proc: subprocess.Popen) -> int:
        """Wait for a started process; returns its exit status."""
        returncode = proc.wait()
        self._running.pop(proc.pid, None)
        return returncode


def _terminate(proc: subprocess.Popen) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
    except (ProcessLookupError, OSError):  # already gone
        pass


def run_point(argv: Sequence[str], run_dir: Path, *, env: Mapping[str, str] | None = None,
              stop: StopOnSignal | None = None) -> dict[str, Any]:
    """Run one point's argv with its output appended to run_dir/log.txt; returns its outcome.

    A point counts as done only if the process exits 0 *and* wrote results.json. With `stop`,
    the process is started through it (so a signal to the runner reaches it), and the outcome
    says `stopped` when it ended after such a signal, `not_started` when one came first.
    """
    stop = stop or StopOnSignal()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_FILE
    start = time.time()
    outcome: dict[str, Any] = {"name": run_dir.name, "log": str(log_path), "ok": False}
    with open(log_path, "a") as log:
        log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"{shlex.join(argv)}\n")
        log.flush()
        try:
            proc = stop.start(argv, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=dict(env) if env else None)
        except OSError as e:  # e.g. the python executable does not exist
            log.write(f"# could not start: {e}\n")
            return dict(outcome, returncode=-1, seconds=time.time() - start)
        if proc is None:
            log.write("# not started: the sweep was stopped\n")
            return dict(outcome, returncode=None, seconds=0.0, not_started=True)
        returncode = stop.wait(proc)
    outcome.update(returncode=returncode, seconds=time.time() - start,
                   ok=returncode == 0 and is_finished(run_dir))
    if outcome["ok"]:
        # The headline of the progress line: validation error where the run has a validation
        # split (tuning sweeps choose on it and should not show test error), else test error.
        record = json.loads((run_dir / RESULTS_FILE).read_text())
        key = "validation_error" if record.get("validation_error") is not None else "test_error"
        outcome["metric"] = (key, record.get(key))
    elif stop.signum is not None:
        outcome["stopped"] = True
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
              python: str = sys.executable, train_script: str | None = None,
              skipped: Sequence[str] = (), train_flags: Sequence[str] = (),
              busy: Sequence[str] = (), log=print) -> dict[str, Any]:
    """Run `points`, `parallel` at a time; a failure does not stop the others, a signal does.

    `skipped` names the points left out as finished, `busy` those refused because a live run
    holds them (both reported only). On SIGTERM or SIGINT the running points are sent SIGTERM
    (they save a checkpoint) and no new one starts.

    Returns {"done": [...], "skipped": [names], "busy": [names], "failed": [...],
    "stopped": [...], "not_started": [names], "signal": signum or None}; done/failed/stopped
    hold `run_point` outcomes.
    """
    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    train_script = train_script or default_train_script()
    if skipped:
        log(f"skipping {len(skipped)} finished point(s) (their results.json has the same config)")
    log(f"running {len(points)} point(s), {parallel} at a time, in {workdir}")
    env = child_env(parallel)
    summary: dict[str, Any] = {"done": [], "skipped": list(skipped), "busy": list(busy),
                               "failed": [], "stopped": [], "not_started": [], "signal": None}
    lock = threading.Lock()
    counter = itertools.count(1)

    def one(p: dict[str, Any], stop: StopOnSignal) -> None:
        if stop.signum is not None:
            with lock:
                summary["not_started"].append(p["name"])
            return
        argv = point_command(p, workdir, python=python, train_script=train_script,
                             train_flags=train_flags)
        outcome = run_point(argv, point_dir(p, workdir), env=env, stop=stop)
        with lock:
            if outcome.get("not_started"):
                summary["not_started"].append(p["name"])
                return
            i = next(counter)
            if outcome["ok"]:
                summary["done"].append(outcome)
                key, value = outcome.get("metric", ("", None))
                err = f"{key}={value:.4f}" if isinstance(value, (int, float)) else ""
                log(f"[{i}/{len(points)}] done    {p['name']} ({outcome['seconds']:.0f} s) {err}")
            elif outcome.get("stopped"):
                summary["stopped"].append(outcome)
                log(f"[{i}/{len(points)}] stopped {p['name']} (exit code {outcome['returncode']});"
                    f" log: {outcome['log']}")
            else:
                summary["failed"].append(outcome)
                why = outcome.get("error", f"exit code {outcome['returncode']}")
                log(f"[{i}/{len(points)}] FAILED  {p['name']} ({why}); log: {outcome['log']}")

    with StopOnSignal() as stop, concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        for future in [pool.submit(one, p, stop) for p in points]:
            future.result()
    summary["signal"] = stop.signum
    return summary


def stopped_message(summary: Mapping[str, Any]) -> str:
    """The one line a stopped sweep ends with."""
    stopped = [o["name"] for o in summary["stopped"]]
    return (f"sweep stopped by {signal.Signals(summary['signal']).name}: {len(stopped)} running "
            f"point(s) were sent SIGTERM, which saves their checkpoint"
            f"{' (' + ', '.join(stopped) + ')' if stopped else ''}; "
            f"{len(summary['not_started'])} point(s) not started; rerun the same command to "
            f"resume")


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines saying what ran, what was skipped and where the failures' logs are."""
    lines = [f"sweep summary: {len(summary['done'])} done, {len(summary['skipped'])} skipped "
             f"(already finished), {len(summary['failed'])} failed"
             + (f", {len(summary['busy'])} refused (live runs: {', '.join(summary['busy'])})"
                if summary.get("busy") else "")
             + (f", {len(summary['stopped'])} stopped, {len(summary['not_started'])} not started"
                if summary.get("signal") else "")]
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
    """Expand --sweep, check it against existing runs, then print, write or run its points."""
    from absl import flags  # the flags are defined in _define_flags, at import of __main__
    f = flags.FLAGS
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {list(argv[1:])}")
    points = select(load_sweep(f.sweep), f.filter)
    if not points:
        print(f"no point of {f.sweep} matches --filter={f.filter!r}")
        return 1
    workdir = Path(f.workdir).absolute()
    train_script = f.train_script or default_train_script()
    train_flags = [f"--cpu_devices={f.cpu_devices}"] if f.cpu_devices != 1 else []
    plan = plan_sweep(points, workdir)
    if plan.changed and not f.rerun_changed:
        raise ValueError(changed_error(plan, workdir))
    if plan.changed and f.dry_run and not f.emit:
        print(f"# would move the old runs of {', '.join(plan.changed)} to "
              f"{superseded_dir(workdir)}/ and run those points afresh")
    elif plan.changed:
        plan.busy.update(move_aside(plan.changed, workdir))
        plan.changed = {k: v for k, v in plan.changed.items() if k not in plan.busy}
    for name, pid in plan.busy.items():
        print(busy_line(name, workdir, pid), file=sys.stderr, flush=True)
    run_names = {p["name"] for p in plan.todo} | set(plan.changed)
    todo = [p for p in points if p["name"] in run_names]  # in the sweep's order

    def command(p):
        return point_command(p, workdir, python=f.python, train_script=train_script,
                             train_flags=train_flags)

    if f.dry_run or f.emit:
        lines = [shlex.join(command(p)) for p in todo]
        if f.emit:
            Path(f.emit).parent.mkdir(parents=True, exist_ok=True)
            Path(f.emit).write_text("".join(line + "\n" for line in lines))
            print(f"wrote {len(lines)} command(s) to {f.emit}")
        if f.dry_run:
            print(f"# {len(todo)} of {len(points)} point(s) to run ({len(plan.skipped)} finished)")
            print("\n".join(lines))
        return 0
    write_manifest(points, workdir, [command(p) for p in points], f.sweep)
    summary = run_sweep(todo, workdir, parallel=f.parallel, python=f.python,
                        train_script=train_script, skipped=plan.skipped, train_flags=train_flags,
                        busy=list(plan.busy))
    print(format_summary(summary), flush=True)
    if summary["signal"] is not None:
        print(stopped_message(summary), file=sys.stderr)
        return STOPPED_EXIT
    return 1 if summary["failed"] or summary["busy"] else 0


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
    flags.DEFINE_boolean("rerun_changed", False, "Points whose existing run has another config: "
                         "move those runs to WORKDIR.superseded/ and run the points afresh "
                         "(default: refuse, naming the differing fields).")
    flags.DEFINE_integer("cpu_devices", 1, "Passed to every train.py as --cpu_devices (JAX's CPU "
                         "backend as this many devices; faster on a CPU, docs/reports/performance.md).")
    flags.DEFINE_string("python", sys.executable, "Python interpreter for the training processes.")
    flags.DEFINE_string("train_script", None, "Training script each point runs (default: the "
                        "train.py beside the stn package).")
    flags.mark_flags_as_required(["sweep", "workdir"])


if __name__ == "__main__":
    from absl import app
    _define_flags()

    def _main(argv: Sequence[str]) -> None:
        try:
            sys.exit(main(argv))
        except ValueError as e:  # a bad sweep file or argument: one line, no traceback
            sys.exit(f"error: {e}")
        except KeyboardInterrupt:  # Ctrl-C while the sweep was being checked
            sys.exit("error: interrupted before any point started")

    app.run(_main)
