"""Redraw the charts in docs/ with stn.experiments.results.figures from the numbers the docs themselves print.

The runs behind the docs' charts (runs/ is not committed) are not needed: each chart here is
rebuilt from a markdown table of the page that shows it, so the picture and the page cannot
disagree. Only numbers printed in the docs are used, at the precision printed:

- docs/images/table1_cpu.png: Table 1 of docs/reports/results.md (ours: mean, sample sd and the number of seeds).
- docs/images/table_addition_cpu.png: the addition table of docs/reports/appendix.md (each
  seed's test error; mean and sd computed here as the tables do).
- docs/images/table_colocalisation_cpu.png: the co-localisation table on the CPU of the same page
  (% of test images localised, one run per class, printed to 0.1).
- docs/images/tune_st_cnn_rts.png: the ST-CNN row of the tuning table of docs/reports/results.md (validation
  error, one seed; validation has 1,000 digits, so 0.1% is exact). The page does not print
  the tuning runs' test errors, so this chart has the validation panel only.

The learning curves (docs/images/rts_followed_curves.png, docs/images/gpu_rts_paper_recipe_curves.png) need
every evaluation of every run (metrics.jsonl), which the docs do not print: redraw them with
`python -m stn.experiments.results --table=curves` from the runs.

    python tools/pictures/redraw_doc_charts.py [--docs=docs]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stn.experiments.results import figures  # noqa: E402
from stn.experiments.results.collect import table_spec  # noqa: E402
from stn.experiments.results.summary import summarize, summarize_sweep  # noqa: E402


def markdown_table(page: Path, header_start: str) -> list[list[str]]:
    """The rows (cells stripped) of the markdown table on `page` whose header line starts with
    `header_start`, header included, separator left out. Raises ValueError if absent."""
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[i:]:
                if not row.startswith("|"):
                    break
                if not set(row) <= set("|- "):
                    rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return rows
    raise ValueError(f"{page}: no table starting {header_start!r}")


def numbers(text: str) -> list[float]:
    """Every decimal number in `text`, in order."""
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", text)]


def empty_cells(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Cells of a paper table with the paper's values and no runs of ours."""
    return [[{"paper": v, "ours": None} for v in row["paper"]] for row in spec["rows"]]


def printed_summary(mean: float, std: float, n: int) -> dict[str, float]:
    """Ours as a page prints it: mean, sd and the number of seeds."""
    return {"n": n, "mean": mean, "std": std, "min": mean, "max": mean}


def table1(docs: Path) -> dict[str, Any]:
    """Table 1 on the CPU (docs/reports/results.md): `paper / mean[±sd]` per cell; the header says
    how many seeds a column has (`RTS (3 seeds)`), one otherwise."""
    spec = table_spec(1)
    header, *rows = markdown_table(docs / "reports" / "results.md", "| model | R | RTS")
    seeds = [int(m.group(1)) if (m := re.search(r"\((\d+) seeds\)", h)) else 1
             for h in header[1:]]
    cells = empty_cells(spec)
    labels = [r["label"] for r in spec["rows"]]
    for label, *texts in rows:
        i = labels.index(label)
        for j, text in enumerate(texts):
            paper, ours = text.split(" / ")
            assert float(paper) == spec["rows"][i]["paper"][j], (label, j, paper)
            mean, std = (numbers(ours) + [0.0])[:2]
            cells[i][j]["ours"] = printed_summary(mean, std, seeds[j])
    return {"cells": cells}


def addition(docs: Path) -> dict[str, Any]:
    """Addition on the CPU (docs/reports/appendix.md): each seed's % test error."""
    spec = table_spec("addition")
    _, *rows = markdown_table(docs / "reports" / "appendix.md",
                              "| model | paper % error | ours % test error")
    cells = empty_cells(spec)
    labels = [r["label"] for r in spec["rows"]]
    for label, _, test, *_ in rows:
        cells[labels.index(label)][0]["ours"] = summarize(numbers(test))
    return {"cells": cells}


def colocalisation(docs: Path) -> dict[str, Any]:
    """Co-localisation on the CPU (docs/reports/appendix.md): % of test images
    localised per class on T and on TC (the TC cell prints `test / optimised`)."""
    spec = table_spec("colocalisation")
    header, *rows = markdown_table(docs / "reports" / "appendix.md",
                                   "| class | T: % localised, test |")
    t_col = header.index("T: % localised, test")
    tc_col = header.index("TC: % localised, test / optimised")
    cells = empty_cells(spec)
    for row in rows:
        i = int(row[0])
        assert spec["rows"][i]["label"] == f"class {i}"
        for j, text in enumerate((row[t_col], row[tc_col].split(" / ")[0])):
            cells[i][j]["ours"] = summarize(numbers(text))
    return {"cells": cells}


def tuning(docs: Path) -> dict[str, Any]:
    """The ST-CNN row of the tuning table (docs/reports/results.md) as a sweep summary: validation
    error against the learning rate, one line per localisation-net multiplier."""
    header, *rows = markdown_table(docs / "reports" / "results.md", "| family | lr 0.01 |")
    (row,) = [r for r in rows if r[0].startswith("ST-CNN Aff, loc 0.1x")]
    lrs = [numbers(h)[0] for h in header[1:4]]
    runs = [(0.1, lr, numbers(cell)[0]) for lr, cell in zip(lrs, row[1:4])]
    # "loc 1x: 3.3 (lr 0.01), 17.2 (lr 0.03), 88.6 (lr 0.1)"
    other = re.findall(r"(\d+(?:\.\d+)?) \(lr (\d+(?:\.\d+)?)\)", row[4].split("loc 1x:")[1])
    runs += [(1.0, float(lr), float(v)) for v, lr in other]
    results = [{"config": {"seed": 0, "model": {"loc_lr_multiplier": loc},
                           "train": {"learning_rate": lr}},
                "validation_error": value / 100} for loc, lr, value in runs]
    return summarize_sweep(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[2] / "docs")
    docs = parser.parse_args().docs
    for name, table, build in (("table1_cpu", "1", table1),
                               ("table_addition_cpu", "addition", addition),
                               ("table_colocalisation_cpu", "colocalisation", colocalisation)):
        fig = figures.table_figure(build(docs), table_spec(table))
        print("wrote", *figures.save_figure(fig, docs / "images" / f"{name}.png"))
    fig, caption = figures.sweep_figure(tuning(docs))
    print("wrote", *figures.save_figure(fig, docs / "images" / "tune_st_cnn_rts.png"),
          f"({caption})")


if __name__ == "__main__":
    main()
