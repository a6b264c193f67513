"""Tests for stn.experiments.training: end to end, resume == uninterrupted, 8 devices == 1, bad configs.

All data is made here: class-dependent drawn 28x28 patterns written as IDX files, read back
through `data.source=idx:DIR`, so nothing touches the network or shared folders.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flax import nnx

from stn.experiments import checkpointing, evaluation, host, metrics_io, tasks, training
from stn import layers
from stn.experiments.data import idx

import helpers
from helpers import ROOT, final_params, fresh_model, small_config


@pytest.mark.slow
def test_end_to_end_learns_and_eval_reproduces(data_dir, tmp_path):
    config = small_config(data_dir)
    workdir = tmp_path / "run"
    results = training.train_and_evaluate(config, str(workdir))

    records = metrics_io.read_jsonl(str(workdir / "metrics.jsonl"))
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses
    assert 0 < results["test_error"] < 0.5  # chance is 0.9; > 0 so the eval check means something
    assert results["steps"] == 40 and results["num_test_examples"] == 200
    on_disk = json.loads((workdir / "results.json").read_text())
    for key in ("name", "config", "steps", "test_error", "num_test_examples", "wall_time_s",
                "images_per_second", "num_params"):
        assert key in on_disk
    assert on_disk["config"]["train"]["steps"] == 40
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "st_fcn"
    assert {"20", "40"} <= set(os.listdir(workdir / "checkpoints"))
    assert (workdir / "images" / "transformer_step_0000040.png").stat().st_size > 0
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))

    evaluated = evaluation.evaluate_checkpoint(config, str(workdir))
    assert evaluated["step"] == 40
    assert evaluated["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    # A finished run rerun with the same workdir only evaluates.
    again = training.train_and_evaluate(config, str(workdir))
    assert again["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    assert again["resumed_from_step"] == 40


@pytest.mark.slow
def test_interrupt_and_resume_equals_uninterrupted(data_dir, tmp_path):
    config = small_config(data_dir, steps=12, checkpoint_every=100, eval_every=100, log_every=4)
    training.train_and_evaluate(config, str(tmp_path / "straight"))

    def interrupt_at_5(step, metrics):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(training.TrainingInterrupted, match="after step 5"):
        training.train_and_evaluate(config, str(tmp_path / "resumed"),
                                    step_callback=interrupt_at_5)
    assert os.listdir(tmp_path / "resumed" / "checkpoints") == ["5"]
    resumed = training.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["resumed_from_step"] == 5
    for a, b in zip(final_params(tmp_path / "straight", config),
                    final_params(tmp_path / "resumed", config)):
        np.testing.assert_array_equal(a, b)  # bitwise on CPU


_DEVICE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    sys.path.insert(0, {tests!r})
    import helpers as t
    from stn.experiments import training
    config = t.small_config({data!r}, steps=3, checkpoint_every=100, eval_every=100)
    training.train_and_evaluate(config, {workdir!r})
    np.savez({out!r}, *t.final_params({workdir!r}, config), devices=jax.device_count())
""")


@pytest.mark.slow
def test_eight_simulated_devices_match_one(data_dir, tmp_path):
    """Same params after 3 steps on 1 and on 8 devices, up to float32 reduction order:
    rtol 1e-5, atol 1e-6 (the gradient is summed over shards in a different order)."""
    outs = {}
    for n in (1, 8):
        out = str(tmp_path / f"params_{n}.npz")
        script = _DEVICE_SCRIPT.format(tests=os.path.dirname(helpers.__file__), data=data_dir,
                                       workdir=str(tmp_path / f"run_{n}"), out=out)
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   JAX_PLATFORMS="cpu")
        proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[n] = np.load(out)
    assert int(outs[1]["devices"]) == 1 and int(outs[8]["devices"]) == 8
    keys = [k for k in outs[1].files if k.startswith("arr_")]
    assert keys
    for k in keys:
        np.testing.assert_allclose(outs[8][k], outs[1][k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("model.name", "resnet", "config.model.name='resnet' is unknown; set it to one of fcn"),
    ("model.transform", "spline", "config.model.transform='spline' is unknown"),
    ("data.distortion", "x", "config.data.distortion='x' is unknown; set it to one of"),
    ("data.source", "idx:/nonexistent/mnist", "directory /nonexistent/mnist does not exist"),
    ("train.steps", 0, "config.train.steps=0 must be a positive integer"),
    ("train.grad_clip_norm", -1.0, "config.train.grad_clip_norm=-1.0 must be >= 0"),
])
def test_bad_config_messages(data_dir, tmp_path, field, value, message):
    config = small_config(data_dir)
    section, key = field.split(".")
    config[section][key] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        training.train_and_evaluate(config, str(tmp_path / "bad"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()  # stopped before writing anything


def test_batch_not_divisible_by_devices(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    config = small_config(data_dir, batch_size=12)
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8 devices; set "
                                         "it to a multiple of 8"):
        training.train_and_evaluate(config, str(tmp_path / "bad"))


def test_nan_loss_stops_naming_the_step(data_dir, tmp_path):
    config = small_config(data_dir, steps=6, learning_rate=1e30, checkpoint_every=2,
                          eval_every=100)
    with pytest.raises(training.Diverged, match=r"diverged at step \d+"):
        training.train_and_evaluate(config, str(tmp_path / "nan"))


def _loc_flags(config):
    model, _, state = fresh_model(config)
    mask = training.parameter_mask(state, model, layers.localisation_paths(model))
    return model, state, jax.tree.leaves(mask)


def _random_like(state, seed: int):
    """A tree like `state` of standard normal arrays (a stand-in gradient)."""
    leaves = jax.tree.leaves(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(jax.tree.structure(state),
                              [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _optimizer_updates(config, state, model, grads, steps: int) -> list[list[np.ndarray]]:
    """The updates (leaves, per step) of `config`'s optimizer fed `grads` `steps` times."""
    tx, _ = training.make_optimizer(config, state, model)
    opt_state, updates = tx.init(state), []
    for _ in range(steps):
        update, opt_state = tx.update(grads, opt_state, state)
        updates.append([np.asarray(u) for u in jax.tree.leaves(update)])
    return updates


def test_loc_lr_multiplier_scales_only_the_loc_net(data_dir, tmp_path):
    """With multiplier 0 the localisation net stays at its identity start; the rest moves."""
    config = small_config(data_dir, steps=2, checkpoint_every=100, eval_every=100)
    config.model.loc_lr_multiplier = 0.0
    training.train_and_evaluate(config, str(tmp_path / "frozen_loc"))
    _, fresh, flags = _loc_flags(config)
    assert any(flags) and not all(flags)
    after = final_params(tmp_path / "frozen_loc", config)
    for flag, before, moved in zip(flags, jax.tree.leaves(fresh), after):
        if flag:
            np.testing.assert_array_equal(np.asarray(before), moved)
    assert any(not np.array_equal(np.asarray(b), a) for f, b, a in
               zip(flags, jax.tree.leaves(fresh), after) if not f)


@pytest.mark.slow
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_loc_lr_multiplier_gives_that_fraction_of_the_whole_update(data_dir, weight_decay):
    """0.1 gives the loc net a tenth of the update (gradient, weight decay and momentum alike)
    and leaves the rest alone; regression biases are not decayed."""
    config = small_config(data_dir, learning_rate=0.1, momentum=0.9, weight_decay=weight_decay)
    model, state, flags = _loc_flags(config)
    grads = _random_like(state, seed=0)
    updates = {}
    for multiplier in (1.0, 0.1):
        config.model.loc_lr_multiplier = multiplier
        # the second step includes momentum
        updates[multiplier] = _optimizer_updates(config, state, model, grads, steps=2)[-1]
    for flag, full, tenth in zip(flags, updates[1.0], updates[0.1]):
        np.testing.assert_allclose(tenth, full * (0.1 if flag else 1.0), rtol=1e-5, atol=1e-8)
    # With a zero gradient, only the decay moves a parameter: regression biases stay put.
    zero = jax.tree.map(jnp.zeros_like, state)
    tx, _ = training.make_optimizer(config, state, model)
    update, _ = tx.update(zero, tx.init(state), state)
    names = list(checkpointing.named_leaves(state))
    for name, u, x in zip(names, jax.tree.leaves(update), jax.tree.leaves(state)):
        if "regression" in name and "bias" in name:
            assert not np.any(np.asarray(u)), name
        elif weight_decay and np.any(np.asarray(x)):
            assert np.any(np.asarray(u)), name


def test_loc_warmup_steps_hold_the_loc_net_then_release_it(data_dir):
    """With `loc_warmup_steps` 2 the loc net's updates are zero for two steps (its momentum
    stays empty) while the rest moves; from the third step it gets the plain update."""
    config = small_config(data_dir, learning_rate=0.1, momentum=0.9)
    model, state, flags = _loc_flags(config)
    grads = _random_like(state, seed=1)
    updates = {}
    for warmup in (0, 2):
        config.model.loc_warmup_steps = warmup
        updates[warmup] = _optimizer_updates(config, state, model, grads, steps=3)
    first_plain_step = updates[0][0]
    for k, (flag, plain) in enumerate(zip(flags, first_plain_step)):
        for step in range(2):
            held = updates[2][step][k]
            if flag:
                assert not np.any(held)
            else:
                np.testing.assert_allclose(held, updates[0][step][k], rtol=1e-6)
        # released with an empty momentum: the loc net's third update is a first update
        np.testing.assert_allclose(updates[2][2][k], plain if flag else updates[0][2][k],
                                   rtol=1e-6)


def test_negative_loc_warmup_steps_is_refused_in_one_line(data_dir):
    config = small_config(data_dir)
    config.model.loc_warmup_steps = -1
    with pytest.raises(ValueError, match=r"^config.model.loc_warmup_steps=-1 must be >= 0"):
        training.validate_train_config(config)


def test_grad_clip_norm_bounds_the_update():
    """With `grad_clip_norm` c, plain SGD moves the parameters by at most lr * c; without it the
    update is lr times the whole gradient."""
    config = ml_collections.ConfigDict({"model": {}, "train": {
        "learning_rate": 0.5, "lr_decay_every": 100, "lr_decay_factor": 0.1, "momentum": 0.0,
        "grad_clip_norm": 2.0}})
    params = {"w": jnp.zeros(4)}
    tx, _ = training.make_optimizer(config, params, None)
    grads = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # norm 50
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(0.5 * 2.0, rel=1e-6)
    config.train.grad_clip_norm = 0.0
    tx, _ = training.make_optimizer(config, params, None)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(0.5 * 50.0, rel=1e-6)


@pytest.mark.slow
def test_train_py_on_two_cpu_devices_with_many_steps_between_logs(data_dir, tmp_path):
    """60 steps between reads of the metrics on two CPU devices finish (with up to 50 steps in
    flight, XLA:CPU's all-gather rendezvous hung and aborted the process)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", "--config=configs/mnist.py:quick",
         f"--config.data.source=idx:{data_dir}", "--config.data.validation_size=100",
         "--config.train.steps=60", "--config.train.log_every=60", "--config.train.eval_every=60",
         "--config.train.checkpoint_every=60", f"--workdir={workdir}", "--cpu_devices=2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["steps"] == 60


@pytest.mark.slow
def test_train_py_splits_the_cpu_into_devices(data_dir, tmp_path):
    """`train.py --cpu_devices=2` trains data-parallel over two CPU devices; without the flag it
    takes one per core (as many as divide the batch); -1 is a clear error."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    args = [sys.executable, "train.py", "--config=configs/mnist.py:none,st_fcn,affine",
            f"--config.data.source=idx:{data_dir}", "--config.data.distortion=none",
            "--config.data.validation_size=100", "--config.train.steps=4",
            "--config.train.batch_size=32",
            "--config.train.eval_every=4", "--config.train.checkpoint_every=4"]
    workdir = tmp_path / "two"
    proc = subprocess.run(args + [f"--workdir={workdir}", "--cpu_devices=2", "--deterministic"],
                          env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["num_devices"] == 2
    workdir = tmp_path / "default"
    proc = subprocess.run(args + [f"--workdir={workdir}"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["num_devices"] == (
        host.default_cpu_devices(32))
    proc = subprocess.run(args + [f"--workdir={tmp_path / 'negative'}", "--cpu_devices=-1"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "train.py: the number of CPU devices must be >= 1, got -1")


def test_validation_split_is_held_out_and_reported(data_dir, tmp_path):
    """The classification task's validation digits are carved out of the training digits (never
    in a training batch's source arrays, never a test digit), the same on every load, and the
    run's validation_error is the error on exactly that set."""
    config = small_config(data_dir, steps=4, checkpoint_every=4, eval_every=100)
    task = tasks.for_config(config)
    data = task.load_data(config)
    train_images = data.train_arrays[0].reshape(len(data.train_arrays[0]), -1)
    assert len(train_images) == 512 - 100 and len(data.validation["label"]) == 100
    held_out = idx.read_split(data_dir, "train")[0].reshape(512, -1)
    train_rows = {row.tobytes() for row in train_images}
    test_rows = {row.tobytes() for row in idx.read_split(data_dir, "test")[0].reshape(200, -1)}
    chosen = [row.tobytes() for row in held_out if row.tobytes() not in train_rows]
    assert len(chosen) == 100 and not set(chosen) & test_rows
    again = task.load_data(config)
    np.testing.assert_array_equal(again.validation["image"], data.validation["image"])
    results = training.train_and_evaluate(config, str(tmp_path / "run"))
    evaluated = evaluation.evaluate_checkpoint(config, str(tmp_path / "run"), data="validation")
    assert results["num_validation_examples"] == 100
    assert evaluated["validation_error"] == pytest.approx(results["validation_error"], abs=1e-9)
    assert evaluated["validation_loss"] == pytest.approx(results["validation_loss"], rel=1e-6)


def test_weight_decay_leaves_fixed_state_alone():
    """Weight decay shrinks parameters but never fixed state (frozen batch-norm statistics of
    the pretrained backbones): with zero gradients only the parameters move."""
    from stn.backbones import inception_v3

    layer = inception_v3.FrozenBatchNorm(3)
    layer.mean.value = jnp.ones(3)
    _, state = nnx.split(layer)
    config = ml_collections.ConfigDict({"model": {}, "train": {
        "learning_rate": 0.5, "lr_decay_every": 100, "lr_decay_factor": 0.1, "momentum": 0.0,
        "weight_decay": 0.1}})
    tx, _ = training.make_optimizer(config, state, layer)
    zeros = jax.tree.map(jnp.zeros_like, state)
    updates, _ = tx.update(zeros, tx.init(state), state)
    assert float(jnp.abs(updates["mean"][...]).max()) == 0.0
    assert float(jnp.abs(updates["var"][...]).max()) == 0.0
    np.testing.assert_allclose(np.asarray(updates["scale"][...]), -0.5 * 0.1 * np.ones(3),
                               rtol=1e-6)
