"""A sweep's settings, ranked on validation metrics only (no rendering, no drawing).

`summarize_sweep(runs)` groups runs (from `stn.experiments.results.collect.collect_results`) into settings
(a run's config without `seed` and bookkeeping fields; the runs of a setting are its seeds),
averages every validation and test metric over seeds, and ranks the settings with
`rank_by_validation`, the sweep's chooser, which reads the validation metric and nothing else.
Markdown is written by `stn.experiments.results.render`, the figure drawn by `stn.experiments.results.figures`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from stn.experiments.results.collect import is_number, summarize

MISSING = "—"  # an absent value
VALIDATION, TEST = "validation_", "test_"  # prefixes of the metrics in results.json
# Config fields that say how a run was named, logged, checkpointed or where it kept files, not
# what it trained: runs that differ only in these (and in `seed`) share a setting. Whole dotted
# keys, then leaf names matched under any section.
BOOKKEEPING_KEYS = frozenset({"name", "seed", "distributed", "eval.batch_size"})
BOOKKEEPING_LEAVES = frozenset({"log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                                "num_images", "workdir", "tfds_data_dir", "manual_dir"})

def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"steps": 3}}` -> `{"train.steps": 3}` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def is_bookkeeping(key: str, extra: Sequence[str] = ()) -> bool:
    """True for a dotted config key that does not define a setting (see BOOKKEEPING_*)."""
    return key in BOOKKEEPING_KEYS or key.rsplit(".", 1)[-1] in BOOKKEEPING_LEAVES or key in extra


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


def varied_keys(configs: Sequence[Mapping[str, Any]], ignore: Sequence[str] = ()
                ) -> tuple[list[str], list[str]]:
    """Keys whose value differs between some flattened configs -> (setting keys, bookkeeping
    keys other than `seed`), each in the order the keys first appear. A key absent from a
    config reads None."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    differ = [k for k in keys if len({canonical(c.get(k)) for c in configs}) > 1]
    return ([k for k in differ if not is_bookkeeping(k, ignore)],
            [k for k in differ if is_bookkeeping(k, ignore) and k != "seed"])


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
    """Group runs into settings and rank them on `metric` (see `rank_by_validation`).

    Returns {"metric", "varied_keys", "bookkeeping_varied", "fixed" (the setting keys shared by
    every run), "metrics", "settings" (ranked best first, then the unranked), "best" (a setting
    or None), "refused" (why there is no best, or None), "notes"}. Each setting is {"values"
    (its varied keys), "rank", "best", "n", "seeds", "runs" (paths), "metrics" ({name:
    summarize(...) or None}, in results.json's units: errors are fractions)}.
    """
    check_chooser_metric(metric)
    flats = [flatten_config(run["config"]) for run in runs]
    varied, bookkeeping = varied_keys(flats, ignore)
    groups: dict[tuple, list[int]] = {}
    for i, flat in enumerate(flats):
        groups.setdefault(tuple(canonical(flat.get(k)) for k in varied), []).append(i)
    members = sorted(groups.values(),
                     key=lambda idx: [order_key(flats[idx[0]].get(k)) for k in varied])
    names = metric_names(runs)
    settings, notes = [], []
    for idx in members:
        group = [runs[i] for i in idx]
        seeds = [run["config"].get("seed") for run in group]
        setting = {"values": {k: flats[idx[0]].get(k) for k in varied}, "rank": None,
                   "best": False, "n": len(group), "seeds": seeds,
                   "runs": [run.get("path") for run in group], "metrics": {}}
        for name in names:
            values = [run[name] for run in group if is_number(run.get(name))]
            setting["metrics"][name] = summarize(values) if values else None
        for seed in sorted({canonical(s) for s in seeds if seeds.count(s) > 1}):
            twins = [r["path"] for r, s in zip(group, seeds) if canonical(s) == seed]
            notes.append(f"{setting_label(setting)}: seed {seed} in {len(twins)} runs "
                         f"({', '.join(map(str, twins))}); all are averaged")
        settings.append(setting)
    refused, order = None, list(range(len(settings)))
    if settings:
        try:
            # The chooser sees each run's validation metric only.
            ranked, unranked = rank_by_validation(
                [[{metric: runs[i].get(metric)} for i in idx] for idx in members], metric)
        except ValueError as e:
            refused = str(e)
        else:
            order = ranked + unranked
            for rank, i in enumerate(ranked, 1):
                settings[i]["rank"] = rank
            settings[ranked[0]]["best"] = True
            if unranked:
                notes.append(f"Not ranked ({metric} missing from some run): "
                             + "; ".join(setting_label(settings[i]) for i in unranked))
    else:
        refused = "no best setting: no runs found"
    settings = [settings[i] for i in order]
    fixed = {k: v for k, v in flats[0].items()
             if k not in varied and not is_bookkeeping(k, ignore)} if flats else {}
    return {"metric": metric, "varied_keys": varied, "bookkeeping_varied": bookkeeping,
            "fixed": fixed, "metrics": names, "settings": settings,
            "best": next((s for s in settings if s["best"]), None), "refused": refused,
            "notes": notes}


def format_value(value: Any) -> str:
    """A config value as text: numbers as `%g`, None (absent) as the missing mark."""
    if value is None:
        return MISSING
    if is_number(value):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def setting_label(setting: Mapping[str, Any]) -> str:
    """`train.learning_rate=0.01, model.loc_lr_multiplier=0.1` (or `the only setting`)."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in setting["values"].items()) \
        or "the only setting"


