"""The paper's tables beside ours: collect `results.json` files, print markdown, draw a PNG.

    python -m stn.tables --workdir=runs/table1 --table=1

reads every `results.json` under WORKDIR (recursively), puts each run in its cell by its config
(Table 1: `data.distortion` x `model.name` [+ `model.transform`]; Table 2: `data.variant` x
`model.name`), averages seeds (mean and sample standard deviation), and writes
`WORKDIR/table1.md`, `WORKDIR/table1.json` and `WORKDIR/table1.png`. The paper's numbers and how a
run maps to a cell live in `stn/paper_results.json`, with the citation.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).with_name("paper_results.json")
MISSING = "—"  # no run of ours in this cell
NOT_IN_PAPER = "n/a"


def paper_results() -> dict[str, Any]:
    """The paper's tables, citation and cell-matching rules (stn/paper_results.json)."""
    return json.loads(PAPER_FILE.read_text())


def table_spec(table: str | int) -> dict[str, Any]:
    """One table of the paper: title, columns, rows (each with its paper values), metric."""
    tables = paper_results()["tables"]
    if str(table) not in tables:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(tables)}")
    return tables[str(table)]


# --------------------------------------------------------------------------------------------
# Collecting runs.


def collect_results(workdir: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """All results.json under `workdir` (recursively) -> (runs, problems).

    Each run gets a `path` key. A file that does not parse, or lacks `config` or `test_error`, is
    reported in `problems` (one line each) instead of aborting the table.
    """
    runs, problems = [], []
    for path in sorted(Path(workdir).rglob("results.json")):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
            continue
        if not isinstance(run, dict) or not isinstance(run.get("config"), dict) \
                or not isinstance(run.get("test_error"), (int, float)):
            problems.append(f"{path}: expected a dict with 'config' and a numeric 'test_error'")
            continue
        runs.append(dict(run, path=str(path)))
    return runs, problems


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
        cell = cells[where[0]][where[1]]
        cell["values"].append(100.0 * float(run[spec.get("metric", "test_error")]))
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
    draw.text((8, top - 24), "error %", fill=ink, font=font)
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
                    xm = xb + bar / 2
                    draw.line([(xm, y_of(mean + std)), (xm, y_of(max(mean - std, 0.0)))],
                              fill=ink, width=2)
                    for v in (mean + std, max(mean - std, 0.0)):
                        draw.line([(xm - 4, y_of(v)), (xm + 4, y_of(v))], fill=ink, width=2)
            elif row["match"] is not None:
                draw.line([(xb + 2, base - 12), (xb + bar - 3, base - 2)], fill=(200, 40, 40), width=2)
                draw.line([(xb + 2, base - 2), (xb + bar - 3, base - 12)], fill=(200, 40, 40), width=2)
            _vertical_text(img, row["label"], (xa + bar, base + 6), small, ink)
    img.save(path)


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
# Command line.


def make_table(workdir: str | os.PathLike, table: str | int, out_dir: str | os.PathLike | None = None,
               figure: bool = True) -> str:
    """Collect, render and write WORKDIR/table{N}.md, .json and .png; returns the markdown."""
    spec = table_spec(table)
    runs, problems = collect_results(workdir)
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


def main(argv: Sequence[str]) -> None:
    """Print the table and write its files."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {list(argv[1:])}")
    if not Path(f.workdir).is_dir():
        sys.exit(f"error: --workdir {f.workdir!r} is not a folder")
    try:
        markdown = make_table(f.workdir, f.table, f.out_dir, figure=f.figure)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(markdown)
    out = Path(f.out_dir or f.workdir)
    print(f"wrote {out / f'table{f.table}.md'}, .json" + (", .png" if f.figure else ""))


if __name__ == "__main__":
    from absl import app, flags
    flags.DEFINE_string("workdir", None, "Folder searched recursively for results.json files.")
    flags.DEFINE_enum("table", "1", ["1", "2"], "Which table of the paper.")
    flags.DEFINE_string("out_dir", None, "Where to write table{N}.md/.json/.png (default: workdir).")
    flags.DEFINE_boolean("figure", True, "Also draw table{N}.png.")
    flags.mark_flag_as_required("workdir")
    app.run(main)
