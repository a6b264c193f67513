"""Tables as text: markdown for the paper's tables, sweep summaries and learning curves, and
the JSON of a paper table's cells; pure functions of what `summary` built (`tables` writes the
files).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stn.experiments import config_compare
from stn.experiments.results.collect import CURVE_METRICS
from stn.experiments.results.summary import MISSING, format_value, higher_is_better, setting_label

NOT_IN_PAPER = "n/a"
MIXED = "mixed"  # a cell whose runs differ in more than their seed: not averaged


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    return [f"| {' | '.join(row)} |" for row in (header, ["---"] * len(header), *rows)]


# --------------------------------------------------------------------------------------------
# The paper's tables.


def format_stats(stats: Mapping[str, float] | None, spec: str = ".2f", n: int = 1,
                 scale: float = 1.0) -> str:
    """`0.62±0.05 (n=3)`: the mean ± sd of a `summarize` times `scale` (the sd only when
    there are several values), `(n=k)` when k is not `n`, the missing mark for None."""
    if stats is None:
        return MISSING
    text = format(scale * stats["mean"], spec)
    if stats["n"] > 1:
        text += "±" + format(scale * stats["std"], spec)
    return text + (f" (n={stats['n']})" if stats["n"] != n else "")


def format_cell(cell: Mapping[str, Any], reproducible: bool = True) -> str:
    """`paper / ours`, e.g. `0.5 / 0.62±0.05 (n=3)`, `0.5 / —` or `0.5 / mixed`; `reproducible`
    is False for rows of other papers' models, which we do not run (their "ours" reads n/a)."""
    paper = NOT_IN_PAPER if cell["paper"] is None else f"{cell['paper']:.1f}"
    ours = (NOT_IN_PAPER if not reproducible else MIXED if cell["differ"]
            else format_stats(cell["ours"]))
    return f"{paper} / {ours}"


def render_markdown(table: Mapping[str, Any], spec: Mapping[str, Any], citation: str,
                    problems: Sequence[str] = ()) -> str:
    """The table as markdown: one row per model, each cell `paper / ours`, then what was used."""
    lines = [f"### {spec['title']}: paper / ours", "", *markdown_table(
        ["model"] + [c["label"] for c in spec["columns"]],
        ([row["label"], *(format_cell(c, row["match"] is not None) for c in cells)]
         for row, cells in zip(spec["rows"], table["cells"])))]
    used = table["used"]
    lines += ["", f"Each cell: the paper's value / ours, in %. Ours is the mean over seeds (runs "
              f"that differ in nothing else), ± the sample standard deviation and the number "
              f"of seeds when there are several; {MISSING} = no run of ours; {MIXED} = runs "
              f"that differ in more than their seed, not averaged (below); {NOT_IN_PAPER} = not "
              f"in the paper, or a model of another paper that we do not run.",
              f"Paper: {spec['source']}. {citation}"]
    if used:
        keys = ("train.steps", "train.batch_size", "train.learning_rate", "train.momentum",
                "data.source", "seed")
        flats = [config_compare.flatten(run["config"]) for run in used]
        lines.append(f"Ours: {len(used)} run(s); " + "; ".join(
            f"{k}: {', '.join(sorted({str(flat.get(k)) for flat in flats}))}" for k in keys) + ".")
    else:
        lines.append("Ours: no runs found.")
    if table["ignored"]:
        lines.append(f"{len(table['ignored'])} results.json file(s) belong to no cell of this "
                     f"table and were left out.")
    lines += [f"Refused {line}" for line in table["refused"]] + table["notes"]
    lines += [f"Skipped {p}" for p in problems]
    return "\n".join(lines) + "\n"


def table_json(table: str | int, built: Mapping[str, Any], spec: Mapping[str, Any]
               ) -> dict[str, Any]:
    """What `table{N}.json` holds: every cell with its labels, paper value, our summary, the
    values and seeds averaged, the runs they came from, and the fields its runs differ in."""
    cells = [[{"row": r["label"], "column": c["label"], **cell}
              for c, cell in zip(spec["columns"], row_cells)]
             for r, row_cells in zip(spec["rows"], built["cells"])]
    return {"table": str(table), "cells": cells, "refused": built["refused"],
            "notes": built["notes"]}


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
    spec = ".2f" if name.endswith("error") else ".4f" if name.endswith("loss") else ".4g"
    return format_stats(stats, spec, n, display_value(name, 1.0))


def render_sweep_markdown(summary: Mapping[str, Any], problems: Sequence[str] = (),
                          figure_note: str | None = None) -> str:
    """The sweep as markdown: one row per setting, best first, then what it means."""
    metric, settings, names = summary["metric"], summary["settings"], summary["metrics"]
    runs = sum(s["n"] for s in settings)
    rows = [[MISSING if s["rank"] is None else f"{s['rank']}" + (" (best)" if s["best"] else ""),
             *map(format_value, s["values"].values()), str(s["n"]),
             *(format_metric(m, s["metrics"][m], s["n"]) for m in names)] for s in settings]
    lines = [f"### Sweep: {len(settings)} setting(s), {runs} run(s), ranked by {metric}", "",
             *markdown_table(["rank", *summary["varied_keys"], "runs",
                              *map(metric_label, names)], rows)]
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
    lines.append(f"A setting is a run's config without `seed` and the fields that do not change "
                 f"the numbers; seeds: {', '.join(seeds) or MISSING}. Fixed for all: see "
                 f"sweep_summary.json.")
    if summary["bookkeeping_varied"]:
        lines.append(f"Also differing, ignored (they do not change the numbers): "
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
    rows = []
    for run, series in curves.items():
        by = {k: dict(points) for k, points in series.items()}
        for step in sorted({s for points in series.values() for s, _ in points}):
            rows.append([run, str(step), *(f"{100 * by[k][step]:.2f}" if step in by.get(k, {})
                                           else MISSING for k in CURVE_METRICS)])
    return "\n".join(markdown_table(["run", "step", "validation error %", "test error %"], rows))


