"""Sweeps as data, each point one ordinary `train.py` command, submitted through submitit.

A sweep file (e.g. `configs/sweeps/table1.py`) defines `get_sweep(arg=None) -> list[dict]`; each
point is plain data:

    {"name": "rts-st_cnn-affine-s0",                 # unique; the run's folder under --workdir
     "config": "configs/mnist.py:rts,st_cnn,affine",  # the --config of train.py
     "overrides": {"seed": 0, "train.steps": 3000}}   # each becomes --config.KEY=VALUE

Run a sweep (see docs/guides/sweeps.md):

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table1.py:seeds=3 --workdir=runs/table1 \
        [--launcher=local --parallel=N | --launcher=slurm --slurm_partition=P --slurm_time=MIN ...]
        [--dry_run] [--emit=FILE] [--filter=REGEX] [--rerun_changed]

Every point is `python .../train.py --config=CONFIG --workdir=WORKDIR/NAME --config.K=V ...`
(the train.py beside the `stn` package), run as an argv list (never through a shell), its output
appended to `WORKDIR/NAME/log.txt`. Before anything is submitted, every point's config is
resolved as train.py would (a bad one stops the sweep in one line naming the point and the
field), the fields the sweep changes in each preset are printed, and each point is checked
against its existing run: a finished run of the same config is skipped; a run of another config
is refused (or, with --rerun_changed, moved aside); a folder locked by a live run
(`stn.experiments.workdir`) is never moved or restarted (one line, and the sweep goes on).

The rest is handed to submitit: `--launcher=local` runs the points on this machine (its
`LocalExecutor`, `--parallel` at a time) and waits for them; `--launcher=slurm` submits them as
one SLURM job array and returns; `--emit=FILE` writes one command per line for any other
scheduler. Ctrl-C stops a local sweep: the interrupt reaches every running train.py, which saves
a checkpoint, no new point starts, and the same command resumes.
"""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stn.experiments import config_args, config_compare
from stn.experiments import workdir as workdir_lib

RESULTS_FILE, CONFIG_FILE, CHECKPOINTS_DIR = (workdir_lib.RESULTS_FILE, workdir_lib.CONFIG_FILE,
                                               workdir_lib.CHECKPOINTS_DIR)
LOG_FILE = "log.txt"
#: submitit's folder under WORKDIR: each job's pickles, its sbatch script and submitit's logs.
SUBMITIT_DIR = ".submitit"
MANIFEST_FILE = "sweep.json"
#: The repository root: train.py and configs/ sit beside the `stn` package.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Exit status of a sweep stopped by Ctrl-C (as train.py's after SIGINT).
STOPPED_EXIT = 130
#: A local point has no time limit (submitit's LocalExecutor needs one: ten years).
LOCAL_TIMEOUT_MIN = 10 * 365 * 24 * 60
#: SLURM signals each point this long before its time limit. SIGTERM, which train.py answers by
#: saving a checkpoint (submitit's default, SIGUSR2, would end train.py without one).
SLURM_SIGNAL = "TERM@120"
POLL_S = 0.2
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


def data_source(value: str) -> str:
    """A data source from a sweep argument: a bare folder means `idx:FOLDER`, else kept as is."""
    return value if value.split(":", 1)[0] in ("idx", "tfds", "sample") else f"idx:{value}"


def load_sweep(spec: str) -> list[dict[str, Any]]:
    """Load `path/to/sweep.py[:arg]` by path (like a config file) and return its checked points.

    A missing file, a syntax error, or an exception in the file or its `get_sweep` is one
    ValueError line naming the file, the line and the error.
    """
    path, sep, arg = spec.partition(".py:")
    path = path + ".py" if sep else spec
    arg = arg if sep else None
    module = config_args.load_file(path, "sweep file")
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"sweep file {path!r} defines no get_sweep(arg=None)")
    try:
        points = module.get_sweep(arg)
    except ValueError as e:  # the sweep's own refusals name the file; others get its line
        raise ValueError(str(e) if Path(path).name in str(e) else
                         f"sweep file {config_args.located(e, path)}") from None
    except Exception as e:
        raise ValueError(f"sweep file {config_args.located(e, path)}") from None
    return validate_sweep(points)


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


def point_cpu_devices(requested: int | None, launcher: str, parallel: int) -> int:
    """The `--cpu_devices` each point's train.py gets: `requested`, else 1 where several local
    points share this machine's cores at once, else 0 (train.py takes one device per core it
    may use: the machine's, or a SLURM task's own)."""
    if requested is not None:
        return requested
    return 1 if launcher == "local" and parallel > 1 else 0


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
# Every point's config, resolved before anything runs.


def resolve_points(points: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Name -> the config each point's train.py would run (`config_compare.resolve`).

    Raises a one-line ValueError naming the first point that does not resolve and why (its
    config file, preset or field, with the nearest valid name), so no point starts.
    """
    configs = {}
    for p in points:
        spec = locate_config(p["config"])
        try:
            configs[p["name"]] = config_compare.resolve(spec, p.get("overrides", {}))
        except ValueError as e:
            argv = [f"--config={spec}", *config_compare.override_args(p.get("overrides", {}))]
            raise ValueError(f"sweep point {p['name']!r}: {config_args.explain(argv, e)}") from None
    return configs


def preset_changes(points: Sequence[Mapping[str, Any]],
                   configs: Mapping[str, Mapping[str, Any]], limit: int = 6) -> list[str]:
    """One line per config file[:arg] of the sweep naming every field whose value some point
    changes from that preset's, with the preset's value and the sweep's values, e.g.
    `configs/mnist.py:quick (6 point(s)): model.loc_lr_multiplier 0.1 -> 1.0; seed 0 -> 0, 1`.

    Printed when a sweep starts, so that a value the sweep sets beside its axes (a default of
    the sweep file over a preset's tuned one) is seen before anything runs.
    """
    lines = []
    for spec in dict.fromkeys(p["config"] for p in points):
        group = [p for p in points if p["config"] == spec]
        preset = config_compare.flatten(config_compare.resolve(locate_config(spec), {}))
        values: dict[str, list[Any]] = {}  # a locked config: every point has the preset's keys
        for p in group:
            for key, value in config_compare.flatten(configs[p["name"]]).items():
                if value not in values.setdefault(key, []):
                    values[key].append(value)
        parts = [f"{key} {_shown(preset[key])} -> {', '.join(_shown(v) for v in seen[:limit])}"
                 + (f" (+{len(seen) - limit} more)" if len(seen) > limit else "")
                 for key, seen in sorted(values.items()) if seen != [preset[key]]]
        lines.append(f"{spec} ({len(group)} point(s)): {'; '.join(parts) or 'no field changed'}")
    return lines


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


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


def plan_sweep(points: Sequence[dict[str, Any]], workdir: str | os.PathLike,
               configs: Mapping[str, Mapping[str, Any]] | None = None) -> Plan:
    """Compare each point's resolved config with its existing run's (see `Plan`).

    `configs` holds each point's resolved config (`resolve_points`; resolved here if None). A
    run whose config differs only by a smaller `train.steps` is run on (train.py resumes from
    its checkpoint); any other differing field (`config_compare.differing_fields`) marks the
    point changed.
    """
    configs = resolve_points(points) if configs is None else configs
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
        new = configs[p["name"]]
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
# Launching: each point is one submitit job that runs its train.py command.


def run_point(argv: Sequence[str], run_dir: str, env: Mapping[str, str] | None = None) -> int:
    """The job of one point, as submitit runs it: `argv` with its output appended to
    `run_dir/log.txt` (headed by the time and the command); returns its exit status.

    The process is waited for, never killed: on SIGINT or SIGTERM train.py saves a checkpoint
    and ends by itself (status 130). It starts with SIGINT at its default even where the
    launcher ignores it (`run_local`), so that Ctrl-C reaches it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"{shlex.join(argv)}\n")
        log.flush()
        launcher_sigint = signal.signal(signal.SIGINT, signal.SIG_DFL)  # inherited by exec
        try:
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        except OSError as e:  # e.g. the python executable does not exist
            log.write(f"# could not start: {e}\n")
            return -1
        finally:
            signal.signal(signal.SIGINT, launcher_sigint)
        return proc.wait()


def child_env(parallel: int) -> dict[str, str]:
    """Environment added for the training processes of a local sweep.

    With several processes on one accelerator, JAX's default of pre-allocating most of the GPU
    memory in each process would make all but the first fail; allocate on demand instead unless
    the user chose otherwise.
    """
    if parallel > 1 and "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:
        return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    return {}


def point_outcome(p: Mapping[str, Any], workdir: Path, job: Any) -> dict[str, Any]:
    """What a finished job did: `ok` only if train.py exited 0 *and* wrote results.json;
    `returncode`, `seconds`, the log's path, `metric` (validation error where the run has a
    validation split, else test error) or `error` (why it failed)."""
    run_dir = point_dir(p, workdir)
    outcome: dict[str, Any] = {"name": p["name"], "log": str(run_dir / LOG_FILE), "ok": False}
    try:
        outcome["returncode"] = job.result()
    except Exception as e:  # the job itself failed (not train.py): submitit's own log says why
        outcome.update(returncode=None, error=f"its submitit job failed ({type(e).__name__}; "
                       f"submitit's log: {job.paths.stderr})")
        return outcome
    outcome["ok"] = outcome["returncode"] == 0 and is_finished(run_dir)
    if outcome["ok"]:
        record = json.loads((run_dir / RESULTS_FILE).read_text())
        key = "validation_error" if record.get("validation_error") is not None else "test_error"
        outcome["metric"] = (key, record.get(key))
    elif outcome["returncode"] == 0:
        outcome["error"] = f"exited 0 but wrote no {RESULTS_FILE}"
    elif outcome["returncode"] == STOPPED_EXIT:
        outcome["stopped"] = True
    return outcome


def run_local(points: Sequence[dict[str, Any]], workdir: Path,
              commands: Mapping[str, Sequence[str]], *, parallel: int = 1,
              log=print) -> dict[str, Any]:
    """Run `points` on this machine through submitit's LocalExecutor, `parallel` at a time, and
    wait for them; a failed point does not stop the others.

    Ctrl-C (SIGINT from the terminal to the whole process group) reaches every running
    train.py, which saves a checkpoint and ends; submitit's processes ignore it (their own
    tracebacks would bury the one line this ends with). No new point starts, and this waits for
    the running ones. Returns {"done", "failed", "stopped": [outcomes], "not_started": [names],
    "interrupted": bool}.
    """
    import submitit

    if parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    executor = submitit.LocalExecutor(folder=workdir / SUBMITIT_DIR / "%j")
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, setup=["trap '' INT"])
    env = child_env(parallel)
    log(f"running {len(points)} point(s), {parallel} at a time, in {workdir}", flush=True)
    summary: dict[str, Any] = {"done": [], "failed": [], "stopped": [], "not_started": [],
                               "interrupted": False}
    pending, running, counter = list(points), {}, itertools.count(1)

    def collect(block: bool) -> None:
        for name, (p, job, start) in list(running.items()):
            if block or job.done():
                del running[name]
                outcome = dict(point_outcome(p, workdir, job), seconds=time.time() - start)
                _record(summary, outcome, f"[{next(counter)}/{len(points)}]", log)

    try:
        while pending or running:
            while pending and len(running) < parallel:
                p = pending.pop(0)
                running[p["name"]] = (p, executor.submit(run_point, list(commands[p["name"]]),
                                                         str(point_dir(p, workdir)), env),
                                      time.time())
            collect(block=False)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        summary.update(interrupted=True, not_started=[p["name"] for p in pending])
        log(f"interrupted: waiting for {len(running)} running point(s) to save a checkpoint "
            f"and end", file=sys.stderr, flush=True)
        collect(block=True)
    return summary


def _record(summary: dict[str, Any], outcome: dict[str, Any], counter: str, log) -> None:
    """File a finished point's outcome in `summary` and print its progress line."""
    name = outcome["name"]
    if outcome["ok"]:
        summary["done"].append(outcome)
        key, value = outcome.get("metric", ("", None))
        metric = f"{key}={value:.4f}" if isinstance(value, (int, float)) else ""
        log(f"{counter} done    {name} ({outcome['seconds']:.0f} s) {metric}", flush=True)
    elif outcome.get("stopped"):
        summary["stopped"].append(outcome)
        log(f"{counter} stopped {name} (exit code {STOPPED_EXIT}, its checkpoint saved); "
            f"log: {outcome['log']}", flush=True)
    else:
        summary["failed"].append(outcome)
        why = outcome.get("error", f"exit code {outcome['returncode']}")
        log(f"{counter} FAILED  {name} ({why}); log: {outcome['log']}", flush=True)


@dataclasses.dataclass
class SlurmSettings:
    """What a cluster user sets for every point of a SLURM job array (`--slurm_*` flags).

    `time_min`: each point's time limit in minutes; `gpus_per_task`: GPUs of each point (`gres`
    gpu:N; 0 for none); `array_parallelism`: at most this many points run at once;
    `params`: further sbatch parameters as sbatch spells them (`account`, `qos`,
    `constraint`, ...; they override those above); `setup`: shell lines run before each point
    (e.g. `module load cuda`, activating a virtualenv).
    """

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    array_parallelism: int = 64
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    setup: Sequence[str] = ()
    job_name: str = "stn-sweep"


def slurm_executor(folder: Path, settings: SlurmSettings) -> Any:
    """A submitit SlurmExecutor for `settings`; one line if this machine has no SLURM."""
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError:
        raise ValueError("--launcher=slurm needs SLURM's srun and sbatch on PATH (run it on the "
                         "cluster's login node), or write the commands with --emit=FILE for "
                         "another scheduler") from None
    parameters: dict[str, Any] = {
        "job_name": settings.job_name, "time": settings.time_min,
        "array_parallelism": settings.array_parallelism, "ntasks_per_node": 1,
        "additional_parameters": {"signal": SLURM_SIGNAL, **settings.params}}
    for key, value in (("partition", settings.partition),
                       ("cpus_per_task", settings.cpus_per_task),
                       ("mem", None if settings.mem_gb is None else f"{settings.mem_gb}GB")):
        if value is not None:
            parameters[key] = value
    if settings.gpus_per_task:
        parameters["gres"] = f"gpu:{settings.gpus_per_task}"
    if settings.setup:
        parameters["setup"] = list(settings.setup)
    executor.update_parameters(**parameters)
    return executor


def submit_slurm(points: Sequence[dict[str, Any]], workdir: Path,
                 commands: Mapping[str, Sequence[str]], settings: SlurmSettings) -> list[Any]:
    """Submit `points` as ONE SLURM job array (`executor.map_array`), one task per point, and
    return their jobs (ids `ARRAY_TASK`) without waiting for them."""
    executor = slurm_executor(workdir / SUBMITIT_DIR / "%j", settings)
    return executor.map_array(run_point, [list(commands[p["name"]]) for p in points],
                              [str(point_dir(p, workdir)) for p in points],
                              [{} for _ in points])


def parse_params(items: Iterable[str]) -> dict[str, str]:
    """`["account=proj", "qos=high"]` -> `{"account": "proj", "qos": "high"}` (one line for a
    piece without `=`)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm_param={item!r}: expected KEY=VALUE, e.g. account=myproject")
        params[key.strip()] = value.strip()
    return params


# --------------------------------------------------------------------------------------------
# Reporting.


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines saying what ran, what was skipped and where the failures' logs are."""
    lines = [f"sweep summary: {len(summary['done'])} done, {len(summary['skipped'])} skipped "
             f"(already finished), {len(summary['failed'])} failed"
             + (f", {len(summary['busy'])} refused (live runs: {', '.join(summary['busy'])})"
                if summary.get("busy") else "")
             + (f", {len(summary['stopped'])} stopped, {len(summary['not_started'])} not started"
                if summary.get("interrupted") or summary.get("stopped") else "")]
    for f in summary["failed"]:
        why = f.get("error", f"exit code {f['returncode']}")
        lines.append(f"  FAILED {f['name']}: {why}; log: {f['log']}")
    return "\n".join(lines)


def stopped_message(summary: Mapping[str, Any]) -> str:
    """The one line a sweep stopped by Ctrl-C ends with."""
    stopped = [o["name"] for o in summary["stopped"]]
    return (f"sweep stopped by SIGINT: {len(stopped)} running point(s) saved their checkpoint"
            f"{' (' + ', '.join(stopped) + ')' if stopped else ''}; "
            f"{len(summary['not_started'])} point(s) not started; rerun the same command to "
            f"resume")


def write_manifest(points: Sequence[dict[str, Any]], workdir: Path,
                   commands: Mapping[str, Sequence[str]], spec: str,
                   jobs: Mapping[str, str] | None = None) -> None:
    """Record the expanded sweep in WORKDIR/sweep.json (each point with its command, and its
    SLURM job id once submitted), so a results folder says how it was made."""
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = {"sweep": spec, "points": [
        dict(p, command=list(commands[p["name"]]),
             **({"job": jobs[p["name"]]} if jobs and p["name"] in jobs else {}))
        for p in points]}
    (workdir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str]) -> int:
    """Expand --sweep, resolve and check every point, then print, write or submit them."""
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
    train_flags = [f"--cpu_devices={point_cpu_devices(f.cpu_devices, f.launcher, f.parallel)}"]
    configs = resolve_points(points)
    for line in preset_changes(points, configs):
        print(f"sweep changes {line}", flush=True)
    plan = plan_sweep(points, workdir, configs)
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
    commands = {p["name"]: point_command(p, workdir, python=f.python, train_script=train_script,
                                         train_flags=train_flags) for p in points}
    if plan.skipped:
        print(f"skipping {len(plan.skipped)} finished point(s) (their results.json has the "
              f"same config)")
    if f.dry_run or f.emit:
        lines = [shlex.join(commands[p["name"]]) for p in todo]
        if f.emit:
            Path(f.emit).parent.mkdir(parents=True, exist_ok=True)
            Path(f.emit).write_text("".join(line + "\n" for line in lines))
            print(f"wrote {len(lines)} command(s) to {f.emit}")
        if f.dry_run:
            print(f"# {len(todo)} of {len(points)} point(s) to run ({len(plan.skipped)} finished)")
            print("\n".join(lines))
        return 0
    write_manifest(points, workdir, commands, f.sweep)
    summary: dict[str, Any] = {"done": [], "failed": [], "stopped": [], "not_started": []}
    if f.launcher == "slurm" and todo:
        settings = SlurmSettings(
            partition=f.slurm_partition, time_min=f.slurm_time, gpus_per_task=f.slurm_gpus_per_task,
            cpus_per_task=f.slurm_cpus_per_task, mem_gb=f.slurm_mem_gb,
            array_parallelism=f.slurm_array_parallelism, params=parse_params(f.slurm_param or ()),
            setup=f.slurm_setup or ())
        jobs = submit_slurm(todo, workdir, commands, settings)
        write_manifest(points, workdir, commands, f.sweep,
                       {p["name"]: job.job_id for p, job in zip(todo, jobs)})
        array = jobs[0].job_id.split("_")[0]
        print(f"submitted {len(jobs)} point(s) to SLURM as job array {array} (at most "
              f"{min(len(jobs), settings.array_parallelism)} at once); each point's job id is in "
              f"{workdir / MANIFEST_FILE}, its output in WORKDIR/NAME/{LOG_FILE}; rerun the same "
              f"command once they end: finished points are skipped, the others resubmitted",
              flush=True)
    elif todo:
        summary = run_local(todo, workdir, commands, parallel=f.parallel)
    summary.update(skipped=plan.skipped, busy=list(plan.busy))
    if f.launcher == "local" or not todo:
        print(format_summary(summary), flush=True)
    if summary.get("interrupted"):
        print(stopped_message(summary), file=sys.stderr)
        return STOPPED_EXIT
    return 1 if summary["failed"] or summary["busy"] else 0


def _define_flags() -> None:
    """The command-line flags (defined only when run as a program, not on import)."""
    from absl import flags
    flags.DEFINE_string("sweep", None, "Sweep file path[:arg], e.g. configs/sweeps/table1.py:seeds=3.")
    flags.DEFINE_string("workdir", None, "Folder for the runs; point NAME runs in WORKDIR/NAME.")
    flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "local: run the points on this "
                      "machine (submitit's LocalExecutor) and wait; slurm: submit them as one "
                      "SLURM job array and return.")
    flags.DEFINE_integer("parallel", 1, "local: how many points run at once.")
    flags.DEFINE_string("slurm_partition", None, "slurm: the partition (sbatch --partition).")
    flags.DEFINE_integer("slurm_time", 24 * 60, "slurm: each point's time limit in minutes; "
                         "train.py gets SIGTERM 2 minutes before it and saves a checkpoint.")
    flags.DEFINE_integer("slurm_gpus_per_task", 1, "slurm: GPUs per point (--gres=gpu:N; 0: none).")
    flags.DEFINE_integer("slurm_cpus_per_task", None, "slurm: CPUs per point.")
    flags.DEFINE_integer("slurm_mem_gb", None, "slurm: memory per point in GB.")
    flags.DEFINE_integer("slurm_array_parallelism", 64, "slurm: at most this many points run at "
                         "once (--array=0-N%P).")
    flags.DEFINE_multi_string("slurm_param", None, "slurm: any other sbatch parameter as "
                              "KEY=VALUE, e.g. account=myproject, qos=high (repeatable).")
    flags.DEFINE_multi_string("slurm_setup", None, "slurm: a shell line run before each point, "
                              "e.g. 'module load cuda' (repeatable).")
    flags.DEFINE_boolean("dry_run", False, "Print the commands of unfinished points; run nothing.")
    flags.DEFINE_string("emit", None, "Write one shell-quoted command per unfinished point to this "
                        "file (for any other scheduler); run nothing.")
    flags.DEFINE_string("filter", None, "Only points whose name matches this regular expression.")
    flags.DEFINE_boolean("rerun_changed", False, "Points whose existing run has another config: "
                         "move those runs to WORKDIR.superseded/ and run the points afresh "
                         "(default: refuse, naming the differing fields).")
    flags.DEFINE_integer("cpu_devices", None, "Passed to every train.py as --cpu_devices (JAX's CPU "
                         "backend as this many devices; faster on a CPU, docs/reports/performance.md). "
                         "Default: 1 where several local points run at once (--parallel > 1), "
                         "else 0 (train.py's own default: one per core the point may use).")
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
        except KeyboardInterrupt:  # Ctrl-C before the points started, or a second one
            sys.exit("error: interrupted; points already started end by themselves (train.py "
                     "saves a checkpoint on the interrupt)")

    app.run(_main)
