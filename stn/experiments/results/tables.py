"""Writing a `--table=`: collect the runs, summarise, render and draw, and write the files.

`write(table, workdir, **options)` is what `python -m stn.experiments.results` runs: a table
of the paper (`table{N}.md`, `.json`, `.png`), `sweep` (`sweep.md`, `sweep_summary.json`,
`sweep.png`) or `curves` (`curves.md`, `curves.png`). A chart is written only beside the
table it was drawn from: a chart of the same name left from an earlier call is removed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stn.experiments import config_compare
from stn.experiments.results import collect, figures, render, summary


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
        """The folder the files go to, made if absent; ValueError (one line) if it cannot be."""
        out = Path(self.out_dir or self.workdir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # e.g. a file of that name
            raise ValueError(f"--out_dir={out} is not a folder and cannot be made one "
                             f"({e.strerror}); name a folder, made if absent") from None
        return out


@dataclasses.dataclass
class Written:
    """What a builder wrote: the markdown (also printed), the files, notes to print after
    them, and for a sweep its summary. Each line of `refused` says why the command ends with
    status 1 although its files are written."""
    markdown: str
    files: list[Path]
    notes: list[str] = dataclasses.field(default_factory=list)
    refused: list[str] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] | None = None


def _write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` (ValueError naming the file if it cannot); returns `path`."""
    try:
        path.write_text(text)
    except OSError as e:
        raise ValueError(f"cannot write {path} ({e.strerror})") from None
    return path


def _save_chart(request: Request, fig: figures.Figure | None, png: Path
                ) -> tuple[list[Path], list[str]]:
    """Write `fig` (None: no chart) as `png` and the requested vector copies, remove any other
    chart of that name (an older one would not match the new table) -> (files, notes)."""
    files = figures.save_figure(fig, png, request.formats) if fig is not None else []
    notes = []
    if fig is None and request.formats and not request.figure:
        notes.append(f"--nofigure: no chart is drawn, so no {', '.join(request.formats)} is "
                     f"written")
    stale = [path for path in (png.with_suffix(f".{f}") for f in ("png", *figures.VECTOR_FORMATS))
             if path not in files and path.exists()]
    for path in stale:
        path.unlink()
    if stale:
        notes.append(f"removed the older {', '.join(p.name for p in stale)}: a chart of "
                     f"earlier runs would not match the new table")
    return files, notes


# --------------------------------------------------------------------------------------------
# Builders, one per kind of table.


def build_paper_table(table: str | int, request: Request) -> Written:
    """A table of the paper beside ours: `table{N}.md`, `.json`, and its chart; a cell whose
    runs differ in more than their seed is refused (status 1, its files still written)."""
    spec = collect.table_spec(table)
    runs, problems = collect.collect_results(request.workdir,
                                             required=(spec.get("metric", "test_error"),))
    built = summary.build_table(runs, spec)
    markdown = render.render_markdown(built, spec, collect.paper_results()["citation"],
                                      problems)
    out = request.out()
    files = [_write_text(out / f"table{table}.md", markdown),
             _write_text(out / f"table{table}.json",
                         json.dumps(render.table_json(table, built, spec), indent=1) + "\n")]
    fig = figures.table_figure(built, spec) if request.figure else None
    charts, notes = _save_chart(request, fig, out / f"table{table}.png")
    return Written(markdown, files + charts, notes, built["refused"])


def build_sweep(request: Request) -> Written:
    """`sweep.md`, `sweep_summary.json` and the sweep's chart (none when nothing varies);
    refused (status 1) when no setting can be chosen."""
    runs, problems = collect.collect_results(request.workdir, required=())
    sweep = summary.summarize_sweep(runs, request.metric, request.ignore)
    out, fig, note = request.out(), None, None
    if request.figure:
        try:
            fig, caption = figures.sweep_figure(sweep, request.x, request.lines)
        except ValueError as e:
            if request.x is not None or request.lines is not None:
                raise  # the user asked for keys that do not vary: say so
            note = f"No figure: {e}."
        else:
            note = f"Figure: sweep.png, {caption}."
    sweep["figure"] = "sweep.png" if fig is not None else None
    markdown = render.render_sweep_markdown(sweep, problems, note)
    files = [_write_text(out / "sweep.md", markdown),
             _write_text(out / "sweep_summary.json",
                         json.dumps(dict(sweep, problems=problems), indent=1) + "\n")]
    charts, notes = _save_chart(request, fig, out / "sweep.png")
    return Written(markdown, files + charts, notes,
                   [] if sweep["best"] else [sweep["refused"]], sweep)


def build_curves(request: Request) -> Written:
    """`curves.md` (every run's validation and test error at each evaluation) and the curves'
    chart, with the paper's number for runs whose cell a paper table gives."""
    curves = collect.collect_curves(request.workdir)
    if not curves:
        raise ValueError(f"no metrics.jsonl with validation_error or test_error under "
                         f"{request.workdir}")
    references = {}
    for run in curves:
        try:
            found = summary.paper_reference(config_compare.run_config(request.workdir / run))
        except ValueError:  # metrics without a config.json: no paper line
            continue
        if found is not None:
            references[run] = found
    markdown = render.render_curves_markdown(curves)
    if references:
        markdown += "\n\nThe paper's test error: " + "; ".join(
            f"{run}: {value:g}% ({label})" for run, (label, value) in references.items()) + "."
    files = [_write_text(request.out() / "curves.md", markdown + "\n")]
    fig = figures.curves_figure(curves, references) if request.figure else None
    charts, notes = _save_chart(request, fig, request.out() / "curves.png")
    return Written(markdown, files + charts, notes)


# To add a `--table=` that is not a paper table, write a function Request -> Written and name it
# here. A new table of the paper needs only its entry in paper_results.json.
BUILDERS: dict[str, Callable[[Request], Written]] = {"sweep": build_sweep,
                                                     "curves": build_curves}


def write(table: str | int, workdir: str | os.PathLike, **options: Any) -> Written:
    """Write `--table=table` (one of `BUILDERS`, else a table of the paper) for the runs under
    `workdir`; `options` are `Request`'s fields (`out_dir`, `figure`, `formats`, `metric`, `x`,
    `lines`, `ignore`). Raises ValueError (one line) for a bad option or an unknown table before
    anything is written."""
    request = Request(Path(workdir), **options)
    figures.check_formats(request.formats)
    return BUILDERS.get(str(table), functools.partial(build_paper_table, table))(request)
