"""Sweep expansion, the command lines, resuming, and the local launcher (submitit's
LocalExecutor) end to end with a fake trainer."""
import json
import os
import shlex
import subprocess
import sys
import signal
import textwrap
import time
from pathlib import Path

import pytest

from stn.experiments import config_compare, sweeps
from stn.experiments import workdir as workdir_lib
from stn.experiments.config_args import parse as _parse

from helpers import REPO, calls, run_cli, sweep_file
from helpers import fake as fake_trainer


def parse_arg(arg, **defaults):
    """The shared argument parser, as sweep files call it."""
    return _parse(arg, where="sweep", **defaults)


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


def test_table1_cpu_tune_and_long_share_one_recipe():
    """The CPU table, its tuning sweep and the long runs take their recipe from table1_cpu.py;
    final cells keep no validation split, tuning points hold 1,000 digits out."""
    table = sweeps.load_sweep(str(REPO / "configs/sweeps/table1_cpu.py"))
    assert len(table) == 32 and {p["overrides"]["data.validation_size"] for p in table} == {0}
    st_cnn = next(p for p in table if p["name"] == "rts-st_cnn-affine-s0")["overrides"]
    assert (st_cnn["train.steps"], st_cnn["train.batch_size"], st_cnn["train.momentum"]) == \
        (2000, 64, 0.9)
    assert st_cnn["train.lr_decay_every"] == 1500 and st_cnn["model.loc_lr_multiplier"] == 0.1
    seeds = sweeps.load_sweep(str(REPO / "configs/sweeps/table1_cpu.py") +
                              ":columns=rts,seeds=2,first_seed=1")
    assert {p["name"] for p in seeds} >= {"rts-cnn-s1", "rts-cnn-s2"} and len(seeds) == 16
    with pytest.raises(ValueError, match="needs a family"):
        sweeps.load_sweep(str(REPO / "configs/sweeps/table1_cpu_tune.py"))
    tune = sweeps.load_sweep(str(REPO / "configs/sweeps/table1_cpu_tune.py") + ":family=st_fcn")
    assert len(tune) == 3 * 2 * 2
    assert {p["overrides"]["data.validation_size"] for p in tune} == {1000}
    assert {p["overrides"]["model.st_pool"] for p in tune if "model.st_pool" in p["overrides"]} \
        == {2}
    long = sweeps.load_sweep(str(REPO / "configs/sweeps/table1_long.py") + ":steps=400")
    assert [p["overrides"]["train.steps"] for p in long] == [400, 400]
    assert all(p["overrides"]["eval.test_during_training"] for p in long)


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



def test_quick_tune_expansion_scales_the_schedule_with_the_steps():
    """Each point's lr decay, evaluation and checkpoints follow its own number of steps."""
    points = sweeps.load_sweep(str(REPO / "configs/sweeps/quick_tune.py") +
                               ":lrs=0.03,0.1,steps=400,800,seeds=2")
    assert len(points) == 2 * 3 * 2 * 2
    names = [p["name"] for p in points]
    assert len(set(names)) == len(names)
    p = {q["name"]: q for q in points}["lr0.1-loc0.3-steps800-s1"]
    assert p["config"] == "configs/mnist.py:quick"
    assert p["overrides"] == {"seed": 1, "train.learning_rate": 0.1,
                              "model.loc_lr_multiplier": 0.3,
                              "train.steps": 800, "train.lr_decay_every": 600,
                              "train.eval_every": 400, "train.checkpoint_every": 400}
    # The preset is the point its tuning sweep chose: that point changes nothing in it.
    chosen = sweeps.load_sweep(str(REPO / "configs/sweeps/quick_tune.py") +
                               ":lrs=0.01,loc_multipliers=0.3,steps=700")
    assert [p["name"] for p in chosen] == ["lr0.01-loc0.3-steps700-s0"]
    assert sweeps.preset_changes(chosen, sweeps.resolve_points(chosen)) == [
        "configs/mnist.py:quick (1 point(s)): no field changed"]
    smaller = sweeps.load_sweep(str(REPO / "configs/sweeps/quick_tune.py") +
                                ":lrs=0.01,loc_multipliers=1,output_sizes=0,28")
    assert [(p["name"], p["overrides"].get("model.st_output_size")) for p in smaller] == [
        ("lr0.01-loc1-steps400-s0", None), ("lr0.01-loc1-steps400-out28-s0", 28)]

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


def test_train_py_and_configs_are_found_from_another_directory(tmp_path, monkeypatch):
    """`python -m stn.experiments.sweeps` from elsewhere runs the package's train.py and config files."""
    monkeypatch.chdir(tmp_path)
    p = sweeps.point("q", "configs/mnist.py:quick", {"seed": 0})
    argv = sweeps.point_command(p, tmp_path / "runs", python="py")
    assert argv[1:3] == [str(REPO / "train.py"), f"--config={REPO / 'configs/mnist.py'}:quick"]
    assert sweeps.locate_config("/abs/c.py:x") == "/abs/c.py:x"  # kept: train.py reports it
    assert sweeps.locate_config("nowhere/c.py:x") == "nowhere/c.py:x"


def test_sweep_runs_train_py_from_another_directory(tmp_path):
    """The real train.py starts (and refuses this point's data source in one line)."""
    sweep = tmp_path / "s.py"
    sweep.write_text(textwrap.dedent("""
        def get_sweep(arg=None):
            return [{"name": "q", "config": "configs/mnist.py:quick",
                     "overrides": {"data.source": "idx:/nonexistent/mnist"}}]
    """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_cli(f"--sweep={sweep}", "--workdir=runs", cwd=elsewhere)
    log = (elsewhere / "runs" / "q" / "log.txt").read_text()
    assert out.returncode == 1 and "FAILED q: exit code 1" in out.stdout, out.stdout + out.stderr
    assert "can't open file" not in log and "train.py: " in log and "/nonexistent/mnist" in log


def test_is_finished(tmp_path):
    assert not sweeps.is_finished(tmp_path)
    (tmp_path / "results.json").write_text('{"test_error": 0.')  # a crash mid-write
    assert not sweeps.is_finished(tmp_path)
    (tmp_path / "results.json").write_text('{"test_error": 0.1}')
    assert sweeps.is_finished(tmp_path)


def _finish(workdir: Path, name: str, config: dict) -> None:
    """A finished run of `config` in WORKDIR/NAME, as train.py leaves it."""
    (workdir / name).mkdir(parents=True)
    (workdir / name / "results.json").write_text(json.dumps({"config": config,
                                                             "test_error": 0.1}))


def test_dry_run_and_emit_list_only_unfinished_points(tmp_path):
    sweep = sweep_file(tmp_path, ["x,y", "b"])
    workdir = tmp_path / "runs"
    _finish(workdir, "p0", config_compare.resolve(f"{tmp_path / 'tiny_config.py'}:x,y",
                                                  {"seed": 0, "train.steps": 5}))
    emit = tmp_path / "cmds.txt"
    out = run_cli(f"--sweep={sweep}", f"--workdir={workdir}", "--dry_run", f"--emit={emit}",
                   "--python=python3")
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if line.startswith("python3 ")]
    expected = ["python3", str(REPO / "train.py"), f"--config={tmp_path / 'tiny_config.py'}:b",
                f"--workdir={workdir / 'p1'}", "--config.seed=1", "--config.train.steps=5",
                "--cpu_devices=0"]
    assert [shlex.split(c) for c in commands] == [expected]
    assert "1 of 2 point(s) to run (1 finished)" in out.stdout
    # What the sweep changes in each preset is printed before anything runs.
    assert f"sweep changes {tmp_path / 'tiny_config.py'}:b (1 point(s)): seed 0 -> 1" in out.stdout
    assert [shlex.split(line) for line in emit.read_text().splitlines()] == [expected]
    assert not (workdir / "p1").exists()  # nothing ran


def test_runner_end_to_end_and_resume(tmp_path):
    sweep = sweep_file(tmp_path, ["a", "b"])
    fake = fake_trainer(tmp_path)
    workdir = tmp_path / "runs"
    out = run_cli(f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake}",
                   "--parallel=2")
    assert out.returncode == 0, out.stdout + out.stderr
    for i in range(2):
        result = json.loads((workdir / f"p{i}" / "results.json").read_text())
        assert result["config"]["seed"] == i and result["config"]["train"]["steps"] == 5
        assert f"training p{i}" in (workdir / f"p{i}" / "log.txt").read_text()
    assert sorted(calls(workdir)) == ["p0", "p1"]
    assert "2 done, 0 skipped" in out.stdout
    assert list((workdir / sweeps.SUBMITIT_DIR).glob("*/*_result.pkl"))  # run as submitit jobs
    manifest = json.loads((workdir / "sweep.json").read_text())
    assert [p["name"] for p in manifest["points"]] == ["p0", "p1"]
    # Resume: both finished with the points' configs, so nothing runs again.
    again = run_cli(f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake}")
    assert again.returncode == 0
    assert "0 done, 2 skipped" in again.stdout
    assert sorted(calls(workdir)) == ["p0", "p1"]


@pytest.mark.slow
def test_failed_point_is_reported_and_does_not_stop_others(tmp_path):
    sweep = sweep_file(tmp_path, ["a", "fail", "c"])
    workdir = tmp_path / "runs"
    out = run_cli(f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake_trainer(tmp_path)}")
    assert out.returncode == 1
    assert sweeps.is_finished(workdir / "p0") and sweeps.is_finished(workdir / "p2")
    assert not sweeps.is_finished(workdir / "p1")
    log = workdir / "p1" / "log.txt"
    assert "boom: this point fails on purpose" in log.read_text()
    assert f"FAILED p1: exit code 1; log: {log}" in out.stdout
    assert "2 done, 0 skipped (already finished), 1 failed" in out.stdout


def test_bad_sweep_is_a_one_line_error(tmp_path):
    out = run_cli(f"--sweep={tmp_path / 'nope.py'}", f"--workdir={tmp_path}")
    assert out.returncode != 0
    assert "error: sweep file" in out.stderr and "Traceback" not in out.stderr


def test_a_sweep_file_that_raises_or_does_not_parse_is_one_line_with_its_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_sweep(arg=None):\n    return [{'name': 'a',\n")
    out = run_cli(f"--sweep={broken}", f"--workdir={tmp_path / 'runs'}")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"error: sweep file {broken}, line 2: SyntaxError: ")
    raising = tmp_path / "raising.py"
    raising.write_text("def get_sweep(arg=None):\n    steps = {}\n    return steps['n']\n")
    out = run_cli(f"--sweep={raising}:x", f"--workdir={tmp_path / 'runs'}")
    assert out.stderr.strip().splitlines() == [
        f"error: sweep file {raising}, line 3: KeyError: 'n'"], out.stderr


def test_every_point_is_resolved_before_any_runs_and_a_bad_one_is_named(tmp_path):
    """A misspelt override in one point stops the sweep before any point starts, in one line
    naming the point, the field and the nearest valid one."""
    sweep = sweep_file(tmp_path, ["a", "b"], p1={"train.learning_rat": 0.2})
    workdir = tmp_path / "runs"
    out = run_cli(f"--sweep={sweep}", f"--workdir={workdir}",
                  f"--train_script={fake_trainer(tmp_path)}")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: sweep point 'p1': --config.train.learning_rat=0.2: {tmp_path / 'tiny_config.py'}"
        f":b has no field train.learning_rat; did you mean 'train.learning_rate'?"]
    assert calls(workdir) == [] and not (workdir / "p0").exists()


def test_lr_seed_overrides_only_its_axes_and_what_it_changes_in_a_preset_is_shown():
    """On `quick` (loc multiplier 0.3, tuned) the sweep keeps the preset's multiplier unless it
    is an axis; every field a sweep changes in its preset is listed when it starts."""
    spec = str(REPO / "configs/sweeps/lr_seed.py") + ":config=configs/mnist.py:quick,lrs=0.03,seeds=2"
    points = sweeps.load_sweep(spec)
    configs = sweeps.resolve_points(points)
    assert [p["name"] for p in points] == ["lr0.03-s0", "lr0.03-s1"]
    assert all("model.loc_lr_multiplier" not in p["overrides"] for p in points)
    assert {c["model"]["loc_lr_multiplier"] for c in configs.values()} == {0.3}
    assert sweeps.preset_changes(points, configs) == [
        "configs/mnist.py:quick (2 point(s)): seed 0 -> 0, 1; train.learning_rate 0.01 -> 0.03"]
    swept = sweeps.load_sweep(spec + ",loc_multipliers=1")
    assert sweeps.preset_changes(swept, sweeps.resolve_points(swept)) == [
        "configs/mnist.py:quick (2 point(s)): model.loc_lr_multiplier 0.3 -> 1.0; seed 0 -> 0, 1; "
        "train.learning_rate 0.01 -> 0.03"]


# --- a changed sweep file: skip only the same config -------------------------------------------

@pytest.mark.slow
def test_changed_point_is_refused_naming_fields_and_rerun_into_a_fresh_folder(tmp_path):
    fake = fake_trainer(tmp_path)
    workdir = tmp_path / "runs"
    first = sweep_file(tmp_path, ["a", "b"])
    assert run_cli(f"--sweep={first}", f"--workdir={workdir}",
                    f"--train_script={fake}").returncode == 0
    old_result = (workdir / "p0" / "results.json").read_text()
    # The recipe of p0 changes (learning rate), p1's only in what it logs: p0 must not be skipped.
    changed = sweep_file(tmp_path, ["a", "b"], p0={"train.learning_rate": 0.2},
                          p1={"train.log_every": 7})
    out = run_cli(f"--sweep={changed}", f"--workdir={workdir}", f"--train_script={fake}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    message = out.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "1 point(s) differ" in message and "p0 (train.learning_rate 0.1 -> 0.2)" in message
    assert "p1" not in message.split("differ")[1] and "--rerun_changed" in message
    assert sorted(calls(workdir)) == ["p0", "p1"]  # nothing ran
    assert (workdir / "p0" / "results.json").read_text() == old_result
    # Asked to, the runner moves the old run aside (out of reach of stn.experiments.results.tables) and reruns p0.
    out = run_cli(f"--sweep={changed}", f"--workdir={workdir}", f"--train_script={fake}",
                   "--rerun_changed")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 done, 1 skipped" in out.stdout
    assert sorted(calls(workdir)) == ["p0", "p0", "p1"]
    new = json.loads((workdir / "p0" / "results.json").read_text())
    assert new["config"]["train"]["learning_rate"] == 0.2 and new["resumed_from_step"] == 0
    [moved] = list((tmp_path / "runs.superseded").iterdir())
    assert moved.name.startswith("p0-") and (moved / "results.json").read_text() == old_result


def test_more_steps_resume_a_finished_point_fewer_are_refused(tmp_path):
    fake = fake_trainer(tmp_path)
    workdir = tmp_path / "runs"
    assert run_cli(f"--sweep={sweep_file(tmp_path, ['a'])}", f"--workdir={workdir}",
                    f"--train_script={fake}").returncode == 0
    out = run_cli(f"--sweep={sweep_file(tmp_path, ['a'], p0={'train.steps': 9})}",
                   f"--workdir={workdir}", f"--train_script={fake}")
    assert out.returncode == 0 and "1 done, 0 skipped" in out.stdout, out.stdout + out.stderr
    out = run_cli(f"--sweep={sweep_file(tmp_path, ['a'], p0={'train.steps': 3})}",
                   f"--workdir={workdir}", f"--train_script={fake}", "--dry_run")
    assert out.returncode == 1 and "p0 (train.steps 9 -> 3)" in out.stderr


def test_unfinished_run_of_another_config_is_refused_and_a_record_without_config(tmp_path):
    workdir = tmp_path / "runs"
    (workdir / "p0" / "checkpoints" / "20").mkdir(parents=True)  # a stopped run to resume
    (workdir / "p0" / "config.json").write_text(json.dumps({"seed": 5}))
    (workdir / "p1").mkdir()
    (workdir / "p1" / "results.json").write_text('{"test_error": 0.1}')
    out = run_cli(f"--sweep={sweep_file(tmp_path, ['a', 'b'])}", f"--workdir={workdir}",
                   "--dry_run")
    assert out.returncode == 1
    assert "p0 (fail (absent) -> False, seed 5 -> 0" in out.stderr
    assert "p1 (its results.json records no config to compare)" in out.stderr


# --- stopping a local sweep -----------------------------------------------------------------------

def _start_runner(*args: str, new_session: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "stn.experiments.sweeps", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)


def _wait_for(paths: list[Path], runner: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline, f"{paths} never appeared"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_stops_the_running_points_starts_nothing_and_a_rerun_resumes(tmp_path):
    """Ctrl-C (SIGINT to the sweep's whole process group, as a terminal sends it): the running
    points save their checkpoint and end, the last point never starts, the runner waits for
    them and ends with one line; the same command then resumes and finishes."""
    fake = fake_trainer(tmp_path)
    workdir = tmp_path / "runs"
    wait = {"wait_for_signal": True}
    sweep = sweep_file(tmp_path, ["a", "b", "c"], p0=wait, p1=wait)
    args = (f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={fake}", "--parallel=2")
    runner = _start_runner(*args, new_session=True)
    started = [workdir / "p0" / "started", workdir / "p1" / "started"]
    _wait_for(started, runner)
    children = [int(p.read_text()) for p in started]
    try:
        os.killpg(runner.pid, signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=120)
        still_holding = [i for i in range(2) if workdir_lib.live_holder(str(workdir / f"p{i}"))]
    finally:  # a runner that lets its points run on must not leave them behind the test
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not still_holding  # the runner waited until each point's run had ended
    assert runner.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("sweep stopped by SIGINT: 2 running")
    assert "1 point(s) not started; rerun the same command to resume" in stderr
    assert "0 done, 0 skipped (already finished), 0 failed, 2 stopped, 1 not started" in stdout
    for i in range(2):
        assert (workdir / f"p{i}" / "checkpoints" / "1").is_dir()  # saved on the signal
    assert sorted(calls(workdir)) == ["p0", "p1"]  # p2 never started
    # The same command resumes: p0 and p1 from their checkpoints, p2 from scratch.
    again = subprocess.run([sys.executable, "-m", "stn.experiments.sweeps", *args], cwd=REPO,
                           env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 done, 0 skipped" in again.stdout
    for i, step in enumerate([1, 1, 0]):
        result = json.loads((workdir / f"p{i}" / "results.json").read_text())
        assert result["resumed_from_step"] == step


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "train.py").exists() or not (REPO / "configs/mnist.py").exists(),
                    reason="needs train.py and configs/mnist.py")
def test_real_train_py_two_point_sweep(tmp_path):
    """Two points of the real quick config, a few steps each, through the real train.py,
    started from another directory; a second invocation skips both."""
    sweep = tmp_path / "quick_sweep.py"
    sweep.write_text(textwrap.dedent("""
        def get_sweep(arg=None):
            return [{"name": f"quick-s{s}", "config": "configs/mnist.py:quick",
                     "overrides": {"seed": s, "train.steps": 5}} for s in (0, 1)]
    """))
    workdir = tmp_path / "runs"
    out = run_cli(f"--sweep={sweep}", f"--workdir={workdir}", "--parallel=2", cwd=tmp_path)
    logs = "".join(p.read_text()[-3000:] for p in sorted(workdir.glob("*/log.txt")))
    assert out.returncode == 0, out.stdout + out.stderr + logs
    for s in (0, 1):
        result = json.loads((workdir / f"quick-s{s}" / "results.json").read_text())
        assert result["steps"] == 5 and result["config"]["seed"] == s
        assert result["num_test_examples"] == 2000  # the embedded sample's test split
    again = run_cli(f"--sweep={sweep}", f"--workdir={workdir}", cwd=tmp_path)
    assert again.returncode == 0 and "0 done, 2 skipped" in again.stdout, again.stdout


def test_points_share_the_cores_only_when_several_run_at_once():
    assert sweeps.point_cpu_devices(None, "local", 1) == 0  # train.py: one device per core
    assert sweeps.point_cpu_devices(None, "local", 3) == 1
    assert sweeps.point_cpu_devices(None, "slurm", 3) == 0  # each task's own cores
    assert sweeps.point_cpu_devices(2, "local", 3) == 2


def test_cpu_devices_flag_reaches_every_train_command(tmp_path):
    p = sweeps.point("a", "configs/mnist.py:quick", {"seed": 1})
    argv = sweeps.point_command(p, tmp_path, python="py", train_flags=["--cpu_devices=2"])
    assert argv[-1] == "--cpu_devices=2" and "--config.seed=1" in argv
