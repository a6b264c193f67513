"""The paper's tables beside ours, and a summary of any sweep: markdown, JSON and a PNG.

    python -m stn.tables --workdir=runs/table1 --table=1

reads every `results.json` under WORKDIR (recursively), puts each run in its cell by its config
(Table 1: `data.distortion` x `model.name` [+ `model.transform`]; Table 2: `data.variant` x
`model.name`), averages seeds (mean and sample standard deviation), and writes
`WORKDIR/table1.md`, `WORKDIR/table1.json` and `WORKDIR/table1.png`. The paper's numbers and how a
run maps to a cell live in `stn/paper_results.json`, with the citation.

    python -m stn.tables --workdir=runs/lr_rts_st_cnn --table=sweep

summarises any sweep: one row per setting (the config without `seed` and bookkeeping fields),
the config keys that vary across the sweep, mean and spread over seeds of every validation and
test metric, rows sorted by validation error and the best setting marked (chosen on validation
metrics only), in `WORKDIR/sweep.md`, `WORKDIR/sweep_summary.json` and `WORKDIR/sweep.png`.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).with_name("paper_results.json")
RESULTS_FILE = "results.json"  # what each run writes last (stn.training)
MISSING = "—"  # no run of ours in this cell
NOT_IN_PAPER = "n/a"


def paper_results() -> dict[str, Any]:
    """The paper's tables, citation and cell-matching rules (stn/paper_results.json)."""
    return json.loads(PAPER_FILE.read_text())


def table_spec(table: str | int) -> dict[str, Any]:
    """One table of the paper: title, columns, rows (each with its paper values), metric."""
    tables = paper_results()["tables"]
    if str(table) not in tables:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(tables)}, or sweep "
                         f"(--table=sweep: a summary of any sweep)")
    return tables[str(table)]


# --------------------------------------------------------------------------------------------
# Collecting runs.


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
                or not all(_is_number(run.get(key)) for key in required):
            wanted = " and ".join(["'config'"] + [f"a numeric {key!r}" for key in required])
            problems.append(f"{path}: expected a dict with {wanted}")
            continue
        runs.append(dict(run, path=str(path)))
    return runs, problems + incomplete_runs(workdir)


def incomplete_runs(workdir: str | os.PathLike) -> list[str]:
    """One line per run under `workdir` without a results.json: a point listed in a sweep's
    manifest (`sweep.json`, written by `stn.sweeps`) whose folder lacks it, or a folder where
    training started (it holds `config.json`) and has not finished (still running, or failed)."""
    root = Path(workdir)
    folders = set()
    for manifest in root.rglob("sweep.json"):
        try:
            points = json.loads(manifest.read_text())["points"]
            folders.update(manifest.parent / p["name"] for p in points)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a manifest of stn.sweeps
    folders.update(c.parent for c in root.rglob("config.json"))
    missing = []
    for folder in sorted(folders):
        # A config.json inside a finished run (e.g. in its checkpoints) is not a run of its own.
        inside_run = any((parent / RESULTS_FILE).exists()
                         for parent in folder.parents if root in (parent, *parent.parents))
        if not (folder / RESULTS_FILE).exists() and not inside_run:
            missing.append(f"{folder}: no {RESULTS_FILE} (not run yet, still running, or failed; "
                           f"see its log.txt)")
    return missing


def _is_number(value: Any) -> bool:
    """True for an int or float (NaN included), False for bools, None and everything else."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    """(row, column) of the cell a run belongs to, or None if it belongs to no cell."""
    cfg = run["config"]
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

    Each cell is {"paper": float|None, "ours": summary|None, "runs": [paths]}; ours are in %.
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
            if not own or not _is_number(run.get(metric)):
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


# --------------------------------------------------------------------------------------------
# Markdown.


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
        lines.append("| " + " | ".join([row["label"]] + [format_cell(c, row["match"] is not None) for c in cells]) + " |")
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


# --------------------------------------------------------------------------------------------
# Figure (Pillow only, so no plotting library is needed).


def _font(size: int):
    """Pillow's built-in scalable font at `size` px (falls back to the bitmap font)."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _nice_ticks(top: float) -> list[float]:
    """About five round tick values from 0 to at least `top`."""
    raw = max(top, 1e-6) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(math.ceil(top / step)) + 1)]


def draw_figure(table: Mapping[str, Any], spec: Mapping[str, Any], path: str | os.PathLike
                ) -> None:
    """A PNG with one panel per column; per model a grey paper bar beside a blue bar of ours
    with a ±1 standard deviation whisker over seeds; a cross marks a cell we did not run."""
    from PIL import Image, ImageDraw

    rows, cols, cells = spec["rows"], spec["columns"], table["cells"]
    bar, gap, pad = 14, 12, 12
    panel_w = len(rows) * (2 * bar + gap) + gap
    font, small, big = _font(13), _font(11), _font(16)
    left, top, plot_h = 60, 60, 320
    label_h = 16 + max(small.getbbox(r["label"])[2] for r in rows)
    title = (f"{spec['title']}: paper (grey) vs ours (blue, ±1 sd over seeds; "
             f"x = no run)")
    width = max(left + len(cols) * (panel_w + pad) + 20, left + int(big.getlength(title)) + 20)
    height = top + plot_h + label_h + 20
    values = [v for row in cells for c in row
              for v in ([c["paper"]] if c["paper"] is not None else [])
              + ([c["ours"]["mean"] + c["ours"]["std"]] if c["ours"] else [])]
    ticks = _nice_ticks(max(values) if values else 1.0)
    y_max = ticks[-1] or 1.0
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    paper_color, ours_color, ink = (170, 170, 170), (52, 101, 164), (30, 30, 30)

    def y_of(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    draw.text((left, 8), title, fill=ink, font=big)
    for t in ticks:
        y = y_of(t)
        draw.line([(left - 4, y), (left + len(cols) * (panel_w + pad) - pad, y)],
                  fill=(230, 230, 230))
        draw.text((left - 8, y), f"{t:g}", fill=ink, font=small, anchor="rm")
    draw.text((8, top - 24), spec.get("unit", "error %"), fill=ink, font=font)
    for j, col in enumerate(cols):
        x0 = left + j * (panel_w + pad)
        draw.rectangle([x0, top, x0 + panel_w, top + plot_h], outline=(120, 120, 120))
        draw.text((x0 + panel_w / 2, top - 8), col["label"], fill=ink, font=big, anchor="mb")
        for i, row in enumerate(rows):
            c = cells[i][j]
            xa = x0 + gap + i * (2 * bar + gap)
            base = top + plot_h
            if c["paper"] is not None:
                draw.rectangle([xa, y_of(c["paper"]), xa + bar - 1, base], fill=paper_color)
            xb = xa + bar
            if c["ours"] is not None:
                mean, std = c["ours"]["mean"], c["ours"]["std"]
                draw.rectangle([xb, y_of(mean), xb + bar - 1, base], fill=ours_color)
                if c["ours"]["n"] > 1:
                    _error_bar(draw, xb + bar / 2, y_of(mean + std), y_of(max(mean - std, 0.0)),
                               ink, 2)
            elif row["match"] is not None:
                draw.line([(xb + 2, base - 12), (xb + bar - 3, base - 2)], fill=(200, 40, 40), width=2)
                draw.line([(xb + 2, base - 2), (xb + bar - 3, base - 12)], fill=(200, 40, 40), width=2)
            _vertical_text(img, row["label"], (xa + bar, base + 6), small, ink)
    img.save(path)


def _error_bar(draw, x: float, y_top: float, y_bottom: float, fill, width: int) -> None:
    """A vertical whisker from `y_top` to `y_bottom` (pixels) with a short cap at each end."""
    draw.line([(x, y_top), (x, y_bottom)], fill=fill, width=width)
    for y in (y_top, y_bottom):
        draw.line([(x - 4, y), (x + 4, y)], fill=fill, width=width)


def _vertical_text(img, text: str, anchor_top_center: tuple[float, float], font, fill) -> None:
    """Paste `text` rotated 90 degrees (reading upwards) with its end at the given point."""
    from PIL import Image, ImageDraw
    box = font.getbbox(text)
    w, h = box[2] - box[0] + 2, box[3] - box[1] + 4
    label = Image.new("L", (w, h), 0)
    ImageDraw.Draw(label).text((-box[0] + 1, -box[1] + 2), text, fill=255, font=font)
    label = label.rotate(90, expand=True)
    x, y = anchor_top_center
    img.paste(Image.new("RGB", label.size, fill), (int(x - label.width / 2), int(y)), label)


# --------------------------------------------------------------------------------------------
# Sweep summaries: any sweep, one row per setting, the best chosen on validation metrics only.

VALIDATION, TEST = "validation_", "test_"  # prefixes of the metrics in results.json
# Config fields that say how a run was named, logged, checkpointed or where it kept files, not
# what it trained: runs that differ only in these (and in `seed`) share a setting. Whole dotted
# keys, then leaf names matched under any section.
BOOKKEEPING_KEYS = frozenset({"name", "seed", "distributed", "eval.batch_size"})
BOOKKEEPING_LEAVES = frozenset({"log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                                "num_images", "workdir", "tfds_data_dir", "manual_dir"})
# Tango colours; the first is the blue of our bars in the paper tables.
PALETTE = [(52, 101, 164), (245, 121, 0), (78, 154, 6), (204, 0, 0), (117, 80, 123),
           (143, 89, 2), (6, 152, 154), (85, 87, 83)]


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


def _canonical(value: Any) -> str:
    """A hashable form under which 1 and 1.0 are the same value (an absent key reads None)."""
    if _is_number(value):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


def _order_key(value: Any) -> tuple:
    """Sort numbers by value, then everything else by its text, then absent values."""
    if _is_number(value):
        return (0, float(value), "")
    return (2, 0.0, "") if value is None else (1, 0.0, _canonical(value))


def varied_keys(configs: Sequence[Mapping[str, Any]], ignore: Sequence[str] = ()
                ) -> tuple[list[str], list[str]]:
    """Keys whose value differs between some flattened configs -> (setting keys, bookkeeping
    keys other than `seed`), each in the order the keys first appear. A key absent from a
    config reads None."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    differ = [k for k in keys if len({_canonical(c.get(k)) for c in configs}) > 1]
    return ([k for k in differ if not is_bookkeeping(k, ignore)],
            [k for k in differ if is_bookkeeping(k, ignore) and k != "seed"])


def metric_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The validation and test metrics with a number in some run: validation first; within
    each, error, then loss, then the rest by name."""
    names = {k for run in runs for k, v in run.items()
             if k.startswith((VALIDATION, TEST)) and _is_number(v)}
    suffix = {"error": 0, "loss": 1}
    return sorted(names, key=lambda k: (not k.startswith(VALIDATION),
                                        suffix.get(k.split("_", 1)[1], 2), k))


def _higher_is_better(metric: str) -> bool:
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
        if values and all(_is_number(v) for v in values):
            means[i] = sum(values) / len(values)
        else:
            unranked.append(i)
    if not means:
        raise ValueError(f"no best setting: no setting has {metric} in every run (runs with "
                         f"config.data.validation_size=0 have none), and the chooser never "
                         f"falls back to test metrics")
    sign = -1.0 if _higher_is_better(metric) else 1.0
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
        groups.setdefault(tuple(_canonical(flat.get(k)) for k in varied), []).append(i)
    members = sorted(groups.values(),
                     key=lambda idx: [_order_key(flats[idx[0]].get(k)) for k in varied])
    names = metric_names(runs)
    settings, notes = [], []
    for idx in members:
        group = [runs[i] for i in idx]
        seeds = [run["config"].get("seed") for run in group]
        setting = {"values": {k: flats[idx[0]].get(k) for k in varied}, "rank": None,
                   "best": False, "n": len(group), "seeds": seeds,
                   "runs": [run.get("path") for run in group], "metrics": {}}
        for name in names:
            values = [run[name] for run in group if _is_number(run.get(name))]
            setting["metrics"][name] = summarize(values) if values else None
        for seed in sorted({_canonical(s) for s in seeds if seeds.count(s) > 1}):
            twins = [r["path"] for r, s in zip(group, seeds) if _canonical(s) == seed]
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
    if _is_number(value):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value)


def setting_label(setting: Mapping[str, Any]) -> str:
    """`train.learning_rate=0.01, model.loc_lr_multiplier=0.1` (or `the only setting`)."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in setting["values"].items()) \
        or "the only setting"


def metric_label(name: str) -> str:
    """`validation_error` -> `validation error %` (errors are shown in %)."""
    return name.replace("_", " ") + (" %" if name.endswith("error") else "")


def _display(name: str, value: float) -> float:
    """A metric in its shown units: errors in %, the rest as logged."""
    return 100.0 * value if name.endswith("error") else value


def format_metric(name: str, stats: Mapping[str, float] | None, n: int) -> str:
    """`1.23±0.05` (errors in %, 2 decimals; losses 4 decimals), `(n=k)` added when fewer runs
    than the setting's `n` have the metric, the missing mark when none has it."""
    if stats is None:
        return MISSING
    spec = ".2f" if name.endswith("error") else ".4f" if name.endswith("loss") else ".4g"
    text = format(_display(name, stats["mean"]), spec)
    if stats["n"] > 1:
        text += "±" + format(_display(name, stats["std"]), spec)
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
    better = "higher" if _higher_is_better(metric) else "lower"
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
# Sweep figure: a metric against the varied key(s), drawn with Pillow.


def plot_keys(summary: Mapping[str, Any], x: str | None = None, lines: str | None = None
              ) -> tuple[str, str | None, dict[str, Any]]:
    """(x-axis key, key with one line per value or None, keys held at the best setting).

    By default x is the numeric varied key with the most values (ties: the one spanning more
    decades, then the later in the config), lines the remaining key with the fewest values (ties:
    the earlier); any further varied keys are held
    at the best setting's values (the first row's without a best). Raises ValueError when no
    key varies or `x`/`lines` is not a varied key.
    """
    varied = summary["varied_keys"]
    if not varied:
        raise ValueError("every run has the same setting, so there is nothing to plot against")
    for name, key in (("x", x), ("lines", lines)):
        if key is not None and key not in varied:
            raise ValueError(f"--{name}={key!r} is not a key that varies in this sweep; "
                             f"those are {', '.join(varied)}")
    values = {k: [s["values"][k] for s in summary["settings"]] for k in varied}

    def span(k: str) -> float:
        positive = [float(v) for v in values[k] if _is_number(v) and v > 0]
        return math.log10(max(positive) / min(positive)) if positive else 0.0

    def distinct(k: str) -> int:
        return len({_canonical(v) for v in values[k]})

    if x is None:  # last ties: the later key in the config (train.* knobs come after model.*)
        x = max((k for k in varied if k != lines),
                key=lambda k: (all(_is_number(v) for v in values[k]), distinct(k), span(k),
                               varied.index(k)))
    rest = [k for k in varied if k != x]
    if lines is None and rest:
        lines = min(rest, key=distinct)
    anchor = summary["best"] or summary["settings"][0]
    held = {k: anchor["values"][k] for k in rest if k != lines}
    return x, lines, held


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks from the largest at or below `lo` to the smallest at or above `hi` (lo > 0);
    only the decades when that gives too many."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    series = [m * 10.0 ** e for e in range(first, last + 1) for m in (1, 2, 5)]
    below = max(t for t in series if t <= lo * 1.001)
    above = min(t for t in series if t >= hi / 1.001)
    ticks = [t for t in series if below <= t <= above]
    return ticks if len(ticks) <= 10 else [10.0 ** e for e in range(first, last + 1)]


def _spans_decade(values: Sequence[float]) -> bool:
    """True when all values are positive and the largest is over ten times the smallest."""
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)


def _unit_map(lo: float, hi: float, log: bool):
    """The map from a value in [lo, hi] to [0, 1], linear or logarithmic."""
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    width = (hi - lo) or 1.0
    return lambda v: ((math.log10(v) if log else v) - lo) / width


def _sweep_lines(shown: Sequence[Mapping[str, Any]], x_key: str, line_key: str | None
                 ) -> list[tuple[Any, list[Mapping[str, Any]]]]:
    """[(value of `line_key`, its settings in x order)], lines in value order (one line, value
    None, without a `line_key`)."""
    groups: dict[str, tuple[Any, list]] = {}
    for s in shown:
        value = s["values"][line_key] if line_key else None
        groups.setdefault(_canonical(value), (value, []))[1].append(s)
    lines = sorted(groups.values(), key=lambda group: _order_key(group[0]))
    for _, members in lines:
        members.sort(key=lambda s: _order_key(s["values"][x_key]))
    return lines


def _x_axis(xs: Sequence[Any], margin: float = 0.06) -> tuple[Callable[[Any], float], bool]:
    """(value -> [margin, 1 - margin], log): numbers on a linear scale, or a log scale when
    they span more than a decade; anything else (or one value) as equally spaced categories."""
    numeric = all(_is_number(v) for v in xs)
    log = numeric and _spans_decade([float(v) for v in xs])
    if numeric and len(xs) > 1:
        unit = _unit_map(float(xs[0]), float(xs[-1]), log)
    else:
        slot = {_canonical(v): i for i, v in enumerate(xs)}
        unit = lambda v: (slot[_canonical(v)] + 0.5) / len(xs)
    return (lambda v: margin + (1 - 2 * margin) * unit(v)), log


def _y_axis(points: Sequence[tuple[float, float]]
            ) -> tuple[list[float], Callable[[float], float], bool]:
    """(ticks, value -> [0, 1] clamped to the ticks' range, log) for (mean, sd) points: from 0
    on a linear scale, or on a log scale when the means span more than a decade."""
    log = _spans_decade([mean for mean, _ in points])
    if log:
        lows = [mean - sd if mean - sd > 0 else mean for mean, sd in points]
        ticks = _log_ticks(min(lows), max(mean + sd for mean, sd in points))
    else:
        ticks = _nice_ticks(max((mean + sd for mean, sd in points), default=1.0))
    lo, hi = ticks[0], ticks[-1] or 1.0
    unit = _unit_map(lo, hi, log)
    return ticks, (lambda v: unit(min(max(v, lo), hi))), log


def draw_sweep_figure(summary: Mapping[str, Any], path: str | os.PathLike,
                      x: str | None = None, lines: str | None = None) -> str:
    """A PNG with one panel for the ranking metric and one for its test twin (same y axis): the
    mean over seeds against the `x` key, a ±1 sd bar where a setting has several seeds, one
    line per value of the `lines` key, a ring on the best setting. Returns a one-line caption.
    """
    from PIL import Image, ImageDraw

    x_key, line_key, held = plot_keys(summary, x, lines)
    metric = summary["metric"]
    twin = TEST + metric[len(VALIDATION):]
    panels = [m for m in (metric, twin) if m in summary["metrics"]]
    if not panels:
        raise ValueError(f"no run has {metric} or {twin} to plot")
    shown = [s for s in summary["settings"]
             if all(_canonical(s["values"][k]) == _canonical(v) for k, v in held.items())]
    series = _sweep_lines(shown, x_key, line_key)
    xs = sorted({_canonical(s["values"][x_key]): s["values"][x_key] for s in shown}.values(),
                key=_order_key)
    x_unit, log_x = _x_axis(xs)
    stats = {(m, id(s)): (_display(m, s["metrics"][m]["mean"]), _display(m, s["metrics"][m]["std"]),
                          s["metrics"][m]["n"])
             for m in panels for s in shown if s["metrics"].get(m)
             and math.isfinite(s["metrics"][m]["mean"])}  # a NaN mean (diverged) is not drawn
    ticks, y_unit, log_y = _y_axis([(mean, sd if math.isfinite(sd) else 0.0)
                                    for mean, sd, _ in stats.values()])

    font, small, big = _font(13), _font(11), _font(16)
    ink, grid_ink = (30, 30, 30), (228, 228, 228)
    panel_w, panel_h, left, top, gap = 420, 300, 78, 86, 64
    labels = [f"{line_key} = {format_value(v)}" for v, _ in series] if line_key else []
    legend_w = max([int(font.getlength(t)) + 44 for t in labels] + [0])
    title = f"{' and '.join(map(metric_label, panels))} against {x_key}" + (
        f", one line per {line_key}" if line_key else "")
    held_text = (("; held at the best setting: " if summary["best"] else "; held at: ")
                 + ", ".join(f"{k}={format_value(v)}" for k, v in held.items())) if held else ""
    subtitle = "mean over seeds, bar = ±1 sd; " + (
        f"ring = best by {metric}" if summary["best"] else f"no best setting ({metric} missing)"
    ) + held_text
    width = max(left + len(panels) * (panel_w + gap) + legend_w,
                32 + int(max(big.getlength(title), font.getlength(subtitle))))
    img = Image.new("RGB", (width, top + panel_h + 64), "white")
    draw = ImageDraw.Draw(img)
    draw.text((16, 10), title, fill=ink, font=big)
    draw.text((16, 34), subtitle, fill=(80, 80, 80), font=font)
    unit = "error %" if metric.endswith("error") else metric[len(VALIDATION):].replace("_", " ")
    _vertical_text(img, unit + (" (log scale)" if log_y else ""), (18, top + panel_h / 2 - 40),
                   font, ink)

    for p, name in enumerate(panels):
        x0 = left + p * (panel_w + gap)
        px = lambda v: x0 + panel_w * x_unit(v)
        py = lambda v: top + panel_h * (1 - y_unit(v))
        for t in ticks:
            draw.line([(x0, py(t)), (x0 + panel_w, py(t))], fill=grid_ink)
            draw.text((x0 - 6, py(t)), f"{t:g}", fill=ink, font=small, anchor="rm")
        last_right = -math.inf
        for v in xs:
            draw.line([(px(v), top + panel_h), (px(v), top + panel_h + 4)], fill=ink)
            text, half = format_value(v), small.getlength(format_value(v)) / 2
            if px(v) - half > last_right + 4:  # skip labels that would overlap
                draw.text((px(v), top + panel_h + 7), text, fill=ink, font=small, anchor="mt")
                last_right = px(v) + half
        draw.rectangle([x0, top, x0 + panel_w, top + panel_h], outline=(120, 120, 120))
        draw.text((x0 + panel_w / 2, top - 8), metric_label(name), fill=ink, font=font,
                  anchor="mb")
        draw.text((x0 + panel_w / 2, top + panel_h + 26),
                  x_key + (" (log scale)" if log_x else ""), fill=ink, font=font, anchor="mt")
        for j, (_, members) in enumerate(series):
            color = PALETTE[j % len(PALETTE)]
            drawn = [(px(s["values"][x_key]), stats[name, id(s)], s["best"]) for s in members
                     if (name, id(s)) in stats]
            if len(drawn) > 1:
                draw.line([(u, py(mean)) for u, (mean, _, _), _ in drawn], fill=color, width=2)
            for u, (mean, sd, n), best in drawn:
                if n > 1 and math.isfinite(sd):
                    # In log scale a bar that would reach 0 or below ends at the axis.
                    _error_bar(draw, u, py(mean + sd),
                               py(mean - sd if mean > sd or not log_y else 0.0), color, 1)
                v = py(mean)
                draw.ellipse([u - 4, v - 4, u + 4, v + 4], fill=color)
                if best:
                    draw.ellipse([u - 9, v - 9, u + 9, v + 9], outline=ink, width=2)
    lx = left + len(panels) * (panel_w + gap) - gap + 20
    for j, text in enumerate(labels):
        y, color = top + 10 + 22 * j, PALETTE[j % len(PALETTE)]
        draw.line([(lx, y), (lx + 18, y)], fill=color, width=2)
        draw.ellipse([lx + 5, y - 4, lx + 13, y + 4], fill=color)
        draw.text((lx + 24, y), text, fill=ink, font=font, anchor="lm")
    img.save(path)
    return f"Figure: {Path(path).name}, {title}{held_text}."


def make_sweep_summary(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                       metric: str = "validation_error", figure: bool = True,
                       x: str | None = None, lines: str | None = None,
                       ignore: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    """Collect, rank and write WORKDIR/sweep.md, sweep_summary.json and sweep.png; returns the
    markdown and the summary (its "best" is None, with "refused" saying why, when no setting
    can be chosen on `metric`; its "figure" names the PNG, or is None when nothing varies, in
    which case an older sweep.png is removed)."""
    runs, problems = collect_results(workdir, required=())
    summary = summarize_sweep(runs, metric, ignore)
    out = Path(out_dir or workdir)
    out.mkdir(parents=True, exist_ok=True)
    note, summary["figure"] = None, None
    if figure:
        try:
            note = draw_sweep_figure(summary, out / "sweep.png", x, lines)
            summary["figure"] = "sweep.png"
        except ValueError as e:
            if x is not None or lines is not None:
                raise  # the user asked for keys that do not vary: say so
            note = f"No figure: {e}."
            (out / "sweep.png").unlink(missing_ok=True)  # an older figure would contradict
    markdown = render_sweep_markdown(summary, problems, note)
    (out / "sweep.md").write_text(markdown)
    (out / "sweep_summary.json").write_text(json.dumps(dict(summary, problems=problems),
                                                       indent=1) + "\n")
    return markdown, summary


# --------------------------------------------------------------------------------------------
# Command line.


def make_table(workdir: str | os.PathLike, table: str | int, out_dir: str | os.PathLike | None = None,
               figure: bool = True) -> str:
    """Collect, render and write WORKDIR/table{N}.md, .json and .png; returns the markdown."""
    spec = table_spec(table)
    runs, problems = collect_results(workdir, required=(spec.get("metric", "test_error"),))
    built = build_table(runs, spec)
    markdown = render_markdown(built, spec, paper_results()["citation"], problems)
    out = Path(out_dir or workdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"table{table}.md").write_text(markdown)
    cells = [[{"row": r["label"], "column": c["label"], "paper": cell["paper"],
               "ours": cell["ours"], "values": cell["values"], "seeds": cell["seeds"],
               "runs": cell["runs"]} for c, cell in zip(spec["columns"], row_cells)]
             for r, row_cells in zip(spec["rows"], built["cells"])]
    (out / f"table{table}.json").write_text(json.dumps({"table": str(table), "cells": cells},
                                                       indent=1) + "\n")
    if figure:
        draw_figure(built, spec, out / f"table{table}.png")
    return markdown



# --------------------------------------------------------------------------------------------
# Learning curves (`--table=curves`): validation and test error against steps.

CURVE_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189),
                 (255, 127, 14), (23, 190, 207), (140, 86, 75), (127, 127, 127),
                 (188, 189, 34), (227, 119, 194), (0, 0, 128), (128, 0, 0))


def collect_curves(workdir: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """`{run: {metric: [(step, value)]}}` for `validation_error` and `test_error` of every
    `metrics.jsonl` under `workdir` (a run is its folder, relative to `workdir`)."""
    from stn import metrics_io

    curves = {}
    for path in sorted(Path(workdir).rglob("metrics.jsonl")):
        series: dict[str, list[tuple[int, float]]] = {}
        for record in metrics_io.read_jsonl(str(path)):
            for key in ("validation_error", "test_error"):
                if _is_number(record.get(key)):
                    series.setdefault(key, []).append((int(record["step"]), float(record[key])))
        if series:
            curves[str(path.parent.relative_to(workdir)) or "."] = series
    return curves


def render_curves_markdown(curves: Mapping[str, Mapping[str, list]]) -> str:
    """One row per (run, evaluation step): validation and test error in %."""
    lines = ["| run | step | validation error % | test error % |", "| --- | --- | --- | --- |"]
    for run, series in curves.items():
        steps = sorted({s for points in series.values() for s, _ in points})
        by = {k: dict(points) for k, points in series.items()}
        for step in steps:
            cells = [f"{100 * by[k][step]:.2f}" if step in by.get(k, {}) else MISSING
                     for k in ("validation_error", "test_error")]
            lines.append(f"| {run} | {step} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def draw_curves(curves: Mapping[str, Mapping[str, list]], path: str | os.PathLike) -> None:
    """A PNG of error (%, log scale when it spans a decade) against steps: one colour per run,
    validation solid, test dashed."""
    from PIL import Image, ImageDraw

    points = [(s, 100 * v) for series in curves.values() for pts in series.values()
              for s, v in pts]
    if not points:
        raise ValueError("no run has validation_error or test_error to plot")
    width, height, left, right, top, bottom = 980, 520, 70, 310, 40, 50
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    ticks, y_unit, _ = _y_axis([(v, 0.0) for _, v in points])
    x_ticks = _nice_ticks(max(s for s, _ in points))
    x_of = lambda s: left + (width - left - right) * s / (x_ticks[-1] or 1)  # noqa: E731
    y_of = lambda v: height - bottom - (height - top - bottom) * y_unit(v)  # noqa: E731
    for t in ticks:
        draw.line([(left, y_of(t)), (width - right, y_of(t))], fill=(225, 225, 225))
        draw.text((left - 8, y_of(t)), f"{t:g}", fill="black", font=small, anchor="rm")
    for t in x_ticks:
        draw.text((x_of(t), height - bottom + 8), f"{t:g}", fill="black", font=small,
                  anchor="mt")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left, 12), "error % against training steps (validation solid, test dashed)",
              fill="black", font=font)
    draw.text(((left + width - right) / 2, height - 18), "training step", fill="black",
              font=small, anchor="mm")
    for i, (run, series) in enumerate(curves.items()):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        for key, dashed in (("validation_error", False), ("test_error", True)):
            xy = [(x_of(s), y_of(100 * v)) for s, v in sorted(series.get(key, []))]
            for a, b in zip(xy, xy[1:]):
                if dashed:  # a dash every other tenth of the segment
                    for k in range(0, 10, 2):
                        draw.line([(a[0] + (b[0] - a[0]) * k / 10, a[1] + (b[1] - a[1]) * k / 10),
                                   (a[0] + (b[0] - a[0]) * (k + 1) / 10,
                                    a[1] + (b[1] - a[1]) * (k + 1) / 10)], fill=colour, width=2)
                else:
                    draw.line([a, b], fill=colour, width=2)
            for x, y in xy:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((width - right + 12, top + 18 * i), run[-44:], fill=colour, font=small)
    img.save(path)


def make_curves(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                figure: bool = True) -> str:
    """Writes `curves.md` and `curves.png` for every run under `workdir`; returns the markdown."""
    curves = collect_curves(workdir)
    if not curves:
        raise ValueError(f"no metrics.jsonl with validation_error or test_error under {workdir}")
    out = Path(out_dir or workdir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = render_curves_markdown(curves)
    (out / "curves.md").write_text(markdown + "\n")
    if figure:
        draw_curves(curves, out / "curves.png")
    return markdown


def main(argv: Sequence[str]) -> None:
    """Print the table (a paper table or --table=sweep) and write its files."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {list(argv[1:])}")
    if not Path(f.workdir).is_dir():
        sys.exit(f"error: --workdir {f.workdir!r} is not a folder")
    out = Path(f.out_dir or f.workdir)
    try:
        if f.table == "curves":
            markdown, summary = make_curves(f.workdir, f.out_dir, figure=f.figure), None
            written = [out / "curves.md"] + ([out / "curves.png"] if f.figure else [])
        elif f.table == "sweep":
            markdown, summary = make_sweep_summary(
                f.workdir, f.out_dir, metric=f.metric, figure=f.figure, x=f.x, lines=f.lines,
                ignore=[k for k in f.ignore_keys.split(",") if k])
            written = [out / "sweep.md", out / "sweep_summary.json"] + \
                ([out / summary["figure"]] if summary["figure"] else [])
        else:
            markdown, summary = make_table(f.workdir, f.table, f.out_dir, figure=f.figure), None
            written = [out / f"table{f.table}.{ext}"
                       for ext in ("md", "json", "png")[:2 + f.figure]]
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(markdown)
    print("wrote " + ", ".join(map(str, written)))
    if summary is not None and summary["best"] is None:
        sys.exit(summary["refused"])  # the files are written; the exit status says: no choice


if __name__ == "__main__":
    from absl import app, flags
    flags.DEFINE_string("workdir", None, "Folder searched recursively for results.json files.")
    flags.DEFINE_string("table", "1", "A table of the paper in stn/paper_results.json (1, 2, "
                        "...), `sweep` for a summary of any sweep, or `curves` for validation "
                        "and test error against steps of every run.")
    flags.DEFINE_string("out_dir", None, "Where to write the files (default: workdir).")
    flags.DEFINE_boolean("figure", True, "Also draw the PNG.")
    flags.DEFINE_string("metric", "validation_error", "--table=sweep: the validation metric "
                        "that ranks the settings (mean over seeds).")
    flags.DEFINE_string("x", None, "--table=sweep: the varied config key on the figure's x "
                        "axis (default: the numeric one with the most values).")
    flags.DEFINE_string("lines", None, "--table=sweep: the varied config key drawn as one line "
                        "per value (default: the other one with the fewest values).")
    flags.DEFINE_string("ignore_keys", "", "--table=sweep: comma-separated dotted config keys "
                        "that do not define a setting, besides seed and the bookkeeping fields.")
    flags.mark_flag_as_required("workdir")
    app.run(main)
