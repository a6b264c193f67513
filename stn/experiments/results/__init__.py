"""Results of finished runs: the paper's tables beside ours, sweep summaries, learning curves,
as markdown, JSON and charts (`python -m stn.experiments.results --help`; docs/guides/results.md).

- `collect`: reading runs off disk (`results.json`, unfinished runs, `metrics.jsonl`) and the
  paper's numbers (`paper_results.json`).
- `summary`: runs grouped into settings (what differs beyond the seed), table cells, the
  validation-only chooser of a sweep.
- `render`: markdown and JSON. `figures`: the matplotlib charts.
- `tables`: `write(table, workdir)`, which puts them together; `__main__` is its command line.
"""
