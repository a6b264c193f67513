"""Runs grouped into settings, the paper's table cells and a sweep's ranking (no I/O, no
rendering, no drawing).

A run's *setting* is its config without `seed` and without the fields that do not change the
numbers (`stn.experiments.config_compare.NON_COMPUTATIONAL`, the list reruns use): runs of one
setting differ only in their seed, and only they are averaged. A seed is counted once: further
runs of the same setting and seed are copies, flagged and left out (`one_per_seed`).

- `build_table(runs, spec)`: each run in its cell of a paper table; a cell whose runs are of
  more than one setting is refused (named in `refused`), never averaged.
- `summarize_sweep(runs)`: the settings of a sweep of one task, ranked by `rank_by_validation`,
  the chooser, which reads the validation metric and nothing else.
- `paper_reference(config)`: the paper's number for a run, where a table gives one.
"""
from __future__ import annotations

import collections
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stn.experiments import config_compare
from stn.experiments.results.collect import is_number, paper_results

MISSING = "—"  # an absent value
VALIDATION, TEST = "validation_", "test_"  # prefixes of the metrics in results.json
SEED = "seed"
#: What does not make a setting: the seed, and every field that does not change the numbers.
NOT_A_SETTING = config_compare.NON_COMPUTATIONAL | {SEED}


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value), min and max."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "min": min(values), "max": max(values)}


def canonical(value: Any) -> str:
    """A hashable form under which 1 and 1.0 are the same value (an absent key reads None)."""
    if is_number(value):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


def order_key(value: Any) -> tuple:
    """Sort numbers by value, then everything else by its text, then absent values."""
    if is_number(value):
        return (0, float(value), "")
    return (2, 0.0, "") if value is None else (1, 0.0, canonical(value))


def format_value(value: Any) -> str:
    """A config value as text: numbers as `%g`, None (absent) as the missing mark."""
    if value is None:
        return MISSING
    if is_number(value):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------------------------
# Settings.


def setting_of(config: Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The flattened config without `NOT_A_SETTING` and the `ignore`d keys."""
    return config_compare.computational(config, NOT_A_SETTING | set(ignore))


def varied_keys(flats: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose value differs between some of the flattened configs, in the order they
    first appear (a key absent from a config reads None; 1 and 1.0 are equal)."""
    keys = dict.fromkeys(k for flat in flats for k in flat)
    return [k for k in keys if len({canonical(flat.get(k)) for flat in flats}) > 1]


def one_per_seed(runs: Sequence[Mapping[str, Any]], label: str) -> tuple[list, list[str]]:
    """(the first run of each seed, one note per seed with several runs). Runs of one setting
    and seed are copies of one sample, so averaging them as several seeds would shrink the
    spread; only the first (in path order) counts."""
    by_seed: dict[str, list] = {}
    for run in runs:
        by_seed.setdefault(canonical(run["config"].get(SEED)), []).append(run)
    notes = [f"{label}: seed {format_value(group[0]['config'].get(SEED))} in {len(group)} runs "
             f"({', '.join(str(r['path']) for r in group)}); counted once, from the first"
             for group in by_seed.values() if len(group) > 1]
    return [group[0] for group in by_seed.values()], notes


# --------------------------------------------------------------------------------------------
# The paper's tables.


def matches(flat: Mapping[str, Any], rule: Mapping[str, Any] | None) -> bool:
    """True when every dotted key of `rule` has that value in the flattened config (strings:
    any case)."""
    if rule is None:
        return False
    for key, want in rule.items():
        have = flat.get(key)
        if isinstance(have, str) and isinstance(want, str):
            if have.lower() != want.lower():
                return False
        elif have != want:
            return False
    return True


def cell_of(config: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[int, int] | None:
    """(row, column) of the cell a run with this config belongs to, or None.

    A table that names its `task` takes no run of another task (a config without `task`, e.g.
    one written by hand, is judged by the row and column rules alone). Of several matching
    rows the one with the most specific rule wins (CNN has no transform rule, ST-CNN Aff has
    one), whatever their order in the spec."""
    flat = config_compare.flatten(config)
    task = flat.get("task")
    if spec.get("task") is not None and task is not None and task != spec["task"]:
        return None
    rows = [i for i, r in enumerate(spec["rows"]) if matches(flat, r["match"])]
    cols = [j for j, c in enumerate(spec["columns"]) if matches(flat, c["match"])]
    if not rows or not cols:
        return None
    return max(rows, key=lambda i: len(spec["rows"][i]["match"])), cols[0]


def build_table(runs: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Runs in the table's cells -> {"cells": [[cell]], "used", "ignored", "notes", "refused"}.

    Each cell is {"paper": float|None, "ours": summary|None, "values" (%), "seeds", "runs",
    "differ"}. A column with its own `metric` (co-localisation's held-out and baseline columns)
    reads it from every run of its row whose config the column matches. A cell whose runs are
    of more than one setting gets no "ours": "differ" names the fields, and `refused` holds one
    line for it. Copies of one seed count once (`notes` says which)."""
    grouped: list[list[list]] = [[[] for _ in spec["columns"]] for _ in spec["rows"]]
    used, ignored = [], []
    for run in runs:
        where = cell_of(run["config"], spec)
        if where is None:
            ignored.append(run["path"])
            continue
        flat = config_compare.flatten(run["config"])
        for j, column in enumerate(spec["columns"]):
            metric = column.get("metric", spec.get("metric", "test_error"))
            own = j == where[1] or ("metric" in column and matches(flat, column["match"]))
            if own and is_number(run.get(metric)):
                grouped[where[0]][j].append((run, 100.0 * float(run[metric])))
        used.append(run)
    cells, notes, refused = [], [], []
    for row, row_runs in zip(spec["rows"], grouped):
        cells.append([_cell(paper, members, f"{row['label']}, {column['label']}", notes, refused)
                      for column, paper, members in zip(spec["columns"], row["paper"], row_runs)])
    return {"cells": cells, "used": used, "ignored": ignored, "notes": notes,
            "refused": refused}


def _cell(paper: float | None, members: Sequence[tuple[Mapping[str, Any], float]], label: str,
          notes: list[str], refused: list[str]) -> dict[str, Any]:
    """One cell of `build_table` from its (run, value %) pairs; appends its notes and
    refusal."""
    cell = {"paper": paper, "ours": None, "values": [], "seeds": [], "runs": [], "differ": []}
    differ = varied_keys([setting_of(run["config"]) for run, _ in members])
    if differ:
        refused.append(f"cell {label}: its {len(members)} runs differ in {', '.join(differ)}, "
                       f"not only in {SEED}, so they are not averaged; put each setting's runs "
                       f"under a folder of its own (or rank them with --table=sweep)")
        return dict(cell, differ=differ, runs=[run["path"] for run, _ in members])
    value_of = {id(run): value for run, value in members}
    kept, copies = one_per_seed([run for run, _ in members], f"cell {label}")
    notes += copies
    cell.update(values=[value_of[id(run)] for run in kept], runs=[run["path"] for run in kept],
                seeds=[run["config"].get(SEED) for run in kept])
    if kept:
        cell["ours"] = summarize(cell["values"])
    return cell


def paper_reference(config: Mapping[str, Any], metric: str = "test_error"
                    ) -> tuple[str, float] | None:
    """(label, value in %) of the paper's number for a run with this config, from the first
    table (in paper_results.json order) that measures `metric` and has a paper value in the
    run's cell; None where no table gives one."""
    for spec in paper_results()["tables"].values():
        where = cell_of(config, spec) if spec.get("metric", "test_error") == metric else None
        if where is not None and spec["rows"][where[0]]["paper"][where[1]] is not None:
            return (f"{spec['rows'][where[0]]['label']}, {spec['columns'][where[1]]['label']}",
                    float(spec["rows"][where[0]]["paper"][where[1]]))
    return None


# --------------------------------------------------------------------------------------------
# Sweeps.


def metric_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The validation and test metrics with a number in some run: validation first; within
    each, error, then loss, then the rest by name."""
    names = {k for run in runs for k, v in run.items()
             if k.startswith((VALIDATION, TEST)) and is_number(v)}
    suffix = {"error": 0, "loss": 1}
    return sorted(names, key=lambda k: (not k.startswith(VALIDATION),
                                        suffix.get(k.split("_", 1)[1], 2), k))


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximised; errors, losses and every other metric are minimised."""
    return metric.endswith("accuracy")


def check_chooser_metric(metric: str) -> None:
    """Raise ValueError (one line) unless `metric` is a validation metric."""
    if not metric.startswith(VALIDATION):
        raise ValueError(f"a sweep's best setting is chosen on validation metrics only; "
                         f"--metric={metric!r} does not start with {VALIDATION!r}")


def rank_by_validation(settings: Sequence[Sequence[Mapping[str, Any]]],
                       metric: str = "validation_error") -> tuple[list[int], list[int]]:
    """Order settings (each a list of runs, one per seed) by the mean of `metric` over their
    runs, best first -> (ranked indices, indices of settings that cannot be ranked).

    This is the sweep's chooser. It reads `metric` from each run and nothing else, so a test
    metric cannot sway a choice; a setting where some run lacks a numeric `metric` is left
    unranked (never scored on a test metric instead). A NaN mean ranks last. Raises ValueError
    (one line) when `metric` is not a validation metric or no setting can be ranked.
    """
    check_chooser_metric(metric)
    means, unranked = {}, []
    for i, runs in enumerate(settings):
        values = [run.get(metric) for run in runs]
        if values and all(is_number(v) for v in values):
            means[i] = sum(values) / len(values)
        else:
            unranked.append(i)
    if not means:
        raise ValueError(f"no best setting: no setting has {metric} in every run (runs with "
                         f"config.data.validation_size=0 have none), and the chooser never "
                         f"falls back to test metrics")
    sign = -1.0 if higher_is_better(metric) else 1.0
    ranked = sorted(means, key=lambda i: (sign * means[i] if math.isfinite(means[i])
                                          else math.inf, i))
    return ranked, unranked


def summarize_sweep(runs: Sequence[Mapping[str, Any]], metric: str = "validation_error",
                    ignore: Sequence[str] = ()) -> dict[str, Any]:
    """Group the runs of one task into settings and rank them on `metric`.

    Returns {"metric", "varied_keys", "bookkeeping_varied" (fields that differ but make no
    setting, `seed` aside), "fixed" (the setting keys shared by every run), "metrics",
    "settings" (ranked best first, then the unranked), "best" (a setting or None), "refused"
    (why there is no best, or None), "notes"}. Each setting is {"values" (its varied keys),
    "rank", "best", "n" (seeds), "seeds", "runs" (paths), "metrics" ({name: summarize(...) or
    None}, in results.json's units: errors are fractions)}. Raises ValueError when the runs
    are of several tasks or `metric` is not a validation metric.
    """
    check_chooser_metric(metric)
    tasks = collections.Counter(format_value(run["config"].get("task")) for run in runs)
    if len(tasks) > 1:  # settings of different tasks are not settings of one sweep
        raise ValueError(f"the runs are of {len(tasks)} tasks (" + ", ".join(
            f"{t}: {n} run(s)" for t, n in sorted(tasks.items())) + "); a sweep ranks the "
            "settings of one task: point --workdir at the folder of one task's runs")
    flats = [setting_of(run["config"], ignore) for run in runs]
    varied = varied_keys(flats)
    bookkeeping = [k for k in varied_keys([config_compare.computational(r["config"], ())
                                        for r in runs]) if k not in varied and k != SEED]
    groups: dict[tuple, list[int]] = {}
    for i, flat in enumerate(flats):
        groups.setdefault(tuple(canonical(flat.get(k)) for k in varied), []).append(i)
    members = sorted(groups.values(),
                     key=lambda idx: [order_key(flats[idx[0]].get(k)) for k in varied])
    names = metric_names(runs)
    settings, notes, seeded = [], [], []
    for idx in members:
        values = {k: flats[idx[0]].get(k) for k in varied}
        group, copies = one_per_seed([runs[i] for i in idx], setting_label({"values": values}))
        notes += copies
        seeded.append(group)
        setting = {"values": values, "rank": None, "best": False, "n": len(group),
                   "seeds": [run["config"].get(SEED) for run in group],
                   "runs": [run.get("path") for run in group], "metrics": {}}
        for name in names:
            numbers = [run[name] for run in group if is_number(run.get(name))]
            setting["metrics"][name] = summarize(numbers) if numbers else None
        settings.append(setting)
    refused, order = None, list(range(len(settings)))
    try:  # the chooser sees each run's validation metric only
        ranked, unranked = rank_by_validation(
            [[{metric: run.get(metric)} for run in group] for group in seeded], metric)
    except ValueError as e:
        refused = str(e) if settings else "no best setting: no runs found"
    else:
        order = ranked + unranked
        for rank, i in enumerate(ranked, 1):
            settings[i]["rank"] = rank
        settings[ranked[0]]["best"] = True
        if unranked:
            notes.append(f"Not ranked ({metric} missing from some run): "
                         + "; ".join(setting_label(settings[i]) for i in unranked))
    settings = [settings[i] for i in order]
    fixed = {k: v for k, v in flats[0].items() if k not in varied} if flats else {}
    return {"metric": metric, "varied_keys": varied, "bookkeeping_varied": bookkeeping,
            "fixed": fixed, "metrics": names, "settings": settings,
            "best": next((s for s in settings if s["best"]), None), "refused": refused,
            "notes": notes}


def setting_label(setting: Mapping[str, Any]) -> str:
    """`train.learning_rate=0.01, model.loc_lr_multiplier=0.1` (or `the only setting`)."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in setting["values"].items()) \
        or "the only setting"
