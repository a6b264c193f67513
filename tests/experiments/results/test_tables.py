"""Tables from hand-written results.json files: cells, seed statistics, missing cells, figure."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stn.experiments import config_compare
from stn.experiments.results import collect, figures, summary, tables

import helpers

REPO = Path(helpers.ROOT)


def _write(root: Path, name: str, test_error: float, **config) -> None:
    """One run folder with a results.json whose config has the given dotted fields."""
    nested: dict = {}
    for dotted, value in config.items():
        node = nested
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(
        {"name": name, "config": nested, "test_error": test_error, "steps": 10}))


def _sweep(workdir: Path, **options) -> tuple[str, dict]:
    """`--table=sweep`: (its markdown, its summary)."""
    written = tables.write("sweep", workdir, **options)
    return written.markdown, written.summary


@pytest.fixture
def table1_runs(tmp_path):
    """CNN on R with two seeds; ST-CNN Aff on RTS; a plain CNN whose config also names a
    transform; a TC run and a broken file that belong to no cell."""
    _write(tmp_path, "r-cnn-s0", 0.010, seed=0, data__distortion="r", model__name="cnn",
           model__transform="affine")
    _write(tmp_path, "r-cnn-s1", 0.020, seed=1, data__distortion="r", model__name="cnn",
           model__transform="affine")
    _write(tmp_path / "nested", "rts-st_cnn-affine-s0", 0.0062, seed=0,
           data__distortion="rts", model__name="st_cnn", model__transform="affine")
    _write(tmp_path, "tc-cnn-s0", 0.05, seed=0, data__distortion="tc", model__name="cnn")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text('{"config": ')
    return tmp_path


def test_paper_numbers_and_citation():
    data = collect.paper_results()
    assert "1506.02025" in data["citation"]
    t1 = collect.table_spec(1)
    assert [c["label"] for c in t1["columns"]] == ["R", "RTS", "P", "E"]
    assert len(t1["rows"]) == 8 and all(len(r["paper"]) == 4 for r in t1["rows"])
    rows = {r["label"]: r["paper"] for r in t1["rows"]}
    assert rows["FCN"] == [2.1, 5.2, 3.1, 3.2] and rows["ST-CNN TPS"] == [0.7, 0.5, 0.8, 1.1]
    t2 = {r["label"]: r["paper"] for r in collect.table_spec(2)["rows"]}
    assert t2["ST-CNN Multi"] == [3.6, 3.9] and t2["CNN"] == [4.0, 5.6]
    with pytest.raises(ValueError, match="unknown table"):
        collect.table_spec("nope")


def test_addition_paper_values_say_what_was_checked():
    """Each addition row says whether its value was checked against the text."""
    spec = collect.table_spec("addition")
    source = {r["label"]: r["source"] for r in spec["rows"]}
    assert all(source.values())
    for label in ("FCN", "CNN", "ST-FCN Aff", "2xST-FCN TPS"):
        assert source[label].startswith("value checked"), label
    for label in ("2xST-FCN Aff", "2xST-FCN Proj"):
        assert source[label].startswith("not checked"), label
    assert "transform (affine) not checked" in source["ST-FCN Aff"]
    assert "TPS cell not checked" in source["2xST-FCN TPS"]
    assert "could not be read offline" in spec["source"]


def test_cells_statistics_and_missing(table1_runs):
    runs, problems = collect.collect_results(table1_runs)
    assert len(runs) == 4 and len(problems) == 1 and "broken" in problems[0]
    built = summary.build_table(runs, collect.table_spec(1))
    cnn_r = built["cells"][1][0]  # row CNN, column R
    assert cnn_r["ours"]["n"] == 2
    assert cnn_r["ours"]["mean"] == pytest.approx(1.5)
    assert cnn_r["ours"]["std"] == pytest.approx(0.5 ** 0.5)  # sample std of 1% and 2%
    assert built["cells"][5][1]["ours"]["mean"] == pytest.approx(0.62)  # ST-CNN Aff, RTS
    assert built["cells"][2][1]["ours"] is None  # ST-FCN Aff, RTS: no run
    assert len(built["ignored"]) == 1 and "tc-cnn" in built["ignored"][0]


def test_markdown_rows(table1_runs):
    md = tables.write(1, table1_runs, figure=False).markdown
    lines = md.splitlines()
    assert "| model | R | RTS | P | E |" in lines
    assert "| CNN | 1.2 / 1.50±0.71 (n=2) | 0.8 / — | 1.5 / — | 1.4 / — |" in lines
    assert "| ST-CNN Aff | 0.7 / — | 0.5 / 0.62 | 0.8 / — | 1.2 / — |" in lines
    assert "| FCN | 2.1 / — | 5.2 / — | 3.1 / — | 3.2 / — |" in lines
    assert "1 results.json file(s) belong to no cell" in md
    assert "Ours: 3 run(s); train.steps: None;" in md and "; seed: 0, 1." in md
    assert "unreadable" in md
    assert (table1_runs / "table1.md").read_text() == md
    cells = json.loads((table1_runs / "table1.json").read_text())["cells"]
    assert cells[1][0]["values"] == pytest.approx([1.0, 2.0])


def test_table2_marks_other_papers_models(tmp_path):
    _write(tmp_path, "a", 0.045, seed=0, data__variant="64px", model__name="cnn")
    md = tables.write(2, tmp_path, figure=False).markdown
    assert "| CNN | 4.0 / 4.50 | 5.6 / — |" in md
    assert "| Maxout CNN | 4.0 / n/a | n/a / n/a |" in md
    assert "| ST-CNN Multi | 3.6 / — | 3.9 / — |" in md


def test_addition_runs_stay_out_of_table1(table1_runs):
    # An addition run has Table 1's keys (distortion rts, model fcn) but another task.
    _write(table1_runs, "addition-fcn", 0.5, seed=0, task="addition", data__distortion="rts",
           model__name="fcn")
    _write(table1_runs, "mnist-fcn", 0.04, seed=0, task="classification",
           data__distortion="rts", model__name="fcn")
    runs, _ = collect.collect_results(table1_runs)
    built = summary.build_table(runs, collect.table_spec(1))
    assert built["cells"][0][1]["values"] == pytest.approx([4.0])  # FCN, RTS: the MNIST run
    assert any("addition-fcn" in path for path in built["ignored"])


@pytest.mark.slow
def test_cli(table1_runs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "stn.experiments.results",
                          f"--workdir={table1_runs}", "--table=1"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| CNN | 1.2 / 1.50±0.71 (n=2)" in out.stdout
    assert (table1_runs / "table1.png").exists() and not (table1_runs / "table1.pdf").exists()


# --------------------------------------------------------------------------------------------
# Sweep summaries (--table=sweep).


def _sweep_run(root: Path, name: str, lr: float, loc: float, seed: int, validation: float | None,
               test: float, transform: str = "affine") -> None:
    """One run of a learning-rate x loc-multiplier (x transform) sweep."""
    config = {"name": "mnist_rts_st_cnn_affine", "seed": seed,
              "data": {"distortion": "rts", "validation_size": 1000},
              "model": {"name": "st_cnn", "transform": transform, "loc_lr_multiplier": loc},
              "train": {"learning_rate": lr, "eval_every": 100 + seed}}  # bookkeeping differs
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(
        {"name": config["name"], "config": config, "validation_error": validation,
         "validation_loss": None if validation is None else 3 * validation,
         "test_error": test, "test_loss": 3 * test}))


@pytest.fixture
def lr_sweep(tmp_path):
    """lr {0.001, 0.01, 0.1} x loc {0.1, 1} x seeds {0, 1}. Validation prefers lr 0.01 with
    loc 0.1; test prefers lr 0.1 with loc 1, so a chooser that peeked at test would differ."""
    for lr in (0.001, 0.01, 0.1):
        for loc in (0.1, 1.0):
            for seed in (0, 1):
                val = 0.02 if (lr, loc) == (0.01, 0.1) else 0.05 + lr + loc / 100
                test = 0.01 if (lr, loc) == (0.1, 1.0) else 0.04 + lr
                _sweep_run(tmp_path, f"lr{lr:g}-loc{loc:g}-s{seed}", lr, loc, seed,
                           val + 0.01 * seed, test + 0.002 * seed)
    return tmp_path


class _NoTestMetrics(dict):
    """A run that fails the test if anyone reads one of its test metrics."""

    def __getitem__(self, key):
        assert not key.startswith("test_"), f"the chooser read {key}"
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


def test_chooser_reads_only_validation_metrics():
    # Validation ranks setting 1 first, test would rank setting 0 first.
    settings = [[_NoTestMetrics(validation_error=0.30, test_error=0.01)] * 2,
                [_NoTestMetrics(validation_error=0.10, test_error=0.50),
                 _NoTestMetrics(validation_error=0.12, test_error=0.50)],
                [_NoTestMetrics(validation_error=None, test_error=0.00)]]
    assert summary.rank_by_validation(settings) == ([1, 0], [2])
    assert summary.rank_by_validation(
        [[_NoTestMetrics(validation_accuracy=0.9)], [_NoTestMetrics(validation_accuracy=0.95)]],
        "validation_accuracy") == ([1, 0], [])
    with pytest.raises(ValueError, match="validation metrics only"):
        summary.rank_by_validation(settings, "test_error")
    with pytest.raises(ValueError, match="never falls back to test metrics"):
        summary.rank_by_validation([[_NoTestMetrics(test_error=0.1)]])


def test_sweep_summary_ranks_on_validation(lr_sweep):
    md, sweep = _sweep(lr_sweep, figure=False)
    assert sweep["varied_keys"] == ["model.loc_lr_multiplier", "train.learning_rate"]
    assert sweep["bookkeeping_varied"] == ["train.eval_every"]  # does not split settings
    assert [s["n"] for s in sweep["settings"]] == [2] * 6
    best = sweep["best"]
    assert best["values"] == {"model.loc_lr_multiplier": 0.1, "train.learning_rate": 0.01}
    assert best["metrics"]["validation_error"]["mean"] == pytest.approx(0.025)
    assert best["metrics"]["test_error"]["mean"] == pytest.approx(0.051)
    val = [s["metrics"]["validation_error"]["mean"] for s in sweep["settings"]]
    assert val == sorted(val) and [s["rank"] for s in sweep["settings"]] == [1, 2, 3, 4, 5, 6]
    lines = md.splitlines()
    assert ("| rank | model.loc_lr_multiplier | train.learning_rate | runs | validation error % "
            "| validation loss | test error % | test loss |") in lines
    assert ("| 1 (best) | 0.1 | 0.01 | 2 | 2.50±0.71 | 0.0750±0.0212 | 5.10±0.14 "
            "| 0.1530±0.0042 |") in lines
    assert "| 2 | 0.1 | 0.001 | 2 |" in lines[5]
    assert "Best: model.loc_lr_multiplier=0.1, train.learning_rate=0.01 " in md
    assert "ignored (they do not change the numbers): train.eval_every." in md
    assert (lr_sweep / "sweep.md").read_text() == md
    saved = json.loads((lr_sweep / "sweep_summary.json").read_text())
    assert saved["best"]["values"] == best["values"] and saved["best"]["seeds"] == [0, 1]
    assert saved["fixed"]["data.validation_size"] == 1000 and "seed" not in saved["fixed"]


def test_sweep_refuses_to_choose_without_validation(tmp_path):
    for lr in (0.01, 0.1):
        _sweep_run(tmp_path, f"lr{lr:g}", lr, 1.0, 0, None, 0.05 + lr)
    md, sweep = _sweep(tmp_path)
    assert sweep["best"] is None and "never falls back to test" in sweep["refused"]
    assert all(s["rank"] is None for s in sweep["settings"])
    assert "No best setting: no setting has validation_error in every run" in md
    assert "| — | 0.01 | 1 | 6.00 | 0.1800 |" in md  # test metrics still shown
    assert json.loads((tmp_path / "sweep_summary.json").read_text())["best"] is None
    with pytest.raises(ValueError, match="validation metrics only"):
        _sweep(tmp_path, metric="test_error")


def test_sweep_partial_settings_and_seed_statistics(tmp_path):
    _sweep_run(tmp_path, "a-s0", 0.01, 1, 0, 0.10, 0.2)  # loc 1 (int) is loc 1.0
    _sweep_run(tmp_path, "a-s1", 0.01, 1.0, 1, 0.20, 0.2)
    _sweep_run(tmp_path, "a-s1-again", 0.01, 1.0, 1, 0.30, 0.2)  # a copy of seed 1: not a seed
    _sweep_run(tmp_path, "b-s0", 0.1, 1.0, 0, 0.01, 0.2)
    _sweep_run(tmp_path, "b-s1", 0.1, 1.0, 1, None, 0.2)  # b cannot be ranked
    _sweep_run(tmp_path, "c-s0", 0.001, 1.0, 0, float("nan"), 0.9)  # diverged: ranked last
    md, sweep = _sweep(tmp_path)
    assert sweep["varied_keys"] == ["train.learning_rate"]
    a, c, b = sweep["settings"]
    assert c["rank"] == 2 and "| 2 | 0.001 | 1 | nan |" in md
    assert a["best"] and a["n"] == 2 and a["seeds"] == [0, 1]
    assert a["metrics"]["validation_error"]["mean"] == pytest.approx(0.15)  # 0.30 left out
    assert a["metrics"]["validation_error"]["std"] == pytest.approx(0.05 * 2 ** 0.5)
    assert b["rank"] is None and b["metrics"]["validation_error"]["n"] == 1
    assert "| — | 0.1 | 2 | 1.00 (n=1) |" in md
    assert "Not ranked (validation_error missing from some run): train.learning_rate=0.1" in md
    copies = [line for line in md.splitlines() if " in 2 runs " in line]
    assert len(copies) == 1 and copies[0].startswith("train.learning_rate=0.01: seed 1 in 2 runs")
    assert "a-s1/results.json" in copies[0] and "counted once, from the first" in copies[0]


def test_sweep_reports_missing_and_broken_runs(lr_sweep):
    (lr_sweep / "running").mkdir()
    (lr_sweep / "running" / "config.json").write_text("{}")
    (lr_sweep / "sweep.json").write_text(json.dumps(
        {"sweep": "x", "points": [{"name": "lr0.01-loc0.1-s0"}, {"name": "never-started"}]}))
    (lr_sweep / "broken").mkdir()
    (lr_sweep / "broken" / "results.json").write_text('{"config": ')
    (lr_sweep / "lr0.01-loc0.1-s1" / "checkpoints").mkdir()  # inside a finished run
    (lr_sweep / "lr0.01-loc0.1-s1" / "checkpoints" / "config.json").write_text("{}")
    md, sweep = _sweep(lr_sweep, figure=False)
    skipped = [line for line in md.splitlines() if line.startswith("Skipped ")]
    assert len(skipped) == 3
    assert "broken/results.json: unreadable" in skipped[0]
    assert "never-started: no results.json" in skipped[1]
    assert "running: no results.json" in skipped[2]
    assert sweep["best"] is not None


def _sweep_lines(fig) -> dict[str, list[tuple[list, list]]]:
    """{line label: [(x, y) in each panel]} of a sweep figure."""
    lines: dict[str, list] = {}
    for ax in fig.axes:
        for container in ax.containers:  # each line is an errorbar: its data line comes first
            line = container.lines[0]
            lines.setdefault(container.get_label(), []).append(
                (list(line.get_xdata()), list(line.get_ydata())))
    return lines


def test_sweep_figure(lr_sweep, tmp_path):
    md, sweep = _sweep(lr_sweep)
    assert ("Figure: sweep.png, validation error % and test error % against "
            "train.learning_rate, one line per model.loc_lr_multiplier.") in md
    assert sweep["figure"] == "sweep.png" and (lr_sweep / "sweep.png").is_file()
    fig, _ = figures.sweep_figure(sweep)
    assert [ax.get_title() for ax in fig.axes] == ["validation error %", "test error %"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)  # lr spans two decades
    assert fig.axes[0].get_yscale() == "log"  # means from 1.1% (test) to 16.5% (validation)
    lines = _sweep_lines(fig)
    assert list(lines) == ["model.loc_lr_multiplier = 0.1", "model.loc_lr_multiplier = 1"]
    (val_x, val_y), (test_x, test_y) = lines["model.loc_lr_multiplier = 0.1"]
    assert val_x == test_x == pytest.approx([0.001, 0.01, 0.1])
    assert val_y == pytest.approx([5.7, 2.5, 15.6])  # mean over seeds, in %
    assert test_y == pytest.approx([4.2, 5.1, 14.1])
    ring = [c.get_offsets().tolist() for c in fig.axes[0].collections if c.get_gid() == "best"]
    assert ring == [[[0.01, pytest.approx(2.5)]]]  # the best setting, chosen on validation
    with pytest.raises(ValueError, match="--x='train.steps' is not a key that varies"):
        _sweep(lr_sweep, x="train.steps")
    md, sweep = _sweep(lr_sweep, x="model.loc_lr_multiplier")
    assert "against model.loc_lr_multiplier, one line per train.learning_rate" in md
    lines = _sweep_lines(figures.sweep_figure(sweep, x="model.loc_lr_multiplier")[0])
    assert len(lines) == 3 and lines["train.learning_rate = 0.1"][0][1] == pytest.approx(
        [15.6, 16.5])

    three = tmp_path / "three"
    for transform in ("affine", "tps"):
        for lr in (0.01, 0.1):
            for loc in (0.1, 1.0):
                _sweep_run(three, f"{transform}-{lr:g}-{loc:g}", lr, loc, 0, (lr + loc) / 10,
                           0.1, transform)
    md, sweep = _sweep(three)
    assert "against train.learning_rate, one line per model.transform; held at the best " \
           "setting: model.loc_lr_multiplier=0.1." in md
    lines = _sweep_lines(figures.sweep_figure(sweep)[0])
    assert lines["model.transform = tps"][0] == ([0.01, 0.1], pytest.approx([1.1, 2.0]))

    single = tmp_path / "single"
    _sweep_run(single, "s0", 0.01, 1.0, 0, 0.1, 0.1)
    _sweep_run(single, "s1", 0.01, 1.0, 1, 0.2, 0.1)
    (single / "sweep.png").write_bytes(b"an older figure")
    md, sweep = _sweep(single)
    assert "No figure: every run has the same setting" in md and sweep["best"]["n"] == 2
    assert sweep["figure"] is None and not (single / "sweep.png").exists()


@pytest.mark.slow
def test_sweep_cli(lr_sweep, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "stn.experiments.results", "--table=sweep"]
    out = subprocess.run(cmd + [f"--workdir={lr_sweep}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| 1 (best) | 0.1 | 0.01 | 2 |" in out.stdout and (lr_sweep / "sweep.png").exists()
    _sweep_run(tmp_path / "noval", "a", 0.01, 1.0, 0, None, 0.1)
    out = subprocess.run(cmd + [f"--workdir={tmp_path / 'noval'}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().startswith("no best setting:")
    assert (tmp_path / "noval" / "sweep.md").exists()
    out = subprocess.run(cmd[:3] + ["--table=9", f"--workdir={lr_sweep}"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "unknown table '9'" in out.stderr


def _curve_run(root: Path, name: str, points: list[dict], config: dict | None = None) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "metrics.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    if config is not None:
        (root / name / "config.json").write_text(json.dumps(config))


def test_curves_read_every_runs_metrics_and_draw_them(tmp_path):
    for run, errors in (("a", [0.5, 0.2]), ("b", [0.6, 0.4])):
        lines = [{"step": 10, "train_loss": 1.0}]
        lines += [{"step": 100 * (i + 1), "validation_error": e} for i, e in enumerate(errors)]
        lines += [{"step": 200, "test_error": round(errors[-1] + 0.01, 6)}]
        _curve_run(tmp_path, run, lines, {"task": "classification", "data": {
            "distortion": "rts"}, "model": {"name": "cnn"}} if run == "a" else None)
    curves = collect.collect_curves(tmp_path)
    assert curves["a"] == {"validation_error": [(100, 0.5), (200, 0.2)],
                           "test_error": [(200, 0.21)]}
    markdown = tables.write("curves", tmp_path).markdown
    assert "| b | 200 | 40.00 | 41.00 |" in markdown and "| a | 100 | 50.00 | — |" in markdown
    assert "The paper's test error: a: 0.8% (CNN, RTS)." in markdown  # b has no config
    assert (tmp_path / "curves.png").stat().st_size > 0
    fig = figures.curves_figure(curves, {"a": summary.paper_reference(
        config_compare.run_config(tmp_path / "a"))})
    validation, test = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["validation error %", "test error %"]
    runs = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in validation.get_lines() if line.get_gid() != "paper"}
    assert runs == {"a": ([100, 200], pytest.approx([50.0, 20.0])),
                    "b": ([100, 200], pytest.approx([60.0, 40.0]))}
    assert [(l.get_xdata().tolist(), l.get_ydata().tolist()) for l in test.get_lines()
            if l.get_label() == "b"] == [([200], pytest.approx([41.0]))]
    for ax in fig.axes:  # the paper's 0.8% for CNN on RTS, one horizontal line per panel
        paper = [line for line in ax.get_lines() if line.get_gid() == "paper"]
        assert [line.get_label() for line in paper] == ["paper: CNN, RTS"]
        assert list(paper[0].get_ydata()) == [0.8, 0.8]
        assert ax.get_xscale() == "linear"  # 100 to 200 steps: not a decade
        assert ax.get_yscale() == "log"  # 20-60% and the paper's 0.8%: more than a decade
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        tables.write("curves", tmp_path / "empty").markdown


def test_curves_log_steps_when_runs_span_decades(tmp_path):
    _curve_run(tmp_path, "long", [{"step": s, "validation_error": e}
                                  for s, e in ((100, 0.5), (1000, 0.1), (10000, 0.02))])
    fig = figures.curves_figure(collect.collect_curves(tmp_path))
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log"  # 50% to 2%: more than a decade
    assert not any(line.get_gid() == "paper" for ax in fig.axes for line in ax.get_lines())
    fig = figures.curves_figure({"short": {"validation_error": [(10, 0.3), (20, 0.2)]}})
    assert fig.axes[0].get_xscale() == fig.axes[0].get_yscale() == "linear"
    assert fig.axes[0].get_ylim()[0] == 0  # errors from 0 on a linear axis


# --------------------------------------------------------------------------------------------
# What a table refuses, and what the command line says.


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stn.experiments.results", *args], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                          text=True, timeout=120)


def test_an_impossible_error_is_a_problem_and_its_run_is_left_out(table1_runs):
    _write(table1_runs, "r-cnn-s2", 2.5, seed=2, data__distortion="r", model__name="cnn",
           model__transform="affine")
    md = tables.write(1, table1_runs, figure=False).markdown
    assert "| CNN | 1.2 / 1.50±0.71 (n=2) |" in md and "250.00" not in md
    (line,) = [line for line in md.splitlines() if "r-cnn-s2" in line]
    assert line.startswith("Skipped ") and "test_error=2.5 is not a fraction in [0, 1]" in line
    _sweep_run(table1_runs / "sweep", "a", 0.01, 1.0, 0, -0.1, 0.1)
    _sweep_run(table1_runs / "sweep", "b", 0.1, 1.0, 0, 0.2, 0.1)
    md, sweep = _sweep(table1_runs / "sweep", figure=False)
    assert [s["values"] for s in sweep["settings"]] == [{}]  # only b is left: nothing varies
    assert "validation_error=-0.1 is not a fraction" in md


@pytest.mark.slow
def test_a_cell_of_several_settings_ends_the_command_with_one_line(table1_runs):
    _write(table1_runs, "r-cnn-lr", 0.03, seed=2, data__distortion="r", model__name="cnn",
           model__transform="affine", train__learning_rate=0.5)
    out = _cli(f"--workdir={table1_runs}", "--table=1")
    assert out.returncode == 1 and "| CNN | 1.2 / mixed |" in out.stdout
    assert out.stderr.strip().splitlines() == [
        "cell CNN, R: its 3 runs differ in train.learning_rate, not only in seed, so they are "
        "not averaged; put each setting's runs under a folder of its own (or rank them with "
        "--table=sweep)"]
    assert (table1_runs / "table1.md").is_file() and (table1_runs / "table1.png").is_file()


@pytest.mark.slow
def test_out_dir_that_is_a_file_is_one_line(table1_runs, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    out = _cli(f"--workdir={table1_runs}", "--table=1", f"--out_dir={tmp_path / 'taken'}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"error: --out_dir={tmp_path / 'taken'} is not a folder and "
                                  f"cannot be made one (File exists); name a folder, made if "
                                  f"absent")
    out = _cli(f"--workdir={tmp_path / 'taken'}", "--table=1")
    assert out.returncode == 1 and out.stderr.strip() == (
        f"error: --workdir {str(tmp_path / 'taken')!r} is not a folder")


@pytest.mark.slow
def test_no_chart_is_left_beside_a_new_table(table1_runs):
    written = tables.write(1, table1_runs, formats=("pdf",))
    assert {p.name for p in written.files} >= {"table1.png", "table1.pdf"}
    written = tables.write(1, table1_runs)  # PNG only: the older PDF is of other runs
    assert written.notes == ["removed the older table1.pdf: a chart of earlier runs would not "
                             "match the new table"]
    assert not (table1_runs / "table1.pdf").exists()
    out = _cli(f"--workdir={table1_runs}", "--table=1", "--format=pdf", "--nofigure")
    assert out.returncode == 0
    assert out.stdout.splitlines()[-2:] == [
        "--nofigure: no chart is drawn, so no pdf is written",
        "removed the older table1.png: a chart of earlier runs would not match the new table"]
    assert not (table1_runs / "table1.png").exists() and (table1_runs / "table1.md").is_file()
