"""What a table averages and what it refuses: a cell holds runs of one setting (they differ only
in their seed), a seed counts once, a sweep is of one task, the most specific row wins."""
import json
from pathlib import Path

import pytest

from stn.experiments import config_compare
from stn.experiments.results import collect, figures, summary, tables


def _run(root: Path, folder: str, test_error: float, seed: int = 0, lr: float = 0.01,
         loc: float = 0.1, **extra) -> dict:
    """A Table 1 run of ST-CNN Aff on R in `root/folder` (its results.json), and its record;
    `extra` sets config fields (`train__eval_every=7`)."""
    config = {"task": "classification", "name": "mnist_r_st_cnn_affine", "seed": seed,
              "data": {"distortion": "r"},
              "model": {"name": "st_cnn", "transform": "affine", "loc_lr_multiplier": loc},
              "train": {"learning_rate": lr, "eval_every": 100}}
    for dotted, value in extra.items():
        *sections, leaf = dotted.split("__")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    record = {"config": config, "test_error": test_error, "validation_error": test_error}
    (root / folder).mkdir(parents=True)
    (root / folder / "results.json").write_text(json.dumps(record))
    return record


ST_CNN_AFF, R = 5, 0  # the cell's row and column in Table 1


def test_a_cell_refuses_runs_that_differ_beyond_their_seed(tmp_path):
    """Two learning rates x two loc multipliers, all seed 0: not four seeds of one setting."""
    for lr in (0.01, 0.1):
        for loc in (0.1, 1.0):
            _run(tmp_path, f"lr{lr}-loc{loc}", 0.7 + lr + loc / 10, lr=lr, loc=loc)
    written = tables.write(1, tmp_path)
    cell = json.loads((tmp_path / "table1.json").read_text())["cells"][ST_CNN_AFF][R]
    assert cell["ours"] is None and cell["values"] == [] and len(cell["runs"]) == 4
    assert cell["differ"] == ["model.loc_lr_multiplier", "train.learning_rate"]
    assert "| ST-CNN Aff | 0.7 / mixed | 0.5 / — |" in written.markdown
    (refusal,) = written.refused
    assert refusal.startswith("cell ST-CNN Aff, R: its 4 runs differ in model.loc_lr_multiplier, "
                              "train.learning_rate, not only in seed")
    assert "\n" not in refusal and f"Refused {refusal}" in written.markdown
    # The chart draws no bar "±1 sd over seeds" for it, but a marker that says why.
    fig = figures.table_figure(summary.build_table(collect.collect_results(tmp_path)[0],
                                                   collect.table_spec(1)), collect.table_spec(1))
    ours = [c for c in fig.axes[R].containers if c.get_label() == "ours (±1 sd over seeds)"]
    assert [p.get_height() for c in ours for p in c.patches] == []
    (marker,) = [line for line in fig.axes[R].get_lines()
                 if line.get_label() == "runs differ beyond seed"]
    assert list(marker.get_xdata()) == [ST_CNN_AFF + 0.2]


def test_a_cell_averages_seeds_of_one_setting_whatever_the_harmless_fields(tmp_path):
    """Seeds differ; so do the name and the evaluation interval, which change no number."""
    _run(tmp_path, "s0", 0.01, seed=0)
    _run(tmp_path, "s1", 0.02, seed=1, name="renamed", train__eval_every=7)
    assert {"name", "train.eval_every"} <= config_compare.NON_COMPUTATIONAL
    built = summary.build_table(collect.collect_results(tmp_path)[0], collect.table_spec(1))
    cell = built["cells"][ST_CNN_AFF][R]
    assert cell["differ"] == [] and built["refused"] == []
    assert cell["ours"]["n"] == 2 and cell["ours"]["mean"] == pytest.approx(1.5)
    assert cell["seeds"] == [0, 1]


def test_copies_of_one_seed_count_once_in_a_cell(tmp_path):
    _run(tmp_path, "a", 0.01, seed=0)
    _run(tmp_path, "a-copy", 0.01, seed=0)
    _run(tmp_path, "b", 0.03, seed=1)
    built = summary.build_table(collect.collect_results(tmp_path)[0], collect.table_spec(1))
    cell = built["cells"][ST_CNN_AFF][R]
    assert cell["ours"]["n"] == 2 and cell["seeds"] == [0, 1]
    assert cell["ours"]["std"] == pytest.approx(2 ** 0.5)  # of 1% and 3%, not of 1, 1 and 3
    (note,) = built["notes"]
    assert note.startswith("cell ST-CNN Aff, R: seed 0 in 2 runs") and "a-copy" in note


def test_a_sweep_over_several_tasks_is_refused(tmp_path):
    _run(tmp_path, "mnist-a", 0.1, lr=0.01)
    _run(tmp_path, "mnist-b", 0.2, lr=0.1)
    _run(tmp_path, "cub", 0.3, task="cub")
    runs, _ = collect.collect_results(tmp_path, required=())
    with pytest.raises(ValueError, match=r"^the runs are of 2 tasks \(classification: 2 "
                                         r"run\(s\), cub: 1 run\(s\)\); a sweep ranks"):
        summary.summarize_sweep(runs)
    assert not (tmp_path / "sweep.md").exists()
    sweep = summary.summarize_sweep([r for r in runs if "mnist" in r["path"]])
    assert sweep["varied_keys"] == ["train.learning_rate"]


def test_a_sweep_counts_each_seed_once(tmp_path):
    for name in ("s0", "s0-copy", "s0-another-copy"):
        _run(tmp_path, name, 0.1, seed=0)
    _run(tmp_path, "s1", 0.3, seed=1)
    runs, _ = collect.collect_results(tmp_path, required=())
    (setting,) = summary.summarize_sweep(runs)["settings"]
    assert setting["n"] == 2 and setting["seeds"] == [0, 1]
    assert setting["metrics"]["validation_error"]["mean"] == pytest.approx(0.2)


@pytest.mark.parametrize("general_first", [True, False])
def test_the_most_specific_row_wins_in_either_order(general_first):
    """Hand-made rows that overlap: a run of the specific one matches both."""
    general = {"label": "ST", "match": {"model.name": "st"}, "paper": [1.0]}
    specific = {"label": "ST Aff", "match": {"model.name": "st", "model.transform": "affine"},
                "paper": [2.0]}
    rows = [general, specific] if general_first else [specific, general]
    spec = {"rows": rows, "columns": [{"label": "all", "match": {"data.set": "x"}}]}
    runs = [{"path": "aff", "test_error": 0.1, "config": {
                "data": {"set": "x"}, "model": {"name": "st", "transform": "affine"}}},
            {"path": "tps", "test_error": 0.2, "config": {
                "data": {"set": "x"}, "model": {"name": "st", "transform": "tps"}}}]
    cells = summary.build_table(runs, spec)["cells"]
    by_label = {row["label"]: cells[i][0]["runs"] for i, row in enumerate(rows)}
    assert by_label == {"ST Aff": ["aff"], "ST": ["tps"]}
