"""Reading finished runs off disk: their `results.json`, the runs that never wrote one, their
learning curves, and the paper's tables (`paper_results.json`). Nothing here groups, renders
or draws.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stn.experiments import workdir as workdir_lib

PAPER_FILE = Path(__file__).with_name("paper_results.json")
CURVE_METRICS = ("validation_error", "test_error")
#: Suffixes of the metrics that results.json records as fractions (error rates, the share of
#: images localised): a value outside [0, 1] is impossible, and its run is skipped.
FRACTION_SUFFIXES = ("_error", "_localised")


def paper_results() -> dict[str, Any]:
    """The paper's tables, citation and cell-matching rules (`paper_results.json`)."""
    return json.loads(PAPER_FILE.read_text())


def table_spec(table: str | int) -> dict[str, Any]:
    """One table of the paper: title, columns, rows (each with its paper values), metric.
    Raises ValueError (one line, naming every `--table=` choice) for an unknown name."""
    tables = paper_results()["tables"]
    if str(table) not in tables:
        raise ValueError(f"unknown table {str(table)!r}; expected one of {sorted(tables)} (the "
                         f"paper's), sweep or curves")
    return tables[str(table)]


def is_number(value: Any) -> bool:
    """True for an int or float (NaN included), False for bools, None and everything else."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def collect_results(workdir: str | os.PathLike, required: Sequence[str] = ("test_error",)
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """All results.json under `workdir` (recursively, in path order) -> (runs, problems).

    Each run gets a `path` key. A file that does not parse, lacks `config` or a numeric value
    for each `required` key, or records a fraction outside [0, 1] (`FRACTION_SUFFIXES`) is
    skipped and reported in `problems` (one line each) instead of aborting the table, and so
    is each run that never wrote its results.json (`incomplete_runs`).
    """
    runs, problems = [], []
    for path in sorted(Path(workdir).rglob(workdir_lib.RESULTS_FILE)):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
            continue
        problem = _problem(run, required)
        if problem:
            problems.append(f"{path}: {problem}")
        else:
            runs.append(dict(run, path=str(path)))
    return runs, problems + incomplete_runs(workdir)


def _problem(run: Any, required: Sequence[str]) -> str | None:
    """Why a parsed results.json cannot be used, or None."""
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict) \
            or not all(is_number(run.get(key)) for key in required):
        wanted = " and ".join(["'config'"] + [f"a numeric {key!r}" for key in required])
        return f"expected a dict with {wanted}"
    impossible = [f"{key}={value!r}" for key, value in run.items()
                  if key.endswith(FRACTION_SUFFIXES) and is_number(value)
                  and math.isfinite(value) and not 0 <= value <= 1]
    if impossible:
        return (f"{', '.join(impossible)} is not a fraction in [0, 1] (results.json records "
                f"errors and localised shares as fractions); the run is left out")
    return None


def incomplete_runs(workdir: str | os.PathLike) -> list[str]:
    """One line per run under `workdir` without a results.json: a point listed in a sweep's
    manifest (`sweep.json`, written by `stn.experiments.sweeps`) whose folder lacks it, or a
    folder where training started (it holds `config.json`) and has not finished (still running,
    or failed)."""
    root = Path(workdir)
    folders = set()
    for manifest in root.rglob("sweep.json"):
        try:
            points = json.loads(manifest.read_text())["points"]
            folders.update(manifest.parent / p["name"] for p in points)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a manifest of stn.experiments.sweeps
    folders.update(c.parent for c in root.rglob(workdir_lib.CONFIG_FILE))
    missing = []
    for folder in sorted(folders):
        # A config.json inside a finished run (e.g. in its checkpoints) is not a run of its own.
        inside_run = any((parent / workdir_lib.RESULTS_FILE).exists()
                         for parent in folder.parents if root in (parent, *parent.parents))
        if not (folder / workdir_lib.RESULTS_FILE).exists() and not inside_run:
            missing.append(f"{folder}: no {workdir_lib.RESULTS_FILE} (not run yet, still "
                           f"running, or failed; see its log.txt)")
    return missing


def collect_curves(workdir: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`{run: {metric: [(step, value)]}}` for `validation_error` and `test_error` of every
    `metrics.jsonl` under `workdir` (a run is its folder, relative to `workdir`)."""
    from stn.experiments import metrics_io  # imports JAX: only the curves need it

    curves = {}
    for path in sorted(Path(workdir).rglob(workdir_lib.METRICS_FILE)):
        series: dict[str, list[tuple[int, float]]] = {}
        for record in metrics_io.read_jsonl(str(path)):
            for key in CURVE_METRICS:
                if is_number(record.get(key)):
                    series.setdefault(key, []).append((int(record["step"]), float(record[key])))
        if series:
            curves[str(path.parent.relative_to(workdir)) or "."] = series
    return curves

