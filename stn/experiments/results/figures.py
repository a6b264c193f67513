"""Charts of results, drawn with matplotlib: the paper's tables, sweeps and learning curves.

Each `*_figure` function returns a `matplotlib.figure.Figure` built without pyplot (so no
display and no global figure state; PNG goes through the Agg canvas), which a caller can
restyle or inspect; `save_figure` writes it as PNG and, when asked, as PDF or SVG beside it.

- `table_figure`: one panel per column of a paper table; per model the paper's bar beside ours
  (mean over seeds, ±1 sd whisker), a cross where we have no run, a diamond where the runs
  differ in more than their seed (not averaged).
- `sweep_figure`: the ranking metric and its test twin against a varied key, one line per value
  of another, ±1 sd bars over seeds, a ring on the best setting.
- `curves_figure`: validation and test error against steps, one line per run, the paper's number
  as a dotted horizontal line where a table gives one.

Every axis holds all of its data: panels that share a y axis get its scale and limits once
all of them are drawn (`_finish_y`). Style: every figure is drawn and saved under `STYLE`
(matplotlib rcParams); change that dict, or open a `matplotlib.rc_context` around the call for
any rcParam it does not set.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from stn.experiments.results.collect import is_number
from stn.experiments.results.render import display_value, metric_label
from stn.experiments.results.summary import TEST, VALIDATION, canonical, format_value, order_key

VECTOR_FORMATS = ("pdf", "svg")
# Tango colours: ours in the paper tables is the first; sweep lines and runs take them in order.
PALETTE = ("#3465a4", "#f57900", "#4e9a06", "#cc0000", "#75507b", "#8f5902", "#06989a",
           "#555753")
PAPER_COLOUR, OURS_COLOUR, MISSING_COLOUR = "#aaaaaa", PALETTE[0], "#c82828"
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "axes.grid.axis": "y",
         "grid.color": "#e4e4e4", "axes.axisbelow": True, "legend.frameon": False,
         "axes.prop_cycle": matplotlib.cycler(color=PALETTE), "savefig.dpi": 120,
         "savefig.bbox": "tight"}


def new_panels(width: float, height: float, count: int) -> tuple[Figure, Sequence]:
    """A figure of `width` x `height` inches on the Agg canvas (no display needed), with `count`
    panels side by side that share their y axis."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, count, sharey=True, squeeze=False)[0]


def save_figure(fig: Figure, png: str | os.PathLike, formats: Sequence[str] = ()) -> list[Path]:
    """Write `fig` to `png` and, for each of `formats` (`pdf`, `svg`), to the same name with
    that suffix; returns the paths written. Raises ValueError (one line) for another format."""
    check_formats(formats)
    paths = [Path(png)] + [Path(png).with_suffix(f".{f}") for f in dict.fromkeys(formats)]
    with matplotlib.rc_context(STYLE):
        for path in paths:
            # No creation date: a vector file is the same from one run to the next.
            fig.savefig(path, format=path.suffix[1:], metadata={
                "pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(path.suffix[1:]))
    return paths


def check_formats(formats: Sequence[str]) -> None:
    """Raise ValueError (one line) unless every format is a vector format `save_figure` adds."""
    bad = [f for f in formats if f not in VECTOR_FORMATS]
    if bad:
        raise ValueError(f"unknown figure format(s) {', '.join(bad)}; expected any of "
                         f"{', '.join(VECTOR_FORMATS)} (the PNG is always written)")


def spans_decade(values: Sequence[float]) -> bool:
    """True when all values are positive and the largest is over ten times the smallest: the
    rule for a logarithmic axis."""
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)


def _plain_log_axis(axis) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, ... as plain numbers (no powers of ten)."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _finish_y(axes: Sequence, values: Sequence[float]) -> None:
    """The y axis shared by `axes`, once every panel is drawn: logarithmic when the `values`
    span a decade, else from 0 when none is negative (errors, losses, accuracies). Limits set
    earlier would freeze the autoscaling before the later panels' data existed."""
    if spans_decade(values):
        for ax in axes:
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
    elif all(v >= 0 for v in values):
        axes[0].set_ylim(bottom=0)


def _figure_legend(fig: Figure, axes: Sequence, ncols: int) -> None:
    """One legend below the panels with every panel's entries once (a marker may be in one)."""
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=ncols)


# --------------------------------------------------------------------------------------------
# The paper's tables.


def table_figure(built: Mapping[str, Any], spec: Mapping[str, Any]) -> Figure:
    """One panel per column, one pair of bars per model: the paper's value (grey, container
    label `paper`) beside ours (blue, label `ours (±1 sd over seeds)`: the mean over seeds, a
    whisker where a cell has several), a cross (line label `no run`) where a model we run has
    no run yet, a diamond (label `runs differ beyond seed`) where a cell was not averaged.

    Bars sit at x = row index -/+ 0.2; cells without a value have no bar."""
    rows, cols, cells = spec["rows"], spec["columns"], built["cells"]
    with matplotlib.rc_context(STYLE):
        fig, axes = new_panels(max(4.5, 0.8 + len(cols) * (0.5 + 0.25 * len(rows))), 4.2,
                               len(cols))
        for j, (ax, col) in enumerate(zip(axes, cols)):
            _table_panel(ax, rows, [cells[i][j] for i in range(len(rows))])
            ax.set_title(col["label"])
        axes[0].set_ylabel(spec.get("unit", "error %"))
        axes[0].set_ylim(bottom=0)  # after every panel's bars: the whole axis holds them all
        _figure_legend(fig, axes, ncols=4)
        fig.suptitle(spec["title"] + ": paper vs ours", x=0.02, ha="left")
    return fig


def _table_panel(ax, rows: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]]
                 ) -> None:
    """The bars of one column of a paper table (see `table_figure`)."""
    paper = [(i, c["paper"]) for i, c in enumerate(cells) if c["paper"] is not None]
    ours = [(i, c["ours"]) for i, c in enumerate(cells) if c["ours"] is not None]
    differ = [i for i, c in enumerate(cells) if c.get("differ")]
    no_run = [i for i, (r, c) in enumerate(zip(rows, cells))
              if c["ours"] is None and r["match"] is not None and i not in differ]
    ax.bar([i - 0.2 for i, _ in paper], [v for _, v in paper], width=0.4,
           color=PAPER_COLOUR, label="paper")
    ax.bar([i + 0.2 for i, _ in ours], [s["mean"] for _, s in ours], width=0.4,
           yerr=[s["std"] if s["n"] > 1 else math.nan for _, s in ours],  # NaN: no whisker
           error_kw={"capsize": 3, "elinewidth": 1}, color=OURS_COLOUR,
           label="ours (±1 sd over seeds)")
    for where, marker, label in ((no_run, "x", "no run"), (differ, "D", "runs differ beyond seed")):
        if where:  # (an empty unclipped line would break the layout)
            ax.plot([i + 0.2 for i in where], [0.0] * len(where), marker, color=MISSING_COLOUR,
                    markersize=6, clip_on=False, label=label, linestyle="none")
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=90)
    ax.set_xlim(-0.7, len(rows) - 0.3)


# --------------------------------------------------------------------------------------------
# Sweeps.


def plot_keys(summary: Mapping[str, Any], x: str | None = None, lines: str | None = None
              ) -> tuple[str, str | None, dict[str, Any]]:
    """(x-axis key, key with one line per value or None, keys held at the best setting).

    By default x is the numeric varied key with the most values (ties: the one spanning more
    decades, then the later in the config), lines the remaining key with the fewest values
    (ties: the earlier); any further varied keys are held at the best setting's values (the
    first row's without a best). Raises ValueError when no key varies or `x`/`lines` is not a
    varied key.
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
        positive = [float(v) for v in values[k] if is_number(v) and v > 0]
        return math.log10(max(positive) / min(positive)) if positive else 0.0

    def distinct(k: str) -> int:
        return len({canonical(v) for v in values[k]})

    if x is None:  # last ties: the later key in the config (train.* knobs come after model.*)
        x = max((k for k in varied if k != lines),
                key=lambda k: (all(is_number(v) for v in values[k]), distinct(k), span(k),
                               varied.index(k)))
    rest = [k for k in varied if k != x]
    if lines is None and rest:
        lines = min(rest, key=distinct)
    anchor = summary["best"] or summary["settings"][0]
    held = {k: anchor["values"][k] for k in rest if k != lines}
    return x, lines, held


def _sweep_lines(shown: Sequence[Mapping[str, Any]], x_key: str, line_key: str | None
                 ) -> list[tuple[Any, list[Mapping[str, Any]]]]:
    """[(value of `line_key`, its settings in x order)], lines in value order (one line, value
    None, without a `line_key`)."""
    groups: dict[str, tuple[Any, list]] = {}
    for s in shown:
        value = s["values"][line_key] if line_key else None
        groups.setdefault(canonical(value), (value, []))[1].append(s)
    lines = sorted(groups.values(), key=lambda group: order_key(group[0]))
    for _, members in lines:
        members.sort(key=lambda s: order_key(s["values"][x_key]))
    return lines


def sweep_figure(summary: Mapping[str, Any], x: str | None = None, lines: str | None = None
                 ) -> tuple[Figure, str]:
    """(figure, one-line description): a panel for the ranking metric and one for its test
    twin (shared y axis), the mean over seeds against the `x` key with ±1 sd bars, one line per
    value of the `lines` key (errorbar containers labelled `KEY = VALUE`), a ring (gid `best`)
    on the best setting.

    x is logarithmic when its values are numbers spanning more than a decade, evenly spaced
    categories when they are not numbers; y is logarithmic when the means span a decade. A NaN
    mean (a diverged run) is left out. Raises ValueError when there is nothing to plot."""
    x_key, line_key, held = plot_keys(summary, x, lines)
    metric = summary["metric"]
    panels = [m for m in (metric, TEST + metric[len(VALIDATION):]) if m in summary["metrics"]]
    if not panels:
        raise ValueError(f"no run has {metric} or its test twin to plot")
    shown = [s for s in summary["settings"]
             if all(canonical(s["values"][k]) == canonical(v) for k, v in held.items())]
    xs = sorted({canonical(s["values"][x_key]): s["values"][x_key] for s in shown}.values(),
                key=order_key)
    numeric = all(is_number(v) for v in xs)
    position = (lambda v: float(v)) if numeric else (
        lambda v: [canonical(u) for u in xs].index(canonical(v)))
    means = [display_value(m, s["metrics"][m]["mean"]) for m in panels for s in shown
             if s["metrics"].get(m) and math.isfinite(s["metrics"][m]["mean"])]

    title = f"{' and '.join(map(metric_label, panels))} against {x_key}" + (
        f", one line per {line_key}" if line_key else "")
    held_text = (("; held at the best setting: " if summary["best"] else "; held at: ")
                 + ", ".join(f"{k}={format_value(v)}" for k, v in held.items())) if held else ""
    with matplotlib.rc_context(STYLE):
        fig, axes = new_panels(4.0 * len(panels) + 2.0, 3.8, len(panels))
        for ax, name in zip(axes, panels):
            for j, (value, members) in enumerate(_sweep_lines(shown, x_key, line_key)):
                _sweep_line(ax, name, members, x_key, position, PALETTE[j % len(PALETTE)],
                            f"{line_key} = {format_value(value)}" if line_key else None)
            ax.set_title(metric_label(name))
            ax.set_xlabel(x_key)
            if numeric and spans_decade([float(v) for v in xs]):
                ax.set_xscale("log")
                ax.minorticks_off()
            ax.set_xticks([position(v) for v in xs], [format_value(v) for v in xs])
        _finish_y(axes, means)  # an error, loss or accuracy: a bar below 0 is cut off
        unit = "error %" if metric.endswith("error") else metric[len(VALIDATION):].replace("_", " ")
        axes[0].set_ylabel(unit)
        if line_key:
            _figure_legend(fig, axes[:1], ncols=2)
        subtitle = "mean over seeds, bar = ±1 sd; " + (
            f"ring = best by {metric}" if summary["best"] else f"no best setting ({metric} "
                                                                f"missing)") + held_text
        fig.suptitle(f"{title}\n{subtitle}", x=0.02, ha="left")
    return fig, f"{title}{held_text}"


def _sweep_line(ax, name: str, members: Sequence[Mapping[str, Any]], x_key: str, position,
                colour: str, label: str | None) -> None:
    """One line of a sweep panel: means with ±1 sd bars (several seeds), a ring if best."""
    drawn = [s for s in members if s["metrics"].get(name)
             and math.isfinite(s["metrics"][name]["mean"])]
    xs = [position(s["values"][x_key]) for s in drawn]
    ys = [display_value(name, s["metrics"][name]["mean"]) for s in drawn]
    sds = [display_value(name, s["metrics"][name]["std"]) if s["metrics"][name]["n"] > 1
           and math.isfinite(s["metrics"][name]["std"]) else 0.0 for s in drawn]
    ax.errorbar(xs, ys, yerr=sds, color=colour, marker="o", markersize=5, capsize=3,
                linewidth=1.5, label=label)
    best = [(u, v) for u, v, s in zip(xs, ys, drawn) if s["best"]]
    if best:
        ax.scatter(*zip(*best), s=180, facecolors="none", edgecolors="black", linewidths=1.5,
                   zorder=3, label="_best", gid="best")


# --------------------------------------------------------------------------------------------
# Learning curves.


def curves_figure(curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
                  references: Mapping[str, tuple[str, float]] | None = None) -> Figure:
    """Validation error and test error (%) against training step, a panel each (shared y),
    one line per run (labelled with the run's folder, the same colour in both panels); the
    paper's test error for a run (`references`: {run: (cell label, value %)}) as a dotted line
    in both panels, labelled `paper: CELL`.

    The step axis is logarithmic when the steps span more than a decade, the error axis when
    the errors do. Raises ValueError when no run has a point to plot."""
    references = references or {}
    steps = [s for series in curves.values() for points in series.values() for s, _ in points]
    log_steps = spans_decade([s for s in steps if s > 0])  # a step-0 point is left off then
    errors = [100 * v for series in curves.values() for points in series.values()
              for _, v in points]
    if not steps:
        raise ValueError("no run has validation_error or test_error to plot")
    colours = {run: PALETTE[i % len(PALETTE)] for i, run in enumerate(curves)}
    drawn_refs: dict[tuple[str, float], str] = {}
    for run, ref in references.items():  # one line per paper number, in its first run's colour
        drawn_refs.setdefault(ref, colours.get(run, "black"))
    with matplotlib.rc_context(STYLE):
        fig, axes = new_panels(10.0, 4.2, 2)
        for ax, key in zip(axes, ("validation_error", "test_error")):
            for run, series in curves.items():
                points = sorted(series.get(key, []))
                ax.plot([s for s, _ in points], [100 * v for _, v in points], marker="o",
                        markersize=3, color=colours[run], label=run)
            for (label, value), colour in drawn_refs.items():
                ax.axhline(value, color=colour, linestyle=":", linewidth=1.5,
                           label=f"paper: {label}", gid="paper")
            ax.set_title(metric_label(key))
            ax.set_xlabel("training step")
            if log_steps:
                ax.set_xscale("log")
                _plain_log_axis(ax.xaxis)
        _finish_y(axes, errors + [v for _, v in drawn_refs])
        axes[0].set_ylabel("error %")
        _figure_legend(fig, axes, ncols=2)
        fig.suptitle("error against training steps: one line per run"
                     + ("; dotted: the paper's test error" if drawn_refs else ""),
                     x=0.02, ha="left")
    return fig
