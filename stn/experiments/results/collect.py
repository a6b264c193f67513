"""Collecting runs and building the paper's tables from them (no rendering, no drawing).

- `collect_results(workdir)`: every `results.json` under a folder -> runs, plus one line per file
  or run that could not be used (`incomplete_runs`).
- `table_spec(name)`, `build_table(runs, spec)`: the paper's tables (`stn/experiments/results/paper_results.json`)
  and each run put in its cell by its config; seeds averaged by `summarize`.
- `collect_curves(workdir)`: validation and test error against steps of every `metrics.jsonl`,
  and `paper_reference(config)`, the paper's number for a run where a table gives one.

Markdown and JSON are written by `stn.experiments.results.render`, charts drawn by `stn.experiments.results.figures`, and
`stn.experiments.results.tables` is the command line that puts them together.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from stn.experiments import workdir as workdir_lib

PAPER_FILE = Path(__file__).with_name("paper_results.json")
RESULTS_FILE = workdir_lib.RESULTS_FILE
CURVE_METRICS = ("validation_error", "test_error")


def paper_results() -> dict[str, Any]:
    """The paper's tables, citation and cell-matching rules (stn/experiments/results/paper_results.json)."""
    return json.loads(PAPER_FILE.read_text())


def table_spec(table: str | int) -> dict[str, Any]:
    """One table of the paper: title, columns, rows (each with its paper values), metric."""
    tables = paper_results()["tables"]
    if str(table) not in tables:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(tables)}, or sweep "
                         f"(--table=sweep: a summary of any sweep) or curves")
    return tables[str(table)]


def is_number(value: Any) -> bool:
    """True for an int or float (NaN included), False for bools, None and everything else."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Runs.


def collect_results(workdir: str | os.PathLike, required: Sequence[str] = ("test_error",)
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """All results.json under `workdir` (recursively) -> (runs, problems).

    Each run gets a `path` key. A file that does not parse, or lacks `config` or a numeric value
    for each `required` key, is reported in `problems` (one line each) instead of aborting the
    table, and so is each run that never wrote its results.json (`incomplete_runs`).
    """
    runs, problems = [], []
    for path in sorted(Path(workdir).rglob(RESULTS_FILE)):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
            continue
        if not isinstance(run, dict) or not isinstance(run.get("config"), dict) \
                or not all(is_number(run.get(key)) for key in required):
            wanted = " and ".join(["'config'"] + [f"a numeric {key!r}" for key in required])
            problems.append(f"{path}: expected a dict with {wanted}")
            continue
        runs.append(dict(run, path=str(path)))
    return runs, problems + incomplete_runs(workdir)


def incomplete_runs(workdir: str | os.PathLike) -> list[str]:
    """One line per run under `workdir` without a results.json: a point listed in a sweep's
    manifest (`sweep.json`, written by `stn.experiments.sweeps`) whose folder lacks it, or a folder where
    training started (it holds `config.json`) and has not finished (still running, or failed)."""
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
        inside_run = any((parent / RESULTS_FILE).exists()
                         for parent in folder.parents if root in (parent, *parent.parents))
        if not (folder / RESULTS_FILE).exists() and not inside_run:
            missing.append(f"{folder}: no {RESULTS_FILE} (not run yet, still running, or failed; "
                           f"see its log.txt)")
    return missing


# --------------------------------------------------------------------------------------------
# The paper's tables.


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    """`config_value(cfg, "model.name")` -> cfg["model"]["name"], or None if absent."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def matches(config: Mapping[str, Any], rule: Mapping[str, Any] | None) -> bool:
    """True when every dotted key of `rule` has that value in `config` (strings: any case)."""
    if rule is None:
        return False
    for key, want in rule.items():
        have = config_value(config, key)
        if isinstance(have, str) and isinstance(want, str):
            if have.lower() != want.lower():
                return False
        elif have != want:
            return False
    return True


def cell_of(run: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[int, int] | None:
    """(row, column) of the cell a run belongs to, or None if it belongs to no cell.

    A table that names its `task` takes no run of another task (a run without `task` in its
    config, e.g. one written by hand, is judged by the row and column rules alone)."""
    cfg = run["config"]
    task = cfg.get("task")
    if spec.get("task") is not None and task is not None and task != spec["task"]:
        return None
    rows = [i for i, r in enumerate(spec["rows"]) if matches(cfg, r["match"])]
    cols = [j for j, c in enumerate(spec["columns"]) if matches(cfg, c["match"])]
    # Rows are listed from general to specific (CNN has no transform rule, ST-CNN Aff has one),
    # so prefer the row whose rule is most specific.
    if not rows or not cols:
        return None
    row = max(rows, key=lambda i: len(spec["rows"][i]["match"]))
    return row, cols[0]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single run) of percentages."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values)}


def build_table(runs: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Group runs into the table's cells: {"cells": [[cell]], "used": [...], "ignored": [...]}.

    Each cell is {"paper": float|None, "ours": summary|None, "values", "seeds", "runs"}; ours
    are in %.
    """
    cells = [[{"paper": r["paper"][j], "ours": None, "values": [], "seeds": [], "runs": []}
              for j in range(len(spec["columns"]))] for r in spec["rows"]]
    used, ignored = [], []
    for run in runs:
        where = cell_of(run, spec)
        if where is None:
            ignored.append(run["path"])
            continue
        # A column may read its own metric (e.g. co-localisation's held-out and baseline
        # columns beside the headline); the same run fills every column its config matches.
        for j, column in enumerate(spec["columns"]):
            metric = column.get("metric", spec.get("metric", "test_error"))
            own = j == where[1] or ("metric" in column and matches(run["config"], column["match"]))
            if not own or not is_number(run.get(metric)):
                continue
            cell = cells[where[0]][j]
            cell["values"].append(100.0 * float(run[metric]))
            cell["seeds"].append(run["config"].get("seed"))
            cell["runs"].append(run["path"])
        used.append(run)
    for row in cells:
        for cell in row:
            if cell["values"]:
                cell["ours"] = summarize(cell["values"])
    return {"cells": cells, "used": used, "ignored": ignored}


def paper_reference(config: Mapping[str, Any], metric: str = "test_error"
                    ) -> tuple[str, float] | None:
    """(label, value in %) of the paper's number for a run with this config, from the first
    table (in stn/experiments/results/paper_results.json order) that measures `metric` and has a paper value in the
    run's cell; None where no table gives one."""
    for spec in paper_results()["tables"].values():
        if spec.get("metric", "test_error") != metric:
            continue
        where = cell_of({"config": config}, spec)
        if where is not None:
            value = spec["rows"][where[0]]["paper"][where[1]]
            if value is not None:
                return (f"{spec['rows'][where[0]]['label']}, "
                        f"{spec['columns'][where[1]]['label']}"), float(value)
    return None


# --------------------------------------------------------------------------------------------
# Learning curves.


def collect_curves(workdir: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`{run: {metric: [(step, value)]}}` for `validation_error` and `test_error` of every
    `metrics.jsonl` under `workdir` (a run is its folder, relative to `workdir`)."""
    from stn.experiments import metrics_io

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


def run_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """A run folder's config: from its results.json, else its config.json; None when neither
    holds one."""
    folder = Path(folder)
    for name, pick in ((RESULTS_FILE, lambda d: d.get("config")), (workdir_lib.CONFIG_FILE, lambda d: d)):
        try:
            config = pick(json.loads((folder / name).read_text()))
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(config, dict):
            return config
    return None


def curve_references(workdir: str | os.PathLike, runs: Sequence[str]
                     ) -> dict[str, tuple[str, float]]:
    """{run: (label, paper test error %)} for the runs (folders relative to `workdir`) whose
    config falls in a cell where a paper table gives a test error."""
    references = {}
    for run in runs:
        config = run_config(Path(workdir) / run)
        found = paper_reference(config) if config is not None else None
        if found is not None:
            references[run] = found
    return references
