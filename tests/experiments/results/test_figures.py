"""Charts through matplotlib: what each figure plots (read back from the figure object), and
that every `--table=` option writes its PNG, and PDF/SVG when asked, with matplotlib."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stn.experiments.results import collect, figures, summary, tables

import helpers

REPO = Path(helpers.ROOT)


def _results(root: Path, name: str, config: dict, **metrics) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps({"config": config, **metrics}))


def _bars(ax, label: str) -> list[tuple[float, float]]:
    """(x centre, height) of the bars of the container labelled `label` in `ax`."""
    found = [c for c in ax.containers if c.get_label() == label]
    return [(round(p.get_x() + p.get_width() / 2, 6), p.get_height())
            for c in found for p in c.patches]


@pytest.fixture
def table1_runs(tmp_path):
    """CNN on R with seeds 0 and 1 (1% and 2%), ST-CNN Aff on RTS (0.62%)."""
    for seed, error in ((0, 0.01), (1, 0.02)):
        _results(tmp_path, f"r-cnn-s{seed}", {"seed": seed, "data": {"distortion": "r"},
                                             "model": {"name": "cnn"}}, test_error=error)
    _results(tmp_path, "rts-st", {"seed": 0, "data": {"distortion": "rts"},
                                  "model": {"name": "st_cnn", "transform": "affine"}},
             test_error=0.0062)
    return tmp_path


def test_table_figure_bars_are_the_tables_numbers(table1_runs):
    spec = collect.table_spec(1)
    runs, _ = collect.collect_results(table1_runs)
    fig = figures.table_figure(summary.build_table(runs, spec), spec)
    r, rts, p, e = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["R", "RTS", "P", "E"]
    assert [t.get_text() for t in r.get_xticklabels()] == [row["label"] for row in spec["rows"]]
    assert _bars(rts, "paper") == [(i - 0.2, row["paper"][1])
                                   for i, row in enumerate(spec["rows"])]
    ours = "ours (±1 sd over seeds)"
    assert _bars(r, ours) == [(1.2, pytest.approx(1.5))]  # CNN: mean of 1% and 2%
    assert _bars(rts, ours) == [(5.2, pytest.approx(0.62))]  # ST-CNN Aff
    assert _bars(p, ours) == _bars(e, ours) == []
    (whisker,) = [c for c in r.containers if c.get_label() == ours][0].errorbar.lines[2]
    assert whisker.get_segments()[0][:, 1] == pytest.approx([1.5 - 0.5 ** 0.5, 1.5 + 0.5 ** 0.5])
    crosses = [line for line in r.get_lines() if line.get_label() == "no run"]
    assert list(crosses[0].get_xdata()) == pytest.approx([0.2, 2.2, 3.2, 4.2, 5.2, 6.2, 7.2])


def test_table_figure_of_other_papers_models_has_no_cross(tmp_path):
    spec = collect.table_spec(2)
    fig = figures.table_figure(summary.build_table([], spec), spec)
    col64 = fig.axes[0]
    assert [h for _, h in _bars(col64, "paper")] == [4.0, 4.0, 3.9, 3.7, 3.6]
    crosses = [line for line in col64.get_lines() if line.get_label() == "no run"][0]
    # Maxout CNN (0) and DRAM* (2) are other papers' models: no run is expected of them.
    assert list(crosses.get_xdata()) == pytest.approx([1.2, 3.2, 4.2])


def test_table_figure_with_every_cell_run_keeps_its_layout(tmp_path):
    # No cross to draw: an empty unclipped marker line once collapsed the layout.
    for variant in ("64px", "128px"):
        for model in ("cnn", "st_cnn_single", "st_cnn_multi"):
            _results(tmp_path, f"{variant}-{model}", {"data": {"variant": variant},
                                                      "model": {"name": model}}, test_error=0.05)
    spec = collect.table_spec(2)
    runs, _ = collect.collect_results(tmp_path)
    fig = figures.table_figure(summary.build_table(runs, spec), spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied" is a warning
        figures.save_figure(fig, tmp_path / "t.png")
    assert all(ax.get_position().width > 0.25 for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["paper",
                                                                  "ours (±1 sd over seeds)"]


def _sweep_folder(root: Path) -> float:
    """Two learning rates, validation 10% and 20%; returns the best validation error in %."""
    for lr, val in ((0.01, 0.1), (0.1, 0.2)):
        _results(root, f"lr{lr}", {"seed": 0, "train": {"learning_rate": lr}},
                 validation_error=val, test_error=val + 0.01)
    return 10.0


def _curves_folder(root: Path) -> float:
    (root / "run").mkdir(parents=True)
    (root / "run" / "metrics.jsonl").write_text(
        json.dumps({"step": 100, "validation_error": 0.25}) + "\n")
    return 25.0


def _paper_table_folder(table: str):
    """A folder with one run in the first reproducible cell of a paper table."""
    def make(root: Path) -> float:
        spec = collect.table_spec(table)
        row = next(r for r in spec["rows"] if r["match"] is not None)
        config: dict = {"seed": 0}
        for dotted, value in {**row["match"], **spec["columns"][0]["match"],
                              "task": spec.get("task")}.items():
            *parents, leaf = dotted.split(".")
            node = config
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        _results(root, "run", config, **{spec.get("metric", "test_error"): 0.125})
        return 12.5
    return make


def _every_table_option() -> dict:
    """`--table=` name -> a function that fills a folder and returns the value it plots (%)."""
    options = {name: _paper_table_folder(name) for name in collect.paper_results()["tables"]}
    options.update(sweep=_sweep_folder, curves=_curves_folder)
    assert set(options) >= set(tables.BUILDERS)  # a new builder needs its case here
    return options


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_every_table_option()))
def test_every_table_option_writes_its_chart_with_matplotlib(name, tmp_path):
    plotted = _every_table_option()[name](tmp_path)
    written = tables.write(name, tmp_path, formats=("pdf", "svg"))
    charts = {p.suffix: p for p in written.files if p.suffix in (".png", ".pdf", ".svg")}
    assert sorted(charts) == [".pdf", ".png", ".svg"]
    assert charts[".png"].stem == charts[".pdf"].stem == charts[".svg"].stem
    with Image.open(charts[".png"]) as png:
        assert png.info["Software"].startswith("Matplotlib")
    assert b"Matplotlib" in charts[".pdf"].read_bytes()[:20000]
    assert "<dc:title>Matplotlib v" in charts[".svg"].read_text()
    # The value of the run is what the chart plots: a bar height or a line's point.
    svg_fig = _figure_of(name, tmp_path)
    heights = [p.get_height() for ax in svg_fig.axes for c in ax.containers
               for p in getattr(c, "patches", [])]
    points = [y for ax in svg_fig.axes for line in ax.get_lines() for y in line.get_ydata()]
    assert any(abs(v - plotted) < 1e-9 for v in heights + points)


def _figure_of(name: str, workdir: Path):
    """The figure object a `--table=name` builder saves, built again from the same folder."""
    if name == "curves":
        return figures.curves_figure(collect.collect_curves(workdir))
    if name == "sweep":
        runs, _ = collect.collect_results(workdir, required=())
        return figures.sweep_figure(summary.summarize_sweep(runs))[0]
    spec = collect.table_spec(name)
    runs, _ = collect.collect_results(workdir, required=(spec.get("metric", "test_error"),))
    return figures.table_figure(summary.build_table(runs, spec), spec)


def test_png_only_unless_asked_and_bad_formats(table1_runs):
    written = tables.write("1", table1_runs)
    assert [p.name for p in written.files] == ["table1.md", "table1.json", "table1.png"]
    with pytest.raises(ValueError, match="unknown figure format"):
        tables.write(1, table1_runs, formats=["eps"])
    with pytest.raises(ValueError, match=r"unknown table 'nope'.*sweep or curves"):
        tables.write("nope", table1_runs)


@pytest.mark.slow
def test_cli_format(table1_runs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "stn.experiments.results", f"--workdir={table1_runs}", "--table=1"]
    out = subprocess.run(cmd + ["--format=pdf,svg"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all((table1_runs / f"table1.{ext}").is_file() for ext in ("png", "pdf", "svg"))
    assert "table1.pdf" in out.stdout.splitlines()[-1]
    out = subprocess.run(cmd + ["--format=eps"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and "error: unknown figure format(s) eps" in out.stderr


def test_no_chart_is_drawn_by_hand():
    # Pillow's drawing is for pictures of images (stn/experiments/pictures.py,
    # stn/experiments/data/preview.py) and for synthetic images (stn/experiments/data/cub.py's
    # miniature birds); charts, with axes, ticks and legends, come from matplotlib in
    # stn/experiments/results/figures.py only.
    drawing = {str(p.relative_to(REPO)) for p in (REPO / "stn").rglob("*.py")
               if "ImageDraw" in p.read_text()}
    assert drawing <= {"stn/experiments/pictures.py", "stn/experiments/data/preview.py",
                       "stn/experiments/data/cub.py"}
    charting = {str(p.relative_to(REPO)) for p in (REPO / "stn").rglob("*.py")
                if "matplotlib" in p.read_text() and "import matplotlib" in p.read_text()}
    assert charting == {"stn/experiments/results/figures.py"}


def test_docs_charts_are_redrawn_from_the_numbers_the_docs_print(tmp_path):
    redraw = helpers.module_at("tools/pictures/redraw_doc_charts.py")
    docs = REPO / "docs"
    cells = redraw.table1(docs)["cells"]
    assert cells[0][1]["ours"] == {"n": 3, "mean": 17.08, "std": 0.28, "min": 17.08,
                                   "max": 17.08}  # FCN, RTS: "5.2 / 17.08±0.28", 3 seeds
    assert cells[7][3]["ours"]["mean"] == 2.45 and cells[7][3]["ours"]["n"] == 1
    addition = redraw.addition(docs)["cells"]
    assert addition[1][0]["ours"]["mean"] == pytest.approx(90.05)  # CNN: 90.20, 89.75, 90.20
    assert addition[3][0]["ours"] is None  # ST-FCN Proj: not run
    coloc = redraw.colocalisation(docs)["cells"]
    assert coloc[9][0]["ours"]["mean"] == 24.9 and coloc[9][1]["ours"]["mean"] == 0.0
    summary = redraw.tuning(docs)
    assert summary["best"]["values"] == {"model.loc_lr_multiplier": 0.1,
                                         "train.learning_rate": 0.03}
    assert len(summary["settings"]) == 6
    lines = {c.get_label(): list(c.lines[0].get_ydata())
             for c in figures.sweep_figure(summary)[0].axes[0].containers}
    assert lines["model.loc_lr_multiplier = 1"] == pytest.approx([3.3, 17.2, 88.6])


def _outside_limits(fig) -> list[str]:
    """Every plotted point that lies outside its panel's limits: each line's data (an axhline's
    x is in axes coordinates, so only its y counts), each bar's top and each marker ring."""
    outside = []
    for k, ax in enumerate(fig.axes):
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        points = [(line.get_label(), x if line.get_gid() != "paper" else None, y)
                  for line in ax.get_lines()
                  for x, y in zip(line.get_xdata(), line.get_ydata())]
        points += [("bar", p.get_x() + p.get_width() / 2, p.get_y() + p.get_height())
                   for p in ax.patches]
        points += [("ring", x, y) for c in ax.collections if c.get_gid() == "best"
                   for x, y in c.get_offsets()]
        outside += [f"panel {k} {label}: ({x}, {y}) outside x {x0:g}..{x1:g}, y {y0:g}..{y1:g}"
                    for label, x, y in points if np.isfinite(y)
                    and not (y0 <= y <= y1 and (x is None or x0 <= x <= x1))]
    return outside


def _limits_table(root: Path):
    """Table 1 with a small error in its first column and large ones in the last."""
    for j, (distortion, error) in enumerate((("r", 0.01), ("e", 0.35), ("e", 0.45))):
        _results(root, f"run{j}", {"seed": j, "data": {"distortion": distortion},
                                   "model": {"name": "cnn"}}, test_error=error)
    spec = collect.table_spec(1)
    return figures.table_figure(summary.build_table(collect.collect_results(root)[0], spec),
                                spec)


def _limits_sweep(root: Path):
    """Validation 70-79% in the first panel, test up to 81% in the second (shared y)."""
    for lr, loc, val, test in ((0.01, 0.1, 0.70, 0.801), (0.01, 1.0, 0.72, 0.8105),
                               (0.1, 0.1, 0.79, 0.60), (0.1, 1.0, 0.75, 0.62)):
        _results(root, f"{lr}-{loc}", {"seed": 0, "model": {"loc_lr_multiplier": loc},
                                       "train": {"learning_rate": lr}},
                 validation_error=val, test_error=test)
    return figures.sweep_figure(summary.summarize_sweep(
        collect.collect_results(root, required=())[0]))[0]


def _limits_curves(root: Path):
    """Validation error 20-30% in the first panel, test error 50% in the second."""
    (root / "run").mkdir(parents=True)
    (root / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 10, "validation_error": 0.3}, {"step": 20, "validation_error": 0.2},
        {"step": 20, "test_error": 0.5})))
    return figures.curves_figure(collect.collect_curves(root))


@pytest.mark.parametrize("draw", [_limits_table, _limits_sweep, _limits_curves],
                         ids=["table", "sweep", "curves"])
def test_every_charts_limits_hold_all_of_its_data(draw, tmp_path):
    fig = draw(tmp_path)
    figures.save_figure(fig, tmp_path / "chart.png")  # the limits as drawn
    assert _outside_limits(fig) == []
    assert sum(len(line.get_ydata()) for ax in fig.axes for line in ax.get_lines()) \
        + sum(len(ax.patches) for ax in fig.axes) >= 3  # it did read the data back
