"""Tables from hand-written results.json files: cells, seed statistics, missing cells, figure."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from stn import tables

REPO = Path(__file__).resolve().parents[1]
OURS_BLUE = (52, 101, 164)


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
    data = tables.paper_results()
    assert "1506.02025" in data["citation"]
    t1 = tables.table_spec(1)
    assert [c["label"] for c in t1["columns"]] == ["R", "RTS", "P", "E"]
    assert len(t1["rows"]) == 8 and all(len(r["paper"]) == 4 for r in t1["rows"])
    rows = {r["label"]: r["paper"] for r in t1["rows"]}
    assert rows["FCN"] == [2.1, 5.2, 3.1, 3.2] and rows["ST-CNN TPS"] == [0.7, 0.5, 0.8, 1.1]
    t2 = {r["label"]: r["paper"] for r in tables.table_spec(2)["rows"]}
    assert t2["ST-CNN Multi"] == [3.6, 3.9] and t2["CNN"] == [4.0, 5.6]
    with pytest.raises(ValueError, match="unknown table"):
        tables.table_spec(3)


def test_cells_statistics_and_missing(table1_runs):
    runs, problems = tables.collect_results(table1_runs)
    assert len(runs) == 4 and len(problems) == 1 and "broken" in problems[0]
    built = tables.build_table(runs, tables.table_spec(1))
    cnn_r = built["cells"][1][0]  # row CNN, column R
    assert cnn_r["ours"]["n"] == 2
    assert cnn_r["ours"]["mean"] == pytest.approx(1.5)
    assert cnn_r["ours"]["std"] == pytest.approx(0.5 ** 0.5)  # sample std of 1% and 2%
    assert built["cells"][5][1]["ours"]["mean"] == pytest.approx(0.62)  # ST-CNN Aff, RTS
    assert built["cells"][2][1]["ours"] is None  # ST-FCN Aff, RTS: no run
    assert len(built["ignored"]) == 1 and "tc-cnn" in built["ignored"][0]


def test_markdown_rows(table1_runs):
    md = tables.make_table(table1_runs, 1, figure=False)
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
    md = tables.make_table(tmp_path, 2, figure=False)
    assert "| CNN | 4.0 / 4.50 | 5.6 / — |" in md
    assert "| Maxout CNN | 4.0 / n/a | n/a / n/a |" in md
    assert "| ST-CNN Multi | 3.6 / — | 3.9 / — |" in md


def test_figure_draws_our_bars_only_where_we_have_runs(table1_runs, tmp_path):
    tables.make_table(table1_runs, 1)
    with Image.open(table1_runs / "table1.png") as img:
        assert img.width > 600 and img.height > 300
        blue = sum(1 for px in img.convert("RGB").getdata() if px == OURS_BLUE)
    assert blue > 50
    empty = tmp_path / "empty"
    empty.mkdir()
    tables.make_table(empty, 1)
    with Image.open(empty / "table1.png") as img:
        assert not any(px == OURS_BLUE for px in img.convert("RGB").getdata())
    assert "Ours: no runs found." in (empty / "table1.md").read_text()


def test_cli(table1_runs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "stn.tables", f"--workdir={table1_runs}",
                          "--table=1"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| CNN | 1.2 / 1.50±0.71 (n=2)" in out.stdout
    assert (table1_runs / "table1.png").exists()
