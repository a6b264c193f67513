"""Runs that never lie: divergence, reruns with other configs, busy workdirs, corrupt checkpoints,
strict results.json, resumed metrics, and the loop's many-steps-in-flight path.

Each test trains the small ST-FCN of tests/test_training.py on drawn patterns for a few steps.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from stn.experiments import checkpointing, metrics_io, training

import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.write_pattern_set(tmp_path_factory.mktemp("patterns"))


def restorable_steps(workdir, config):
    """The checkpoint steps of `workdir` that restore and verify (finite, digest)."""
    _, _, state = helpers.fresh_model(config)
    tx, _ = training.make_optimizer(config, state, None)
    mngr = checkpointing.manager(str(workdir), read_only=True)
    good = []
    for step in mngr.all_steps():
        try:
            checkpointing.restore(mngr, step, state, tx.init(state))
            good.append(step)
        except checkpointing.CheckpointError:
            pass
    return sorted(good), sorted(mngr.all_steps())


@pytest.mark.parametrize("in_flight", [1, 50])
def test_a_diverging_update_is_never_checkpointed(data_dir, tmp_path, in_flight):
    """lr 1e300 makes the first update non-finite: nothing of it is saved, and the message says
    which checkpoint is the newest (here none). With 50 steps in flight (the accelerator path)
    the check still runs before every save."""
    config = helpers.small_config(data_dir, steps=6, learning_rate=1e300, checkpoint_every=1,
                             eval_every=100, max_steps_in_flight=in_flight)
    with pytest.raises(training.Diverged, match=r"diverged at step 1: .*not finite.*no "
                                                r"checkpoint had been saved yet") as e:
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert "\n" not in str(e.value)
    good, every = restorable_steps(tmp_path / "run", config)
    assert good == every == []


def test_divergence_after_good_steps_names_the_newest_finite_checkpoint(data_dir, tmp_path):
    """Two sane steps are saved; then the learning rate jumps (a decay factor of 1e12 at step 2)
    and the run stops naming step 2, which restores and is finite."""
    config = helpers.small_config(data_dir, steps=8, learning_rate=0.01, checkpoint_every=1,
                             eval_every=100, lr_decay_every=2, lr_decay_factor=1e150)
    with pytest.raises(training.Diverged, match=r"the newest checkpoint is step 2 "):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    good, every = restorable_steps(tmp_path / "run", config)
    assert good == every == [1, 2]


def test_a_finite_explosion_stops_at_the_loss_limit(data_dir, tmp_path):
    config = helpers.small_config(data_dir, steps=20, learning_rate=1e6, checkpoint_every=100,
                             eval_every=100, loss_limit=1e4)
    with pytest.raises(training.Diverged, match=r"the loss is [0-9.e+]+ \(train.loss_limit=10000\)"):
        training.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize("field,value,message", [
    ("learning_rate", float("inf"), "config.train.learning_rate=inf must be > 0 and finite"),
    ("keep_checkpoints", 0, "config.train.keep_checkpoints=0 must be a positive integer"),
    ("loss_limit", -1.0, "config.train.loss_limit=-1.0 must be > 0"),
])
def test_bad_train_values_are_refused(data_dir, tmp_path, field, value, message):
    config = helpers.small_config(data_dir, **{field: value})
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_rerun_with_another_config_is_refused_and_writes_nothing(data_dir, tmp_path):
    config = helpers.small_config(data_dir, steps=4, checkpoint_every=2, eval_every=100)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, str(workdir))
    before = {name: (workdir / name).read_bytes()
              for name in ("config.json", "results.json", "metrics.jsonl")}
    other = helpers.small_config(data_dir, steps=4, checkpoint_every=2, eval_every=100,
                            learning_rate=0.5)
    other.seed = 1
    with pytest.raises(ValueError, match=r"holds a run of another config \(seed 0 -> 1, "
                                         r"train.learning_rate 0.01 -> 0.5\)") as e:
        training.train_and_evaluate(other, str(workdir))
    assert "\n" not in str(e.value)
    for name, content in before.items():
        assert (workdir / name).read_bytes() == content, name
    # More steps of the same config resume; a changed logging interval is not a new run.
    longer = helpers.small_config(data_dir, steps=6, checkpoint_every=2, eval_every=100,
                             log_every=3)
    assert training.train_and_evaluate(longer, str(workdir))["resumed_from_step"] == 4


def test_a_busy_workdir_is_refused_and_a_killed_run_leaves_no_lock(data_dir, tmp_path):
    workdir = tmp_path / "run"
    config = helpers.small_config(data_dir, steps=2, checkpoint_every=100, eval_every=100)
    with training.workdir_lock(str(workdir)):
        with pytest.raises(ValueError, match="another run is using .*; wait for it"):
            training.train_and_evaluate(config, str(workdir))
    assert not (workdir / "config.json").exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "from stn.experiments import training\nwith training.workdir_lock(sys.argv[2]):\n"
         "    print('locked', flush=True); time.sleep(60)", helpers.ROOT, str(workdir)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match="another run is using"):
        training.train_and_evaluate(config, str(workdir))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert training.train_and_evaluate(config, str(workdir))["steps"] == 2


def _data_files(step_dir, item="params"):
    return sorted((p for p in (step_dir / item).rglob("*") if p.is_file()
                   and p.parent.name == "d"), key=lambda p: p.stat().st_size)


@pytest.mark.slow
def test_corrupt_checkpoints_are_skipped_for_the_newest_that_verifies(data_dir, tmp_path,
                                                                      capsys):
    config = helpers.small_config(data_dir, steps=6, checkpoint_every=2, eval_every=100)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, str(workdir))
    checkpoints = workdir / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["2", "4", "6"]
    biggest = _data_files(checkpoints / "6")[-1]  # truncate the newest one's parameters
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    data = bytearray(_data_files(checkpoints / "4", "opt_state")[-1].read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):  # flip bytes inside step 4's data
        data[i] ^= 0xFF
    _data_files(checkpoints / "4", "opt_state")[-1].write_bytes(bytes(data))
    capsys.readouterr()
    longer = helpers.small_config(data_dir, steps=8, checkpoint_every=2, eval_every=100)
    results = training.train_and_evaluate(longer, str(workdir))
    out = capsys.readouterr().out
    assert results["resumed_from_step"] == 2
    skipped = [line for line in out.splitlines() if "moved aside" in line]
    assert len(skipped) == 2 and skipped[0].startswith("checkpoint 6 ") and \
        skipped[1].startswith("checkpoint 4 ")
    # The resumed run equals one that went from step 2 straight to 8.
    straight = helpers.small_config(data_dir, steps=8, checkpoint_every=2, eval_every=100)
    training.train_and_evaluate(straight, str(tmp_path / "straight"))
    for a, b in zip(helpers.final_params(workdir, longer), helpers.final_params(tmp_path / "straight",
                                                                      straight)):
        np.testing.assert_array_equal(a, b)


def test_another_models_checkpoint_is_a_one_line_error_naming_paths(data_dir, tmp_path):
    config = helpers.small_config(data_dir, steps=2, checkpoint_every=2, eval_every=100)
    training.train_and_evaluate(config, str(tmp_path / "run"))
    other = helpers.small_config(data_dir)
    other.model.name = "fcn"
    _, _, state = helpers.fresh_model(other)
    mngr = checkpointing.manager(str(tmp_path / "run"), read_only=True)
    with pytest.raises(checkpointing.CheckpointError,
                       match=r"saved from another model: the config's model has classifier.bias, ") as e:
        checkpointing.restore(mngr, 2, state)
    assert "\n" not in str(e.value)


def test_results_json_is_strict_json_with_null_for_non_finite(tmp_path):
    config = helpers.small_config(str(tmp_path))
    record = training.results_record(
        config, steps=3, start_step=0, wall=1.0, images_per_second=2.0, evaluation_time=0.5,
        num_params=5,
        evaluations={"test": {"error": 0.5, "loss": float("nan"), "num_examples": 2}})
    assert record["test_loss"] is None and record["non_finite"] == ["test_loss"]
    path = tmp_path / "results.json"
    metrics_io.write_json(str(path), record)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    with pytest.raises(ValueError):
        metrics_io.write_json(str(path), {"x": float("nan")})


@pytest.mark.slow
def test_metrics_after_a_resume_from_an_older_checkpoint_hold_each_step_once(data_dir,
                                                                             tmp_path):
    config = helpers.small_config(data_dir, steps=6, checkpoint_every=2, eval_every=100,
                             log_every=1, keep_checkpoints=5)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, str(workdir))
    for step in ("4", "6"):  # back to the checkpoint of step 2
        checkpointing_dir = workdir / "checkpoints" / step
        for path in sorted(checkpointing_dir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        checkpointing_dir.rmdir()
    (workdir / "results.json").unlink()
    training.train_and_evaluate(config, str(workdir))
    steps = [r["step"] for r in metrics_io.read_jsonl(str(workdir / "metrics.jsonl"))
             if "train_loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_learning_rate_staircase_crosses_its_decay_step(data_dir, tmp_path):
    """Logged rates follow the staircase, and the update of step 3 (after the decay at 2) is a
    tenth of plain SGD's at the base rate."""
    config = helpers.small_config(data_dir, steps=4, checkpoint_every=100, eval_every=100,
                             log_every=1, lr_decay_every=2, lr_decay_factor=0.1,
                             learning_rate=0.05, momentum=0.0)
    training.train_and_evaluate(config, str(tmp_path / "run"))
    rates = [r["learning_rate"] for r in metrics_io.read_jsonl(
        str(tmp_path / "run" / "metrics.jsonl")) if "learning_rate" in r]
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.005, 0.005], rtol=1e-6)
    _, _, state = helpers.fresh_model(config)
    tx, _ = training.make_optimizer(config, state, None)
    grads = jax.tree.map(np.ones_like, state)
    opt_state = tx.init(state)
    moves = []
    for _ in range(3):
        update, opt_state = tx.update(grads, opt_state, state)
        moves.append(float(np.abs(jax.tree.leaves(update)[0]).max()))
    np.testing.assert_allclose(moves, [0.05, 0.05, 0.005], rtol=1e-6)


@pytest.mark.slow
def test_a_killed_run_resumes_bit_identically(data_dir, tmp_path):
    """`kill -9` in the middle of a run: the rerun resumes from the last checkpoint and ends
    with the parameters of an uninterrupted run."""
    config = helpers.small_config(data_dir, steps=30, checkpoint_every=5, eval_every=100)
    training.train_and_evaluate(config, str(tmp_path / "straight"))
    workdir = tmp_path / "killed"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
              "import helpers; from stn.experiments import training\n"
              "def slow(step, metrics):\n    import time; time.sleep(0.3)\n"
              "config = helpers.small_config(sys.argv[3], steps=30, checkpoint_every=5, "
              "eval_every=100)\n"
              "training.train_and_evaluate(config, sys.argv[4], step_callback=slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, helpers.ROOT, os.path.dirname(helpers.__file__),
                             data_dir, str(workdir)])
    deadline = time.time() + 120
    while time.time() < deadline and not (workdir / "checkpoints" / "10").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (workdir / "checkpoints" / "10").exists() and not (workdir / "results.json").exists()
    resumed = training.train_and_evaluate(config, str(workdir))
    assert resumed["resumed_from_step"] >= 10
    for a, b in zip(helpers.final_params(tmp_path / "straight", config),
                    helpers.final_params(workdir, config)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_an_unwritable_file_is_one_line_from_train_py(data_dir, tmp_path):
    """A file that cannot be written (here `config.json` is a folder, as a full or read-only
    disk would also refuse it) ends train.py with one line naming it, not a traceback."""
    workdir = tmp_path / "run"
    (workdir / "config.json").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "train.py", "--config=configs/mnist.py:none,st_fcn,affine",
         f"--config.data.source=idx:{data_dir}", "--config.data.validation_size=100",
         "--config.train.steps=2", f"--workdir={workdir}"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300,
        env=dict(env, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: ") and last.endswith(str(workdir / "config.json"))
    assert "Traceback" not in proc.stderr


def test_an_unknown_override_field_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "--config=configs/mnist.py:quick",
         "--config.train.nope=1", f"--workdir={tmp_path / 'run'}"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "train.py: --config.train.nope=1: configs/mnist.py:quick has no field train.nope")
