"""Sweep expansion, the command lines, resuming, and the runner end to end with a fake trainer."""
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stn import sweeps
from stn.config_args import parse as _parse


def parse_arg(arg, **defaults):
    """The shared argument parser, as sweep files call it."""
    return _parse(arg, where="sweep", **defaults)


REPO = Path(__file__).resolve().parents[1]

# A stand-in for train.py: writes results.json unless its config arg contains "fail"; counts its
# calls in WORKDIR/calls.txt so the tests can see what was (not) re-run.
FAKE_TRAIN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    workdir = Path(args["workdir"])
    with open(workdir.parent / "calls.txt", "a") as f:
        f.write(workdir.name + "\\n")
    print("training", workdir.name)
    if "fail" in args["config"]:
        sys.exit("boom: this point fails on purpose")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text(json.dumps({
        "name": workdir.name, "test_error": 0.25,
        "config": {"seed": int(args["config.seed"]), "train": {"steps": int(args["config.train.steps"])}}}))
""")


def _sweep_file(tmp_path: Path, configs: list[str]) -> Path:
    """A sweep file of plain data: one point per config string, seeds 0.."""
    points = [{"name": f"p{i}", "config": c, "overrides": {"seed": i, "train.steps": 5}}
              for i, c in enumerate(configs)]
    path = tmp_path / "tiny_sweep.py"
    path.write_text(f"def get_sweep(arg=None):\n    return {points!r}\n")
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """python -m stn.sweeps ARGS from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "stn.sweeps", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


# --- building blocks ---------------------------------------------------------------------------

def test_product_and_zip():
    assert sweeps.product(a=[1, 2], b="xy") == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert sweeps.zip_axes(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(ValueError, match="equal length"):
        sweeps.zip_axes(a=[1, 2], b=[3])


def test_parse_arg_types_lists_and_errors():
    opts = parse_arg("config=configs/mnist.py:rts,st_cnn,affine,lrs=0.1,0.02,seeds=3",
                     config="x", lrs=[0.01], seeds=1, data=None)
    assert opts == {"config": "configs/mnist.py:rts,st_cnn,affine", "lrs": [0.1, 0.02],
                    "seeds": 3, "data": None}
    assert parse_arg(None, seeds=1) == {"seeds": 1}
    with pytest.raises(ValueError, match="unknown argument 'seed'"):
        parse_arg("seed=3", seeds=1)
    with pytest.raises(ValueError, match="seeds='three': expected a int"):
        parse_arg("seeds=three", seeds=1)


def test_validation_rejects_bad_points():
    with pytest.raises(ValueError, match="appears twice"):
        sweeps.validate_sweep([{"name": "a", "config": "c.py"}, {"name": "a", "config": "c.py"}])
    with pytest.raises(ValueError, match="folder name"):
        sweeps.point("a/b", "c.py")
    with pytest.raises(ValueError, match="must be a bool, int, float or str"):
        sweeps.point("a", "c.py", {"train.steps": [1, 2]})
    with pytest.raises(ValueError, match="dotted config field"):
        sweeps.point("a", "c.py", {"--seed": 1})


# --- the sweep files ---------------------------------------------------------------------------

def test_table1_expansion():
    points = sweeps.load_sweep(str(REPO / "configs/sweeps/table1.py") + ":seeds=3,steps=100")
    assert len(points) == 4 * 8 * 3
    names = [p["name"] for p in points]
    assert len(set(names)) == len(names)
    by_name = {p["name"]: p for p in points}
    assert by_name["rts-st_cnn-affine-s2"] == {
        "name": "rts-st_cnn-affine-s2", "config": "configs/mnist.py:rts,st_cnn,affine",
        "overrides": {"seed": 2, "train.steps": 100, "train.lr_decay_every": 33}}
    assert by_name["r-fcn-s0"]["config"] == "configs/mnist.py:r,fcn"
    assert {p["config"].split(":")[1].split(",")[0] for p in points} == {"r", "rts", "p", "e"}
    # The default is one seed and the configs' own number of steps.
    default = sweeps.load_sweep(str(REPO / "configs/sweeps/table1.py"))
    assert len(default) == 32 and all(p["overrides"] == {"seed": 0} for p in default)


def test_table1_reduced_needs_data_and_sets_budget():
    with pytest.raises(ValueError, match="needs a data source"):
        sweeps.load_sweep(str(REPO / "configs/sweeps/table1_reduced.py"))
    points = sweeps.load_sweep(str(REPO / "configs/sweeps/table1_reduced.py") +
                               ":data=/some/mnist,steps=60,batch=32,lr=0.05,momentum=0,loc=1")
    assert len(points) == 32
    assert all(p["overrides"] == {"seed": 0, "train.steps": 60, "train.lr_decay_every": 45,
                                  "data.source": "idx:/some/mnist", "train.batch_size": 32,
                                  "train.learning_rate": 0.05, "train.momentum": 0.0,
                                  "model.loc_lr_multiplier": 1.0, "train.eval_every": 60,
                                  "train.log_every": 10}
               for p in points)
    default = sweeps.load_sweep(str(REPO / "configs/sweeps/table1_reduced.py") + ":data=idx:/d")
    overrides = default[0]["overrides"]
    assert (overrides["train.steps"], overrides["train.batch_size"]) == (300, 64)
    assert (overrides["train.learning_rate"], overrides["train.momentum"]) == (0.02, 0.9)
    assert overrides["model.loc_lr_multiplier"] == 0.1


def test_table2_and_lr_seed_expansion():
    t2 = sweeps.load_sweep(str(REPO / "configs/sweeps/table2.py") + ":seeds=2,manual_dir=/svhn")
    assert len(t2) == 2 * 3 * 2
    assert t2[0]["overrides"] == {"seed": 0, "data.manual_dir": "/svhn"}
    assert {p["config"] for p in t2} == {f"configs/svhn.py:{v},{m}" for v in ("64px", "128px")
                                         for m in ("cnn", "st_cnn_single", "st_cnn_multi")}
    lr = sweeps.load_sweep(str(REPO / "configs/sweeps/lr_seed.py") +
                           ":lrs=0.1,0.01,loc_multipliers=1,0.1,seeds=3")
    assert len(lr) == 2 * 2 * 3
    p = {q["name"]: q for q in lr}["lr0.01-loc0.1-s2"]
    assert p["overrides"] == {"seed": 2, "train.learning_rate": 0.01,
                              "model.loc_lr_multiplier": 0.1}
    assert p["config"] == "configs/mnist.py:rts,st_cnn,affine"


# --- commands, dry run, emit, resume -----------------------------------------------------------

def test_point_command_is_an_argv_list(tmp_path):
    p = sweeps.point("a-s0", "configs/mnist.py:rts,st_cnn,affine",
                     {"seed": 0, "train.learning_rate": 0.1, "data.source": "idx:/d x",
                      "flag": True})
    argv = sweeps.point_command(p, tmp_path, python="py", train_script="train.py")
    assert argv == ["py", "train.py", "--config=configs/mnist.py:rts,st_cnn,affine",
                    f"--workdir={tmp_path.absolute() / 'a-s0'}", "--config.seed=0",
                    "--config.train.learning_rate=0.1", "--config.data.source=idx:/d x",
                    "--config.flag=true"]


def test_is_finished(tmp_path):
    assert not sweeps.is_finished(tmp_path)
    (tmp_path / "results.json").write_text('{"test_error": 0.')  # a crash mid-write
    assert not sweeps.is_finished(tmp_path)
    (tmp_path / "results.json").write_text('{"test_error": 0.1}')
    assert sweeps.is_finished(tmp_path)


def test_dry_run_and_emit_list_only_unfinished_points(tmp_path):
    sweep = _sweep_file(tmp_path, ["configs/a.py:x,y", "configs/b.py"])
    workdir = tmp_path / "runs"
    (workdir / "p0").mkdir(parents=True)
    (workdir / "p0" / "results.json").write_text('{"test_error": 0.1}')
    emit = tmp_path / "cmds.txt"
    out = _run_cli(f"--sweep={sweep}", f"--workdir={workdir}", "--dry_run", f"--emit={emit}",
                   "--python=python3")
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if line.startswith("python3 ")]
    expected = ["python3", "train.py", "--config=configs/b.py", f"--workdir={workdir / 'p1'}",
                "--config.seed=1", "--config.train.steps=5"]
    assert [shlex.split(c) for c in commands] == [expected]
    assert "1 of 2 point(s) to run (1 finished)" in out.stdout
    assert [shlex.split(line) for line in emit.read_text().splitlines()] == [expected]
    assert not (workdir / "p1").exists()  # nothing ran


def test_runner_end_to_end_and_resume(tmp_path):
    sweep = _sweep_file(tmp_path, ["configs/a.py", "configs/b.py"])
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    workdir = tmp_path / "runs"
    out = _run_cli(f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake}",
                   "--parallel=2")
    assert out.returncode == 0, out.stdout + out.stderr
    for i in range(2):
        result = json.loads((workdir / f"p{i}" / "results.json").read_text())
        assert result["config"] == {"seed": i, "train": {"steps": 5}}
        assert f"training p{i}" in (workdir / f"p{i}" / "log.txt").read_text()
    assert sorted((workdir / "calls.txt").read_text().split()) == ["p0", "p1"]
    assert "2 done, 0 skipped" in out.stdout
    manifest = json.loads((workdir / "sweep.json").read_text())
    assert [p["name"] for p in manifest["points"]] == ["p0", "p1"]
    # Resume: both finished, so nothing runs again.
    again = _run_cli(f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake}")
    assert again.returncode == 0
    assert "0 done, 2 skipped" in again.stdout
    assert sorted((workdir / "calls.txt").read_text().split()) == ["p0", "p1"]


def test_failed_point_is_reported_and_does_not_stop_others(tmp_path):
    sweep = _sweep_file(tmp_path, ["configs/a.py", "configs/fail.py", "configs/c.py"])
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    workdir = tmp_path / "runs"
    out = _run_cli(f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake}")
    assert out.returncode == 1
    assert sweeps.is_finished(workdir / "p0") and sweeps.is_finished(workdir / "p2")
    assert not sweeps.is_finished(workdir / "p1")
    log = workdir / "p1" / "log.txt"
    assert "boom: this point fails on purpose" in log.read_text()
    assert f"FAILED p1: exit code 1; log: {log}" in out.stdout
    assert "2 done, 0 skipped (already finished), 1 failed" in out.stdout


def test_bad_sweep_is_a_one_line_error(tmp_path):
    out = _run_cli(f"--sweep={tmp_path / 'nope.py'}", f"--workdir={tmp_path}")
    assert out.returncode != 0
    assert "error: sweep file" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "train.py").exists() or not (REPO / "configs/mnist.py").exists(),
                    reason="needs train.py and configs/mnist.py")
def test_real_train_py_two_point_sweep(tmp_path):
    """Two points of the real quick config, a few steps each, through the real train.py."""
    sweep = tmp_path / "quick_sweep.py"
    sweep.write_text(textwrap.dedent("""
        def get_sweep(arg=None):
            return [{"name": f"quick-s{s}", "config": "configs/mnist.py:quick",
                     "overrides": {"seed": s, "train.steps": 5}} for s in (0, 1)]
    """))
    workdir = tmp_path / "runs"
    out = _run_cli(f"--sweep={sweep}", f"--workdir={workdir}", "--parallel=2")
    logs = "".join(p.read_text()[-3000:] for p in sorted(workdir.glob("*/log.txt")))
    assert out.returncode == 0, out.stdout + out.stderr + logs
    for s in (0, 1):
        result = json.loads((workdir / f"quick-s{s}" / "results.json").read_text())
        assert result["steps"] == 5 and result["config"]["seed"] == s
        assert 0.0 <= result["test_error"] <= 1.0
