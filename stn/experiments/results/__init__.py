"""Results of finished runs: collecting them, the paper's tables beside ours, sweep summaries,
learning curves, markdown and charts (`python -m stn.experiments.results --help`).

- `collect`: finding runs (`results.json`), table cells, curves; the paper's numbers
  (`paper_results.json`).
- `summary`: a sweep's settings and the validation-only chooser.
- `render`: markdown and JSON.
- `figures`: the matplotlib charts.
- `tables`: the command line that puts them together.
"""
