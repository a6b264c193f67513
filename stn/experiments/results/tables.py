"""The paper's tables beside ours, sweep summaries and learning curves: markdown, JSON, charts.

    python -m stn.experiments.results.tables --workdir=runs/table1 --table=1 [--format=pdf,svg]

reads every `results.json` under WORKDIR (recursively), puts each run in its cell by its config
(Table 1: `data.distortion` x `model.name` [+ `model.transform`]; Table 2: `data.variant` x
`model.name`), averages seeds (mean and sample standard deviation), and writes
`WORKDIR/table1.md`, `WORKDIR/table1.json` and `WORKDIR/table1.png` (with `--format`, also
`table1.pdf` / `table1.svg`). The paper's numbers and how a run maps to a cell live in
`stn/experiments/results/paper_results.json`, with the citation.

    python -m stn.experiments.results.tables --workdir=runs/lr_rts_st_cnn --table=sweep

summarises any sweep: one row per setting, ranked on a validation metric only, in
`WORKDIR/sweep.md`, `WORKDIR/sweep_summary.json` and `WORKDIR/sweep.png`.

    python -m stn.experiments.results.tables --workdir=runs/table1_long --table=curves

draws validation and test error against steps of every run (`curves.md`, `curves.png`).

Where each part lives: `stn.experiments.results.collect` (finding runs, table cells, curves),
`stn.experiments.results.summary` (settings and the chooser), `stn.experiments.results.render` (markdown, JSON),
`stn.experiments.results.figures` (the matplotlib charts). This module only puts them together: `BUILDERS` maps a
`--table=` name to the function that writes its files; every table of
`stn/experiments/results/paper_results.json` is a `--table=` name too, without an entry here.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stn.experiments.results import figures
# Re-exported: the names scripts and tests used from stn.experiments.results.tables before it was split.
from stn.experiments.results.collect import (build_table, collect_curves, collect_results,  # noqa: F401
                                 curve_references, paper_results, table_spec)
from stn.experiments.results.render import (render_curves_markdown, render_markdown,  # noqa: F401
                                render_sweep_markdown, table_json)
from stn.experiments.results.summary import rank_by_validation, summarize_sweep  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Request:
    """What a `--table=` builder is asked to do: read runs under `workdir`, write into `out_dir`
    (default: `workdir`), draw the chart when `figure` (PNG, plus each of `formats`: pdf, svg);
    `metric`, `x`, `lines` and `ignore` are the sweep summary's options."""
    workdir: Path
    out_dir: Path | None = None
    figure: bool = True
    formats: tuple[str, ...] = ()
    metric: str = "validation_error"
    x: str | None = None
    lines: str | None = None
    ignore: tuple[str, ...] = ()

    def out(self) -> Path:
        """The folder the files go to, created if absent."""
        out = Path(self.out_dir or self.workdir)
        out.mkdir(parents=True, exist_ok=True)
        return out


@dataclasses.dataclass
class Written:
    """What a builder wrote: the markdown (also printed), the files, and for a sweep its
    summary; `refused` says why the command ends with status 1 although its files are written."""
    markdown: str
    files: list[Path]
    summary: dict[str, Any] | None = None
    refused: str | None = None


def _write_text(path: Path, text: str) -> Path:
    """Write `text` to `path`; returns `path` (for the list of files written)."""
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Builders, one per kind of table.


def build_paper_table(table: str | int, request: Request) -> Written:
    """A table of the paper beside ours: `table{N}.md`, `.json`, and its chart."""
    spec = table_spec(table)
    runs, problems = collect_results(request.workdir,
                                     required=(spec.get("metric", "test_error"),))
    built = build_table(runs, spec)
    markdown = render_markdown(built, spec, paper_results()["citation"], problems)
    out = request.out()
    files = [_write_text(out / f"table{table}.md", markdown),
             _write_text(out / f"table{table}.json",
                         json.dumps(table_json(table, built, spec), indent=1) + "\n")]
    if request.figure:
        files += figures.save_figure(figures.table_figure(built, spec), out / f"table{table}.png",
                                     request.formats)
    return Written(markdown, files)


def build_sweep(request: Request) -> Written:
    """`sweep.md`, `sweep_summary.json` and the sweep's chart (none when nothing varies, and
    an older sweep.png is then removed); `refused` is set when no setting can be chosen."""
    runs, problems = collect_results(request.workdir, required=())
    summary = summarize_sweep(runs, request.metric, request.ignore)
    out, note, figure_files = request.out(), None, []
    summary["figure"] = None
    if request.figure:
        try:
            fig, caption = figures.sweep_figure(summary, request.x, request.lines)
        except ValueError as e:
            if request.x is not None or request.lines is not None:
                raise  # the user asked for keys that do not vary: say so
            note = f"No figure: {e}."
            for old in [out / "sweep.png"] + [out / f"sweep.{f}" for f in figures.VECTOR_FORMATS]:
                old.unlink(missing_ok=True)  # an older figure would contradict the table
        else:
            figure_files = figures.save_figure(fig, out / "sweep.png", request.formats)
            summary["figure"], note = "sweep.png", f"Figure: sweep.png, {caption}."
    markdown = render_sweep_markdown(summary, problems, note)
    files = [_write_text(out / "sweep.md", markdown),
             _write_text(out / "sweep_summary.json",
                         json.dumps(dict(summary, problems=problems), indent=1) + "\n")]
    return Written(markdown, files + figure_files, summary,
                   None if summary["best"] else summary["refused"])


def build_curves(request: Request) -> Written:
    """`curves.md` (every run's validation and test error at each evaluation) and the curves'
    chart, with the paper's number for runs whose cell a paper table gives."""
    curves = collect_curves(request.workdir)
    if not curves:
        raise ValueError(f"no metrics.jsonl with validation_error or test_error under "
                         f"{request.workdir}")
    references = curve_references(request.workdir, list(curves))
    markdown = render_curves_markdown(curves)
    if references:
        markdown += "\n\nThe paper's test error: " + "; ".join(
            f"{run}: {value:g}% ({label})" for run, (label, value) in references.items()) + "."
    files = [_write_text(request.out() / "curves.md", markdown + "\n")]
    if request.figure:
        files += figures.save_figure(figures.curves_figure(curves, references),
                                     request.out() / "curves.png", request.formats)
    return Written(markdown, files)


# To add a `--table=` that is not a paper table, write a function Request -> Written and name it
# here. A new table of the paper needs only its entry in stn/experiments/results/paper_results.json.
BUILDERS: dict[str, Callable[[Request], Written]] = {"sweep": build_sweep,
                                                     "curves": build_curves}


def builder(table: str | int) -> Callable[[Request], Written]:
    """The builder of `--table=table`: one of `BUILDERS`, else a table of the paper (raises
    ValueError, one line, naming the choices when it is neither)."""
    if str(table) in BUILDERS:
        return BUILDERS[str(table)]
    try:
        table_spec(table)
    except ValueError:
        raise ValueError(f"unknown table {str(table)!r}; expected one of "
                         f"{sorted(paper_results()['tables'])} (the paper's) or "
                         f"{', '.join(BUILDERS)}") from None
    return functools.partial(build_paper_table, table)


# --------------------------------------------------------------------------------------------
# The functions of earlier versions, for scripts and tests.


def make_table(workdir: str | os.PathLike, table: str | int,
               out_dir: str | os.PathLike | None = None, figure: bool = True,
               formats: Sequence[str] = ()) -> str:
    """Collect, render and write WORKDIR/table{N}.md, .json and .png; returns the markdown."""
    return build_paper_table(table, Request(Path(workdir), out_dir and Path(out_dir), figure,
                                            tuple(formats))).markdown


def make_sweep_summary(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                       metric: str = "validation_error", figure: bool = True,
                       x: str | None = None, lines: str | None = None,
                       ignore: Sequence[str] = (), formats: Sequence[str] = ()
                       ) -> tuple[str, dict[str, Any]]:
    """`build_sweep`, returning the markdown and the summary (its "best" is None, with
    "refused" saying why, when no setting can be chosen; its "figure" names the PNG or is
    None)."""
    written = build_sweep(Request(Path(workdir), out_dir and Path(out_dir), figure,
                                  tuple(formats), metric, x, lines, tuple(ignore)))
    return written.markdown, written.summary


def make_curves(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                figure: bool = True, formats: Sequence[str] = ()) -> str:
    """Writes `curves.md` and `curves.png` for every run under `workdir`; returns the markdown."""
    return build_curves(Request(Path(workdir), out_dir and Path(out_dir), figure,
                                tuple(formats))).markdown


# --------------------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str]) -> None:
    """Print the table (a paper table, sweep or curves) and write its files."""
    from absl import flags
    f = flags.FLAGS
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {list(argv[1:])}")
    if not Path(f.workdir).is_dir():
        sys.exit(f"error: --workdir {f.workdir!r} is not a folder")
    try:
        figures.check_formats(f.format)
        request = Request(Path(f.workdir), f.out_dir and Path(f.out_dir), f.figure,
                          tuple(f.format), f.metric, f.x, f.lines,
                          tuple(k for k in f.ignore_keys.split(",") if k))
        written = builder(f.table)(request)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(written.markdown)
    print("wrote " + ", ".join(map(str, written.files)))
    if written.refused is not None:
        sys.exit(written.refused)  # the files are written; the exit status says: no choice


def define_flags() -> None:
    """The command line's flags (absl), defined once by whichever module runs as __main__."""
    from absl import flags
    flags.DEFINE_string("workdir", None, "Folder searched recursively for results.json files.")
    flags.DEFINE_string("table", "1", "A table of the paper in paper_results.json (1, 2, "
                        "addition, ...), `sweep` for a summary of any sweep, or `curves` for "
                        "validation and test error against steps of every run.")
    flags.DEFINE_string("out_dir", None, "Where to write the files (default: workdir).")
    flags.DEFINE_boolean("figure", True, "Also draw the chart (PNG, with matplotlib).")
    flags.DEFINE_list("format", [], "Vector copies of the chart beside the PNG: pdf, svg or "
                      "pdf,svg.")
    flags.DEFINE_string("metric", "validation_error", "--table=sweep: the validation metric "
                        "that ranks the settings (mean over seeds).")
    flags.DEFINE_string("x", None, "--table=sweep: the varied config key on the figure's x "
                        "axis (default: the numeric one with the most values).")
    flags.DEFINE_string("lines", None, "--table=sweep: the varied config key drawn as one line "
                        "per value (default: the other one with the fewest values).")
    flags.DEFINE_string("ignore_keys", "", "--table=sweep: comma-separated dotted config keys "
                        "that do not define a setting, besides seed and the bookkeeping fields.")
    flags.mark_flag_as_required("workdir")


if __name__ == "__main__":
    from absl import app
    define_flags()
    app.run(main)
