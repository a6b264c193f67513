"""Tests for stn.experiments.evaluation and eval.py: image preparation, external data, the JSON last line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stn.experiments import evaluation, training
from stn.experiments.tasks import classification

import helpers


def test_prepare_images_centres_smaller_and_scales_uint8():
    images = np.full((2, 20, 24), 255, np.uint8)
    out = classification.centre_on_canvas(images, 28)
    assert out.shape == (2, 28, 28, 1) and out.dtype == np.float32
    assert out[:, 4:24, 2:26].min() == 1.0
    assert out.sum() == 2 * 20 * 24  # nothing outside the centred block
    floats = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float64)
    np.testing.assert_allclose(classification.centre_on_canvas(floats, 28), floats, rtol=1e-6)


def test_prepare_images_rejects_larger_and_wrong_channels():
    with pytest.raises(ValueError, match="larger than the model's 28x28 input; crop or resize"):
        classification.centre_on_canvas(np.zeros((1, 42, 42), np.uint8), 28)
    with pytest.raises(ValueError, match="images have 3 channels; the model expects 1"):
        classification.centre_on_canvas(np.zeros((1, 28, 28, 3), np.uint8), 28)


def test_load_external_errors(tmp_path):
    config = helpers.small_config(str(tmp_path))
    load_external = lambda spec: classification.load_eval_set(config, spec)  # noqa: E731
    with pytest.raises(ValueError, match="'idx:DIR' or 'npz:FILE'"):
        load_external("csv:foo")
    with pytest.raises(ValueError, match="no such file"):
        load_external(f"npz:{tmp_path}/missing.npz")
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 28, 28)), label=np.zeros(2))
    with pytest.raises(ValueError, match="has no array 'image'"):
        load_external(f"npz:{tmp_path}/bad.npz")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short st_fcn run on drawn patterns (module-scoped: trained once)."""
    root = tmp_path_factory.mktemp("eval")
    data_dir = helpers.write_pattern_set(root / "data")
    config = helpers.small_config(data_dir, steps=20, checkpoint_every=10, eval_every=100)
    results = training.train_and_evaluate(config, str(root / "run"))
    return config, str(root / "run"), data_dir, results


@pytest.mark.slow
def test_external_data_matches_config_test_set(trained, tmp_path):
    config, workdir, data_dir, results = trained
    images, labels = helpers.pattern_digits(200, 1)  # the test split written by write_pattern_set
    np.savez(tmp_path / "test.npz", image=images, label=labels)
    from_npz = evaluation.evaluate_checkpoint(config, workdir, data=f"npz:{tmp_path}/test.npz")
    from_idx = evaluation.evaluate_checkpoint(config, workdir, data=f"idx:{data_dir}")
    assert from_npz["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    assert from_idx["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    assert from_npz["num_examples"] == 200
    assert os.path.exists(os.path.join(workdir, "eval", "step_20_npz_test.json"))
    at_10 = evaluation.evaluate_checkpoint(config, workdir, step=10)
    assert at_10["step"] == 10
    with pytest.raises(ValueError, match=r"no checkpoint for step 7 .* available: \[10, 20\]"):
        evaluation.evaluate_checkpoint(config, workdir, step=7)


def test_no_checkpoint_message(tmp_path):
    config = helpers.small_config(str(tmp_path))
    with pytest.raises(ValueError, match="no checkpoint in .*; train first"):
        evaluation.evaluate_checkpoint(config, str(tmp_path / "empty"))


@pytest.mark.slow
def test_eval_cli_last_line_is_json(trained):
    config, workdir, data_dir, results = trained
    # The run's own config and overrides; eval.batch_size cannot change the numbers and may
    # differ (tests/test_checkpoint_verify.py: fields that could are refused).
    cmd = [sys.executable, "eval.py", "--config=configs/mnist.py:none,st_fcn,affine",
           f"--workdir={workdir}", f"--config.data.source=idx:{data_dir}",
           "--config.data.distortion=none", "--config.data.validation_size=100",
           "--config.train.steps=20", "--config.train.batch_size=32",
           "--config.train.momentum=0.9", "--config.train.lr_decay_every=1000",
           "--config.eval.batch_size=7"]
    proc = subprocess.run(cmd, cwd=helpers.ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["test_error"] == pytest.approx(results["test_error"], abs=1e-9)
    assert last["num_examples"] == 200 and last["step"] == 20


@pytest.mark.parametrize("batch_size", [7, 64, 1000])
def test_evaluate_matches_numpy_at_every_eval_batch_size(batch_size):
    """The metrics of `evaluation.evaluate` equal an independent numpy computation from the
    model's logits, whatever the batch size (the padded last batch is masked out)."""
    from flax import nnx
    from stn.experiments import tasks

    config = helpers.small_config("unused")
    task = tasks.for_config(config)
    model = task.make_model(config, (28, 28, 1), nnx.Rngs(params=3))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(150, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 150).astype(np.int32)
    classifier = model.classifier.classifier
    classifier.kernel.value = classifier.kernel.value * 40.0  # sharpen: errors and losses vary
    # Class 0 is never predicted, so the padding (zero images, label 0) is all wrong and
    # costly: an evaluation that counted it would be caught.
    classifier.bias.value = (classifier.bias.value * 40.0).at[0].add(-30.0)
    logits = np.asarray(model(images), np.float64)
    padding = np.asarray(model(np.zeros((1, 28, 28, 1), np.float32)))[0]
    assert padding.argmax() != 0 and padding.max() - padding[0] > 10
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = -log_softmax[np.arange(150), labels].mean()
    expected_error = (logits.argmax(axis=1) != labels).mean()
    graphdef, state = nnx.split(model)
    got = evaluation.evaluate(task, graphdef, state, {"image": images, "label": labels},
                              batch_size=batch_size)
    assert got["num_examples"] == 150
    assert got["error"] == pytest.approx(expected_error, abs=1e-9)
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert 0.5 < expected_error < 1 and expected_loss > 1  # the check is not trivial


@pytest.mark.slow
def test_eval_cli_reads_the_runs_own_config(trained):
    """Without --config, eval.py rebuilds the run from the config.json it wrote."""
    config, workdir, data_dir, results = trained
    proc = subprocess.run([sys.executable, "eval.py", f"--workdir={workdir}"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["test_error"] == pytest.approx(
        results["test_error"], abs=1e-9)
    proc = subprocess.run([sys.executable, "eval.py", f"--workdir={data_dir}"], cwd=helpers.ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"eval.py: no checkpoint in {data_dir}/checkpoints; train first with train.py "
        f"--workdir={data_dir}"]
