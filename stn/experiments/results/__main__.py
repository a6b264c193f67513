"""`python -m stn.experiments.results --workdir=DIR --table=NAME`: print a table, write its
files (`stn.experiments.results.tables.write`; docs/guides/results.md) and say which. Every
error is one line; a table written with a refusal ends with status 1 and the refusal's lines.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from stn.experiments.results import tables

flags.DEFINE_string("workdir", None, "Folder searched recursively for results.json files.")
flags.DEFINE_string("table", "1", "A table of the paper in paper_results.json (1, 2, 3, "
                    "addition, colocalisation), `sweep` for a summary of any sweep of one task, "
                    "or `curves` for validation and test error against steps of every run.")
flags.DEFINE_string("out_dir", None, "Where to write the files (default: workdir).")
flags.DEFINE_boolean("figure", True, "Also draw the chart (PNG, with matplotlib).")
flags.DEFINE_list("format", [], "Vector copies of the chart beside the PNG: pdf, svg or "
                  "pdf,svg.")
flags.DEFINE_string("metric", "validation_error", "--table=sweep: the validation metric that "
                    "ranks the settings (mean over seeds).")
flags.DEFINE_string("x", None, "--table=sweep: the varied config key on the figure's x axis "
                    "(default: the numeric one with the most values).")
flags.DEFINE_string("lines", None, "--table=sweep: the varied config key drawn as one line per "
                    "value (default: the other one with the fewest values).")
flags.DEFINE_list("ignore_keys", [], "--table=sweep: dotted config keys that do not define a "
                  "setting, besides seed and the fields that do not change the numbers.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
    """Print the table, write its files, and exit 1 with the lines of any refusal."""
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {list(argv[1:])}")
    if not Path(FLAGS.workdir).is_dir():
        sys.exit(f"error: --workdir {FLAGS.workdir!r} is not a folder")
    try:
        written = tables.write(FLAGS.table, FLAGS.workdir, out_dir=FLAGS.out_dir,
                               figure=FLAGS.figure, formats=tuple(FLAGS.format),
                               metric=FLAGS.metric, x=FLAGS.x, lines=FLAGS.lines,
                               ignore=tuple(FLAGS.ignore_keys))
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(written.markdown)
    print("wrote " + ", ".join(map(str, written.files)))
    for note in written.notes:
        print(note)
    if written.refused:
        sys.exit("\n".join(written.refused))  # the files are written; the status says: refused


if __name__ == "__main__":
    app.run(main)
