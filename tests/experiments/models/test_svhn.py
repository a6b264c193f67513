"""SVHN sequence models: output shapes, identity-initialised transformers, loss and metric."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import transforms
from stn.experiments.models import num_params, svhn
from stn.experiments.tasks.sequences import sequence_correct, sequence_loss

SMALL = dict(features=(8, 8, 16, 16, 16, 16, 16, 16), fc_widths=(32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name,num_stn", [("cnn", 0), ("st_cnn_single", 1), ("st_cnn_multi", 4)])
def test_output_shapes_and_transformers(name, num_stn):
    model = svhn.create(name, (54, 54, 3), **SMALL, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 54, 54, 3))
    out = model(x)
    assert out["length"].shape == (2, 6)
    assert out["digits"].shape == (2, 5, 11)
    assert len(model.transformers) == num_stn
    assert (model.transformer is not None) == (num_stn > 0)


@pytest.mark.slow
def test_transformers_start_as_identity():
    """Each fresh transformer returns its input (zero regression weights, identity bias)."""
    model = svhn.create("st_cnn_multi", (54, 54, 3), **SMALL, rngs=nnx.Rngs(1))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 54, 54, 3))
    np.testing.assert_allclose(model.transformers[0](x), x, atol=1e-5)
    single = svhn.create("st_cnn_single", (64, 64, 1), **SMALL, rngs=nnx.Rngs(2))
    y = jax.random.uniform(jax.random.PRNGKey(2), (2, 64, 64, 1))
    np.testing.assert_allclose(single.transformer(y), y, atol=1e-5)


def test_paper_sized_models_parameter_counts():
    """The paper-width CNN on 54x54x3: 8 convs, then 3072-unit layers; ST models add loc nets."""
    counts = {}
    for name in svhn.MODEL_NAMES:
        abstract = nnx.eval_shape(lambda: svhn.create(name, (54, 54, 3), rngs=nnx.Rngs(0)))
        counts[name] = num_params(abstract)
    convs = sum(5 * 5 * c_in * c_out + c_out for c_in, c_out in
                zip((3,) + svhn.CONV_FEATURES[:-1], svhn.CONV_FEATURES))
    fcs = 4 * 4 * 192 * 3072 + 3072 + 2 * (3072 * 3072 + 3072)
    heads = 3072 * 6 + 6 + 5 * (3072 * 11 + 11)
    assert counts["cnn"] == convs + fcs + heads
    assert counts["cnn"] < counts["st_cnn_single"] < counts["st_cnn_multi"]


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="unknown SVHN model"):
        svhn.create("resnet", (54, 54, 3), rngs=nnx.Rngs(0))


def _one_hot_outputs(lengths, digits):
    """Logits whose argmax are the given lengths [B] and digits [B, 5]."""
    return {"length": jax.nn.one_hot(jnp.array(lengths), 6) * 10.0,
            "digits": jax.nn.one_hot(jnp.array(digits), 11) * 10.0}


def test_sequence_metric_hand_made_cases():
    labels = jnp.array([[1, 9, 10, 10, 10],   # "19"
                        [1, 9, 10, 10, 10],
                        [1, 9, 10, 10, 10],
                        [7, 10, 10, 10, 10],  # "7"
                        [2, 0, 4, 6, 8]])     # "20468"
    outputs = _one_hot_outputs(
        [2, 3, 2, 1, 5],
        [[1, 9, 10, 10, 10],   # right
         [1, 9, 10, 10, 10],   # length wrong -> wrong
         [1, 8, 10, 10, 10],   # a digit wrong -> wrong
         [7, 3, 3, 10, 10],    # right: positions after the true length do not count
         [2, 0, 4, 6, 8]])     # right
    np.testing.assert_array_equal(sequence_correct(outputs, labels),
                                  [True, False, False, True, True])


def test_sequence_loss_is_length_plus_digit_cross_entropies():
    labels = jnp.array([[3, 10, 10, 10, 10]])
    outputs = {"length": jnp.zeros((1, 6)), "digits": jnp.zeros((1, 5, 11))}
    # uniform logits: -log(1/6) for the length, 5 * -log(1/11) for the digits
    np.testing.assert_allclose(sequence_loss(outputs, labels),
                               [np.log(6) + 5 * np.log(11)], rtol=1e-6)
    confident = _one_hot_outputs([1], [[3, 10, 10, 10, 10]])
    assert float(sequence_loss(confident, labels)[0]) < 1e-2  # 6 heads at ~4e-4 each


@pytest.mark.slow
def test_multi_grids_compose_back_into_the_input_frame():
    """Transformer 0 zooms in 2x, transformer 1 shifts right by 0.2 of its input's frame: in
    image coordinates transformer 1 samples `0.5 * p + (0.1, 0)` (a shift of 0.2 at half scale);
    transformers 2, 3 are still the identity, so they repeat transformer 1's map."""
    model = svhn.create("st_cnn_multi", (32, 32, 1), **SMALL, rngs=nnx.Rngs(3))
    model.transformers[0].loc_net.regression.bias.value = jnp.array([0.5, 0, 0, 0, 0.5, 0.0])
    model.transformers[1].loc_net.regression.bias.value = jnp.array([1.0, 0, 0.2, 0, 1, 0])
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 32, 32, 1))
    grids = model.transformer_grids(x)
    sizes = [g.shape[1:3] for g in grids]
    assert sizes == [(32, 32), (16, 16), (16, 16), (8, 8)]
    base = lambda n: transforms.base_grid(n, n)[None]  # noqa: E731
    np.testing.assert_allclose(grids[0], jnp.broadcast_to(0.5 * base(32), grids[0].shape),
                               atol=1e-6)
    shifted = lambda n: 0.5 * base(n) + jnp.array([[[[0.1, 0.0]]]])  # noqa: E731
    for grid, n in zip(grids[1:], (16, 16, 8)):
        np.testing.assert_allclose(grid, jnp.broadcast_to(shifted(n), grid.shape), atol=1e-6)


def test_single_input_frame_grid_is_its_own_grid():
    model = svhn.create("st_cnn_single", (32, 32, 1), **SMALL, rngs=nnx.Rngs(4))
    x = jax.random.uniform(jax.random.PRNGKey(4), (2, 32, 32, 1))
    (grid,) = model.transformer_grids(x)
    np.testing.assert_array_equal(grid, model.transformer.params_and_grid(x)[1])
