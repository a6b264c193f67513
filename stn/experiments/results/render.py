"""Tables as text: markdown for the paper's tables, sweep summaries and learning curves, and
the JSON of a paper table's cells. Everything here is a pure function of what
`stn.experiments.results.collect` and `stn.experiments.results.summary` built; `stn.experiments.results.tables` writes the files.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stn.experiments.results.collect import CURVE_METRICS, config_value
from stn.experiments.results.summary import MISSING, format_value, higher_is_better, setting_label

NOT_IN_PAPER = "n/a"


# --------------------------------------------------------------------------------------------
# The paper's tables.


def format_ours(ours: Mapping[str, float] | None) -> str:
    """`0.62±0.05 (n=3)` for several seeds, `0.62` for one, the missing mark for none."""
    if ours is None:
        return MISSING
    if ours["n"] == 1:
        return f"{ours['mean']:.2f}"
    return f"{ours['mean']:.2f}±{ours['std']:.2f} (n={ours['n']})"


def format_cell(cell: Mapping[str, Any], reproducible: bool = True) -> str:
    """`paper / ours`, e.g. `0.5 / 0.62±0.05 (n=3)` or `0.5 / —`; `reproducible` is False for
    rows of other papers' models, which we do not run (their "ours" reads n/a, not missing)."""
    paper = NOT_IN_PAPER if cell["paper"] is None else f"{cell['paper']:.1f}"
    ours = format_ours(cell["ours"]) if reproducible else NOT_IN_PAPER
    return f"{paper} / {ours}"


def _distinct(runs: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    """The distinct values of a dotted config key (or a top-level result key) over runs."""
    values = set()
    for run in runs:
        value = run.get(key) if key in run else config_value(run["config"], key)
        values.add(str(value))
    return sorted(values)


def render_markdown(table: Mapping[str, Any], spec: Mapping[str, Any], citation: str,
                    problems: Sequence[str] = ()) -> str:
    """The table as markdown: one row per model, each cell `paper / ours`, then what was used."""
    header = ["model"] + [c["label"] for c in spec["columns"]]
    lines = [f"### {spec['title']}: paper / ours", "",
             "| " + " | ".join(header) + " |",
             "| " + " | ".join(["---"] * len(header)) + " |"]
    for row, cells in zip(spec["rows"], table["cells"]):
        texts = [format_cell(c, row["match"] is not None) for c in cells]
        lines.append("| " + " | ".join([row["label"], *texts]) + " |")
    used = table["used"]
    lines += ["", f"Each cell: the paper's value / ours, in %. Ours is the mean over seeds, ± the "
              f"sample standard deviation and the number of runs when there are several; "
              f"{MISSING} = no run of ours; {NOT_IN_PAPER} = not in the paper, or a model of "
              f"another paper that we do not run.",
              f"Paper: {spec['source']}. {citation}"]
    if used:
        keys = ("train.steps", "train.batch_size", "train.learning_rate", "train.momentum",
                "data.source", "seed")
        lines.append(f"Ours: {len(used)} run(s); "
                     + "; ".join(f"{k}: {', '.join(_distinct(used, k))}" for k in keys) + ".")
    else:
        lines.append("Ours: no runs found.")
    if table["ignored"]:
        lines.append(f"{len(table['ignored'])} results.json file(s) belong to no cell of this "
                     f"table and were left out.")
    for p in problems:
        lines.append(f"Skipped {p}")
    return "\n".join(lines) + "\n"


def table_json(table: str | int, built: Mapping[str, Any], spec: Mapping[str, Any]
               ) -> dict[str, Any]:
    """What `table{N}.json` holds: every cell with its labels, paper value, our summary, the
    values and seeds averaged, and the runs they came from."""
    cells = [[{"row": r["label"], "column": c["label"], "paper": cell["paper"],
               "ours": cell["ours"], "values": cell["values"], "seeds": cell["seeds"],
               "runs": cell["runs"]} for c, cell in zip(spec["columns"], row_cells)]
             for r, row_cells in zip(spec["rows"], built["cells"])]
    return {"table": str(table), "cells": cells}


# --------------------------------------------------------------------------------------------
# Sweep summaries.


def metric_label(name: str) -> str:
    """`validation_error` -> `validation error %` (errors are shown in %)."""
    return name.replace("_", " ") + (" %" if name.endswith("error") else "")


def display_value(name: str, value: float) -> float:
    """A metric in its shown units: errors in %, the rest as logged."""
    return 100.0 * value if name.endswith("error") else value


def format_metric(name: str, stats: Mapping[str, float] | None, n: int) -> str:
    """`1.23±0.05` (errors in %, 2 decimals; losses 4 decimals), `(n=k)` added when fewer runs
    than the setting's `n` have the metric, the missing mark when none has it."""
    if stats is None:
        return MISSING
    spec = ".2f" if name.endswith("error") else ".4f" if name.endswith("loss") else ".4g"
    text = format(display_value(name, stats["mean"]), spec)
    if stats["n"] > 1:
        text += "±" + format(display_value(name, stats["std"]), spec)
    return text + (f" (n={stats['n']})" if stats["n"] != n else "")


def render_sweep_markdown(summary: Mapping[str, Any], problems: Sequence[str] = (),
                          figure_note: str | None = None) -> str:
    """The sweep as markdown: one row per setting, best first, then what it means."""
    metric, settings, names = summary["metric"], summary["settings"], summary["metrics"]
    runs = sum(s["n"] for s in settings)
    header = ["rank", *summary["varied_keys"], "runs", *map(metric_label, names)]
    lines = [f"### Sweep: {len(settings)} setting(s), {runs} run(s), ranked by {metric}", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for s in settings:
        rank = MISSING if s["rank"] is None else f"{s['rank']}" + (" (best)" if s["best"] else "")
        cells = [rank, *map(format_value, s["values"].values()), str(s["n"]),
                 *(format_metric(m, s["metrics"][m], s["n"]) for m in names)]
        lines.append("| " + " | ".join(cells) + " |")
    better = "higher" if higher_is_better(metric) else "lower"
    lines += ["", f"Each metric: mean over seeds ± sample standard deviation; errors in %. Rows "
              f"are ranked by mean {metric} ({better} is better); test metrics are shown but "
              f"never used to rank or choose."]
    best = summary["best"]
    if best is not None:
        lines.append(f"Best: {setting_label(best)} ({metric_label(metric)} "
                     f"{format_metric(metric, best['metrics'].get(metric), best['n'])}, "
                     f"{best['n']} seed(s)).")
    else:
        lines.append(f"{summary['refused'][0].upper()}{summary['refused'][1:]}.")
    seeds = sorted({format_value(x) for s in settings for x in s["seeds"]})
    lines.append(f"A setting is a run's config without `seed` and bookkeeping fields; seeds: "
                 f"{', '.join(seeds) or MISSING}. Fixed for all: see sweep_summary.json.")
    if summary["bookkeeping_varied"]:
        lines.append(f"Also differing, ignored as bookkeeping: "
                     f"{', '.join(summary['bookkeeping_varied'])}.")
    if figure_note:
        lines.append(figure_note)
    lines += summary["notes"]
    lines += [f"Skipped {p}" for p in problems]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Learning curves.


def render_curves_markdown(curves: Mapping[str, Mapping[str, list]]) -> str:
    """One row per (run, evaluation step): validation and test error in %."""
    lines = ["| run | step | validation error % | test error % |", "| --- | --- | --- | --- |"]
    for run, series in curves.items():
        steps = sorted({s for points in series.values() for s, _ in points})
        by = {k: dict(points) for k, points in series.items()}
        for step in steps:
            cells = [f"{100 * by[k][step]:.2f}" if step in by.get(k, {}) else MISSING
                     for k in CURVE_METRICS]
            lines.append(f"| {run} | {step} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


