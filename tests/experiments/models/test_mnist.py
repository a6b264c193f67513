"""Tests for stn.experiments.models.mnist: shapes, identity start of the ST models, names."""
import jax
import numpy as np
import pytest
from flax import nnx

from stn.experiments.models import mnist, num_params
from stn.experiments.models.mnist import get_model


@pytest.mark.parametrize("name,transform", [("st_fcn", "affine"), ("st_fcn", "tps"),
                                            ("st_cnn", "affine"), ("st_cnn", "projective"),
                                            ("st_cnn", "tps")])
@pytest.mark.slow
def test_fresh_st_model_transformer_is_identity(name, transform):
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    model = get_model({"name": name, "transform": transform}, 28, nnx.Rngs(0))
    np.testing.assert_allclose(model.transformer(x), x, atol=1e-5)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", mnist.MODEL_NAMES)
@pytest.mark.parametrize("size", [28, 42, 60])
def test_models_build_for_every_canvas(name, size):
    model = get_model({"name": name, "transform": "affine"}, size, nnx.Rngs(0))
    logits = model(np.zeros((1, size, size, 1), np.float32))
    assert logits.shape == (1, 10)
    assert 150_000 < num_params(model) < 1_200_000


def test_paper_layer_sizes_on_28x28():
    """Parameter counts pin the widths (FCN 256-200, CNN 64-64, loc nets 32x3 / 20-20-20)."""
    counts = {(n, t): num_params(get_model({"name": n, "transform": t}, 28, nnx.Rngs(0)))
              for n, t in [("fcn", "affine"), ("cnn", "affine"), ("st_fcn", "affine"),
                           ("st_cnn", "affine")]}
    assert counts[("fcn", "affine")] == 784 * 256 + 256 + 256 * 200 + 200 + 200 * 10 + 10
    assert counts[("cnn", "affine")] == (81 * 64 + 64) + (49 * 64 * 64 + 64) + (4 * 64 * 10 + 10)
    assert counts[("st_fcn", "affine")] - counts[("fcn", "affine")] == (
        784 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 6 + 6)
    assert counts[("st_cnn", "affine")] - counts[("cnn", "affine")] == (
        (25 * 20 + 20) + (25 * 20 * 20 + 20) + (20 * 20 + 20) + (20 * 6 + 6))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown MNIST model 'resnet'; expected one of fcn"):
        get_model({"name": "resnet"}, 28, nnx.Rngs(0))


def test_st_output_size_downsamples():
    model = get_model({"name": "st_cnn", "transform": "affine", "st_output_size": 30}, 60,
                      nnx.Rngs(0))
    x = np.zeros((1, 60, 60, 1), np.float32)
    assert model.transformer(x).shape == (1, 30, 30, 1)
    assert model(x).shape == (1, 10)


@pytest.mark.slow
def test_st_pool_average_pools_the_transformer_output():
    """`st_pool=2` (the paper's RTS and TC models): the classifier sees the transformer's output
    average-pooled 2x2; a CNN that no longer fits its input is a one-line error."""
    model = get_model({"name": "st_fcn", "transform": "affine", "st_pool": 2}, 42, nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (3, 42, 42, 1))
    pooled = nnx.avg_pool(model.transformer(x), (2, 2), strides=(2, 2))
    assert pooled.shape == (3, 21, 21, 1)
    np.testing.assert_allclose(model(x), model.classifier(pooled), rtol=1e-6)
    assert model.classifier.hidden.layers[0].in_features == 21 * 21
    with pytest.raises(ValueError, match=r"CNN: input \(21, 21, 1\) is too small"):
        get_model({"name": "st_cnn", "transform": "affine", "st_pool": 2}, 42, nnx.Rngs(0))
    assert get_model({"name": "st_cnn", "transform": "affine", "st_pool": 2,
                      "st_output_size": 52}, 42, nnx.Rngs(0))(x).shape == (3, 10)
