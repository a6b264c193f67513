"""A sweep never touches a live run: a point whose folder is locked by a live
`train.py` is refused in one line naming that process, whether its config changed
(`--rerun_changed` must not move it aside) or not (it must not be started a second time), and
the sweep goes on with the other points."""
import json
import os
import subprocess
import sys

import pytest

from stn.experiments import config_compare, sweeps

import helpers


@pytest.fixture
def live_run(tmp_path):
    """WORKDIR/p0 as a live run leaves it mid-training: a step-20 checkpoint and its lock held
    by a running process (train.py's own lock); the test writes its config.json."""
    run = tmp_path / "runs" / "p0"
    (run / "checkpoints" / "20").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from stn.experiments import training\nwith training.workdir_lock(sys.argv[2]):\n"
         "    print('locked', flush=True); time.sleep(120)", str(helpers.REPO), str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield run, holder.pid
    finally:
        holder.kill()
        holder.wait()


def _write_config(run, tmp_path):
    config = config_compare.resolve(f"{tmp_path / 'tiny_config.py'}:a",
                                    {"seed": 0, "train.steps": 5})
    (run / "config.json").write_text(json.dumps(config))


def _snapshot(run):
    return sorted((str(p.relative_to(run)), p.read_bytes() if p.is_file() else None)
                  for p in run.rglob("*"))


@pytest.mark.parametrize("changed", [True, False])
def test_a_live_point_is_refused_naming_its_process_and_the_sweep_goes_on(tmp_path, live_run,
                                                                         changed):
    run, pid = live_run
    extra = {"p0": {"train.learning_rate": 0.05}} if changed else {}
    sweep = helpers.sweep_file(tmp_path, ["a", "b"], **extra)  # p0 is the live run's point
    _write_config(run, tmp_path)
    before = _snapshot(run)
    workdir = tmp_path / "runs"
    args = [f"--sweep={sweep}", f"--workdir={workdir}", f"--train_script={helpers.fake(tmp_path)}"]
    out = helpers.run_cli(*args, *(["--rerun_changed"] if changed else []))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    refusals = [line for line in out.stderr.splitlines() if "p0" in line]
    assert refusals == [
        f"refused p0: its run in {run} is live (process {pid} holds its lock); it is not "
        f"moved, restarted or marked changed; rerun the sweep once that run has ended"]
    assert _snapshot(run) == before  # not moved, not restarted (no log line), nothing written
    assert not (tmp_path / "runs.superseded").exists()
    assert helpers.calls(workdir) == ["p1"]  # the other point ran
    assert sweeps.is_finished(workdir / "p1")
    assert "1 done, 0 skipped (already finished), 0 failed, 1 refused (live runs: p0)" in \
        out.stdout


def test_plan_and_move_aside_leave_a_live_run_alone(tmp_path, live_run):
    run, pid = live_run
    helpers.sweep_file(tmp_path, ["a"])
    _write_config(run, tmp_path)
    point = {"name": "p0", "config": f"{tmp_path / 'tiny_config.py'}:b", "overrides": {}}
    plan = sweeps.plan_sweep([point], tmp_path / "runs")
    assert plan.busy == {"p0": pid} and not plan.todo and not plan.changed
    # A run that starts after the plan was made: the move checks again, under the lock.
    assert sweeps.move_aside(["p0"], tmp_path / "runs") == {"p0": pid}
    assert run.is_dir() and not (tmp_path / "runs.superseded").exists()


def test_a_dead_runs_folder_is_moved_and_its_lock_goes_with_it(tmp_path):
    run = tmp_path / "runs" / "p0"
    run.mkdir(parents=True)
    (run / ".lock").write_text("12345\n")  # left by a run that was killed: no process holds it
    assert sweeps.move_aside(["p0"], tmp_path / "runs", log=lambda line: None) == {}
    [moved] = (tmp_path / "runs.superseded").iterdir()
    assert (moved / ".lock").exists() and not run.exists()
