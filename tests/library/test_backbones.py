"""Inception-v3 backbone and its timm importer: import parity with timm's own logits
(a fixture made by tools/fixtures/inception_v3_timm.py; no torch here), one-line mismatch
errors, frozen batch-norm statistics, width and truncation."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from stn.backbones import inception_v3, seeded, timm_import

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "inception_v3_timm.npz")


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as f:
        return {"image": f["image"], "logits": f["logits"], "seed": int(f["seed"]),
                "shapes": {k: tuple(v) for k, v in json.loads(str(f["shapes"])).items()}}


@pytest.fixture(scope="module")
def full_model():
    return inception_v3.InceptionV3(rngs=nnx.Rngs(0))


def test_importer_names_and_shapes_are_timms(fixture, full_model):
    """Every key timm's state_dict holds (BN counters aside) is a leaf of the NNX module, with
    the same shape, and nothing else."""
    assert timm_import.checkpoint_shapes(full_model) == fixture["shapes"]


def test_import_parity_with_timm_logits(fixture, full_model, tmp_path):
    """Seeded weights through a safetensors file: the NNX logits equal timm's within 1e-4."""
    path = tmp_path / "weights.safetensors"
    save_file(seeded.seeded_weights(fixture["shapes"], fixture["seed"]), str(path))
    timm_import.load_safetensors(full_model, path)
    logits = np.asarray(nnx.jit(lambda m, x: m(x))(full_model, jnp.asarray(fixture["image"])))
    assert np.abs(fixture["logits"]).max() > 1.0  # non-trivial logits
    np.testing.assert_allclose(logits, fixture["logits"], atol=1e-4, rtol=0)


def _small(**kw):
    return inception_v3.InceptionV3(width=0.125, last_block="Mixed_5d", rngs=nnx.Rngs(1), **kw)


def _small_weights(model, seed=0):
    return seeded.seeded_weights(timm_import.checkpoint_shapes(model), seed)


def test_unexpected_key_is_one_line():
    model = _small(num_classes=5)
    arrays = {**_small_weights(model), "Mixed_6a.branch3x3.conv.weight": np.zeros((1,))}
    with pytest.raises(ValueError, match=r"^ckpt: key 'Mixed_6a.branch3x3.conv.weight' has no "
                                         r"place in the model[^\n]*$"):
        timm_import.load_arrays(model, arrays, what="ckpt")


def test_missing_key_is_one_line():
    model = _small(num_classes=5)
    arrays = _small_weights(model)
    del arrays["Mixed_5b.branch_pool.bn.running_var"]
    with pytest.raises(ValueError, match=r"'Mixed_5b.branch_pool.bn.running_var' is not in the "
                                         r"file \(1 keys missing\)$"):
        timm_import.load_arrays(model, arrays)


def test_shape_mismatch_names_key_and_shapes():
    model = _small(num_classes=5)
    arrays = _small_weights(_small(num_classes=7))
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(7, 36\) in the file, the "
                                         r"model expects \(5, 36\)"):
        timm_import.load_arrays(model, arrays)


def test_classifier_and_aux_keys_skipped_without_a_head():
    """A backbone built without a classifier (to fine-tune a new head) ignores the file's
    `fc.*`; the auxiliary classifier and BN counters are always skipped."""
    headless = _small(num_classes=0)
    arrays = {**_small_weights(_small(num_classes=5)), "AuxLogits.fc.weight": np.zeros((2, 2)),
              "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros(())}
    timm_import.load_arrays(headless, arrays)
    np.testing.assert_array_equal(np.asarray(headless.Mixed_5d.branch_pool.bn.var[...]),
                                  arrays["Mixed_5d.branch_pool.bn.running_var"])
    kernel = np.asarray(headless.Conv2d_1a_3x3.conv.kernel[...])  # HWIO from OIHW
    np.testing.assert_array_equal(kernel, arrays["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))


def test_missing_or_bad_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        timm_import.load_safetensors(_small(), tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        timm_import.load_safetensors(_small(), bad)
    truncated = tmp_path / "truncated.safetensors"
    save_file(_small_weights(_small()), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated.safetensors is not a readable safetensors "
                                         r"file \([^\n]*\)$"):
        timm_import.load_safetensors(_small(), truncated)
    with pytest.raises(ValueError, match=r"is a folder, not a safetensors file$"):
        timm_import.load_safetensors(_small(), tmp_path)


@pytest.mark.parametrize("key, value, message", [
    ("Mixed_5b.branch1x1.conv.weight", np.nan, r"holds 1 non-finite values \(NaN or infinity\)"),
    ("fc.bias", np.inf, r"holds 1 non-finite values"),
    ("Mixed_5b.branch_pool.bn.running_mean", -np.inf, r"holds 1 non-finite values"),
    ("Mixed_5b.branch_pool.bn.running_var", -0.5,
     r"is a batch-norm running variance but holds negative values \(smallest -0.5\)"),
])
def test_non_finite_weights_and_negative_variances_are_refused_by_key(key, value, message):
    """A damaged file (a NaN, an infinity, a negative BN variance) is refused in one line naming
    the key, before any leaf of the model changes; a negative value elsewhere is fine."""
    model = _small(num_classes=5)
    before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]
    arrays = _small_weights(model)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[3] = value
    with pytest.raises(ValueError, match=rf"^ckpt: '{key}' {message}[^\n]*$"):
        timm_import.load_arrays(model, arrays, what="ckpt")
    for a, b in zip(before, jax.tree.leaves(nnx.state(model))):
        np.testing.assert_array_equal(a, np.asarray(b))
    arrays = _small_weights(model)
    arrays["Mixed_5b.branch_pool.bn.running_mean"].flat[3] = -0.5  # a mean may be negative
    timm_import.load_arrays(model, arrays, what="ckpt")


def test_batch_norm_statistics_frozen_and_not_parameters():
    """Running statistics get no gradient and are not nnx.Params, but stay in the state (so
    they are checkpointed); the BN scale and the kernel do get gradients; the layer normalises
    with the running statistics."""
    layer = inception_v3.ConvBN(3, 4, 3, padding=1, rngs=nnx.Rngs(0))
    layer.bn.mean.value = jnp.asarray([0.5, -0.5, 1.0, 0.0])
    layer.bn.var.value = jnp.asarray([2.0, 0.5, 1.0, 4.0])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)
    pre = layer.conv(x)
    mean, var = layer.bn.mean[...][None, None, None], layer.bn.var[...][None, None, None]
    expected = jax.nn.relu((pre - mean) / jnp.sqrt(var + 1e-3))
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(expected), atol=1e-5)
    graphdef, state = nnx.split(layer)
    grads = jax.grad(lambda s: nnx.merge(graphdef, s)(x).sum())(state)
    assert float(jnp.abs(grads["bn"]["mean"][...]).max()) == 0.0
    assert float(jnp.abs(grads["bn"]["var"][...]).max()) == 0.0
    assert float(jnp.abs(grads["bn"]["scale"][...]).max()) > 0.0
    assert float(jnp.abs(grads["conv"]["kernel"][...]).max()) > 0.0
    assert set(nnx.state(layer, nnx.Param)["bn"]) == {"scale", "bias"}
    assert set(nnx.state(layer, inception_v3.RunningStat)["bn"]) == {"mean", "var"}


def test_width_truncation_and_descriptor():
    model = inception_v3.InceptionV3(width=0.25, last_block="Mixed_5d", num_classes=0,
                                     rngs=nnx.Rngs(0))
    assert model.num_features == 16 + 16 + 24 + 16
    assert model(jnp.zeros((3, 48, 64, 3))).shape == (3, model.num_features)
    with pytest.raises(ValueError, match="last_block='Mixed_6b' is not one of"):
        inception_v3.InceptionV3(last_block="Mixed_6b", rngs=nnx.Rngs(0))


def test_batch_norm_learns_statistics_when_pretraining():
    """`learn_statistics(True)`: the batch's statistics normalise (each channel mean 0, variance
    1 before scale and shift) and the running ones move by momentum 0.1 towards them (unbiased
    variance); switched back, the layer uses the running statistics, fixed."""
    bn = inception_v3.FrozenBatchNorm(2)
    x = jnp.asarray(np.random.default_rng(0).normal([3.0, -1.0], [2.0, 0.5], (4, 5, 5, 2)),
                    jnp.float32)
    inception_v3.learn_statistics(bn, True)
    y = np.asarray(bn(x)).reshape(-1, 2)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(0), 1.0, atol=1e-2)
    flat = np.asarray(x).reshape(-1, 2)
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * flat.var(0, ddof=1),
                               rtol=1e-5)
    inception_v3.learn_statistics(bn, False)
    mean, var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
    np.testing.assert_allclose(np.asarray(bn(x)).reshape(-1, 2),
                               (flat - mean) / np.sqrt(var + 1e-3), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(bn.mean[...]), mean)  # fixed again


def test_export_then_import_is_the_same_network(tmp_path):
    """`save_safetensors` writes timm's names and layouts: the file's keys and shapes are
    `checkpoint_shapes`, and loading it into a fresh network gives the same logits."""
    source = _small(num_classes=5)
    timm_import.load_arrays(source, _small_weights(source, seed=3))
    path = timm_import.save_safetensors(source, tmp_path / "exported.safetensors")
    from safetensors.numpy import load_file
    arrays = load_file(path)
    assert {k: v.shape for k, v in arrays.items()} == timm_import.checkpoint_shapes(source)
    np.testing.assert_array_equal(arrays["Conv2d_1a_3x3.conv.weight"],
                                  _small_weights(source, seed=3)["Conv2d_1a_3x3.conv.weight"])
    copy = timm_import.load_safetensors(_small(num_classes=5), path)
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 40, 40, 3)), jnp.float32)
    np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(source(x)), atol=1e-6)
