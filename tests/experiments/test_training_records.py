"""Runs that never lie, second pass: the training loop's records and refusals.

Non-finite config numbers are refused before any work; an evaluating-only rerun holds
each evaluation once (13); a refused run leaves neither config.json nor the lock (14); SIGTERM
during the final evaluation exits 130 with one line (15); a run killed between a save and its
evaluation redoes the evaluation on resume (16); an unwritable results.json is named as itself.
Each trains the small ST-FCN of tests/test_training.py on drawn patterns for a few steps.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from stn import native
from stn.experiments import config_compare, evaluation, metrics_io, models, training

import helpers


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.write_pattern_set(tmp_path_factory.mktemp("patterns"))


def _identities(workdir) -> list[tuple]:
    """(step, sorted names) of every metrics.jsonl record."""
    return [(r["step"], tuple(sorted(k for k in r if k != "step")))
            for r in metrics_io.read_jsonl(str(workdir / "metrics.jsonl"))]


def _child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return dict(env, JAX_PLATFORMS="cpu", PYTHONPATH=helpers.ROOT)


# --- non-finite numbers ---------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("train.lr_decay_factor", float("nan")), ("train.loss_limit", float("-inf")),
])
def test_a_non_finite_number_is_refused_before_any_work(data_dir, tmp_path, field, value):
    config = helpers.small_config(data_dir)
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ValueError, match=rf"config.{field}={value}.* finite") as e:
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_non_finite_fields_finds_nested_and_list_numbers():
    config = {"a": 1.0, "b": {"c": float("nan"), "d": [0.5, float("inf")], "e": "nan"},
              "f": float("-inf"), "g": True}
    assert config_compare.non_finite_fields(config) == ["b.c", "b.d", "f"]
    with pytest.raises(ValueError, match=r"config.b.c=nan, config.b.d=\[0.5, inf\], "
                                         r"config.f=-inf: every number"):
        config_compare.check_finite(config)


def test_train_py_refuses_a_nan_margin_of_colocalisation_at_once(tmp_path):
    """The issue's case: before, the embedding trained for a minute and the run 'diverged'."""
    proc = subprocess.run(
        [sys.executable, "train.py", "--config=configs/colocalisation.py:tc,class=3,quick",
         "--config.model.margin=nan", f"--workdir={tmp_path / 'run'}"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300, env=_child_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "train.py: config.model.margin=nan: every number of a config must be finite; set it to "
        "a finite value"]
    assert not (tmp_path / "run").exists()


# --- an evaluating-only rerun ---------------------------------------------------------

def test_an_evaluating_only_rerun_holds_each_evaluation_once(data_dir, tmp_path, capsys):
    config = helpers.small_config(data_dir, steps=4, checkpoint_every=2, eval_every=2, log_every=2)
    workdir = tmp_path / "run"
    training.train_and_evaluate(config, str(workdir))
    first = _identities(workdir)
    assert len(first) == len(set(first))
    rerun = helpers.small_config(data_dir, steps=4, checkpoint_every=2, eval_every=2, log_every=1)
    training.train_and_evaluate(rerun, str(workdir))
    assert "evaluating only" in capsys.readouterr().out
    assert _identities(workdir) == first  # the final evaluation replaced, in its place


def test_an_evaluating_only_rerun_keeps_the_trainings_figures(data_dir, tmp_path):
    """The rerun trains nothing: results.json keeps the training's wall time and images/s,
    and the evaluation's own time is beside them under its own name."""
    config = helpers.small_config(data_dir, steps=2, eval_every=100, num_images=0)
    workdir = tmp_path / "run"
    first = training.train_and_evaluate(config, str(workdir))
    again = training.train_and_evaluate(config, str(workdir))
    written = json.loads((workdir / "results.json").read_text())
    for key in ("wall_time_s", "images_per_second"):
        assert again[key] == written[key] == first[key] > 0, key
    assert 0 < again["evaluation_wall_time_s"] == written["evaluation_wall_time_s"]
    assert again["evaluation_wall_time_s"] != first["evaluation_wall_time_s"]


def test_what_the_run_is_printed_before_anything_compiles(data_dir, tmp_path, capsys,
                                                          monkeypatch):
    """The config and task, the workdir, the devices, the sampler path and the parameter
    count, all printed before the first step is even built (its compilation takes minutes)."""
    class Compiling(Exception):
        pass

    def make_train_step(*args, **kwargs):
        raise Compiling

    monkeypatch.setattr(training, "make_train_step", make_train_step)
    config = helpers.small_config(data_dir)
    capsys.readouterr()
    with pytest.raises(Compiling):
        training.train_and_evaluate(config, str(tmp_path / "run"))
    sampler = "native (stn.native)" if native.available() else "jnp ("
    num_params = models.num_params(helpers.fresh_model(config)[0])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run {config.name} (task classification) in {tmp_path / 'run'}"
    kinds = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    assert lines[1].startswith(f"devices: {jax.device_count()} {kinds} in 1 process(es); "
                               f"sampler: {sampler}")
    assert lines[2:] == [f"model st_fcn: {num_params:,} parameters; compiling the first step"]


def test_a_replaced_record_keeps_the_newest_values(tmp_path):
    writer = metrics_io.MetricWriter(str(tmp_path), enabled=True)
    writer.write_scalars(1, {"train_loss": 1.0})
    writer.write_scalars(2, {"test_error": 0.5})
    writer.close()
    again = metrics_io.MetricWriter(str(tmp_path), enabled=True)
    again.truncate_after(2)
    again.write_scalars(2, {"test_error": 0.25})
    again.write_scalars(2, {"test_error": 0.125})  # a new record once the kept one is replaced
    again.close()
    records = metrics_io.read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert records == [{"step": 1, "train_loss": 1.0}, {"step": 2, "test_error": 0.25},
                       {"step": 2, "test_error": 0.125}]


# --- checks before writes -------------------------------------------------------------

def test_a_validation_split_larger_than_the_data_leaves_nothing_behind(data_dir, tmp_path):
    config = helpers.small_config(data_dir)
    config.data.validation_size = 100_000  # the pattern set has 512 training digits
    with pytest.raises(ValueError, match="validation_size"):
        training.train_and_evaluate(config, str(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()
    # A sweep point's folder exists already (its log.txt): only the log stays.
    point = tmp_path / "point"
    point.mkdir()
    (point / "log.txt").write_text("# the command\n")
    with pytest.raises(ValueError, match="validation_size"):
        training.train_and_evaluate(config, str(point))
    assert sorted(os.listdir(point)) == ["log.txt"]


# --- items 15 and 16: signals and kills around evaluations -------------------------------------

# train.py's own main and exit handling, with `evaluate_run` wrapped to send this process
# SIGTERM at the start of the final evaluation, then go on evaluating.
SIGTERM_IN_FINAL_EVALUATION = textwrap.dedent("""
    import os, signal, sys, time
    sys.argv[0] = "train.py"
    import train
    from stn.experiments import host, training
    evaluate = training.evaluate_run

    def evaluate_run(*args, final, **kwargs):
        if final:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
        return evaluate(*args, final=final, **kwargs)

    training.evaluate_run = evaluate_run
    host.run_app(train.main, "train.py")
""")


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_exits_130_with_one_line(data_dir, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_FINAL_EVALUATION,
         "--config=configs/mnist.py:none,st_fcn,affine", f"--config.data.source=idx:{data_dir}",
         "--config.data.validation_size=100", "--config.train.steps=2",
         "--config.train.batch_size=32", f"--workdir={workdir}"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300, env=_child_env())
    assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"train.py: stopped by signal 15 during the final evaluation; the checkpoint of step 2 "
        f"is saved in {workdir / 'checkpoints'}; rerun the same command to evaluate it")
    assert not (workdir / "results.json").exists()
    # The rerun evaluates only; the training's figures died with its process: null, not 0.
    results = training.train_and_evaluate(evaluation.config_of_run(str(workdir)), str(workdir))
    assert results["wall_time_s"] is None and results["images_per_second"] is None
    assert results["evaluation_wall_time_s"] > 0


class _Killed(BaseException):
    """Stands for `kill -9`: nothing after it runs (metrics lines are written as they come)."""


@pytest.mark.slow
def test_a_run_killed_between_a_save_and_its_evaluation_redoes_the_evaluation(
        data_dir, tmp_path, monkeypatch):
    config = helpers.small_config(data_dir, steps=4, checkpoint_every=2, eval_every=2, log_every=2)
    straight = tmp_path / "straight"
    training.train_and_evaluate(config, str(straight))
    evaluate = training.evaluate_run

    def killed_at_step_2(*args, final, **kwargs):
        if args[-1] == 2:
            raise _Killed
        return evaluate(*args, final=final, **kwargs)

    workdir = tmp_path / "killed"
    monkeypatch.setattr(training, "evaluate_run", killed_at_step_2)
    with pytest.raises(_Killed):
        training.train_and_evaluate(config, str(workdir))
    monkeypatch.setattr(training, "evaluate_run", evaluate)
    assert (workdir / "checkpoints" / "2").is_dir()
    assert (2, ("validation_error",)) not in [(step, names[-1:]) for step, names in
                                              _identities(workdir)]  # the kill came first
    assert training.train_and_evaluate(config, str(workdir))["resumed_from_step"] == 2
    resumed = metrics_io.read_jsonl(str(workdir / "metrics.jsonl"))
    assert _identities(workdir) == _identities(straight)
    expected = metrics_io.read_jsonl(str(straight / "metrics.jsonl"))
    for a, b in zip(resumed, expected):  # the same numbers: the evaluation of the same state
        assert a.get("validation_error") == b.get("validation_error")


# --- results.json that cannot be written -------------------------------------------------------

def test_an_unwritable_results_json_is_named_as_itself(data_dir, tmp_path):
    workdir = tmp_path / "run"
    (workdir / "results.json").mkdir(parents=True)
    config = helpers.small_config(data_dir, steps=2, eval_every=100)
    with pytest.raises(OSError) as e:
        training.train_and_evaluate(config, str(workdir))
    assert e.value.filename == str(workdir / "results.json")
    assert not [p for p in os.listdir(workdir) if ".tmp" in p]
    path = tmp_path / "folder.json"
    path.mkdir()
    with pytest.raises(IsADirectoryError) as e:
        metrics_io.write_json(str(path), {"a": 1})
    assert e.value.filename == str(path)
