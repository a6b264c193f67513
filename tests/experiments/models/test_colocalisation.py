"""Co-localisation's box parametrisation (stn.experiments.models.colocalisation.inside_attention):
how far the box's centre may move ("inside" or "free"), its inverse, and the model's default."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import boxes
from stn.experiments.models import colocalisation as models
from stn.experiments.models import mnist

MIN, MAX = 0.2, 1.0


def raw_at(scale, z_x, z_y):
    """The raw `(z_s, z_x, z_y)` whose half-side is `scale` (under MIN, MAX)."""
    fraction = (scale - MIN) / (MAX - MIN)
    return jnp.asarray([[np.log(fraction / (1 - fraction)), z_x, z_y]], jnp.float32)


def test_free_translation_reaches_the_edges_at_the_starting_scale():
    """At s = 0.9 "free" puts the centre near +-1 (t = tanh(3) = 0.995); "inside" cannot pass
    1 - s = 0.1 whatever the raw value."""
    raw = jnp.concatenate([raw_at(0.9, 3.0, -3.0), raw_at(0.9, 40.0, -40.0)])
    free = models.inside_attention(raw, MIN, MAX, "free")
    inside = models.inside_attention(raw, MIN, MAX, "inside")
    np.testing.assert_allclose(free[:, 0], 0.9, atol=1e-5)
    np.testing.assert_allclose(free[0, 1:], [np.tanh(3.0), -np.tanh(3.0)], atol=1e-5)
    np.testing.assert_allclose(free[1, 1:], [1.0, -1.0], atol=1e-5)
    assert float(jnp.abs(inside[:, 1:]).max()) <= 0.1 + 1e-5
    np.testing.assert_allclose(inside[0, 1:], [0.1 * np.tanh(3.0), -0.1 * np.tanh(3.0)],
                               atol=1e-5)
    # the free box's centre stays in the image; the inside box stays whole in it
    centres = 0.5 * (boxes.attention_box(free)[:, :2] + boxes.attention_box(free)[:, 2:])
    assert float(jnp.abs(centres).max()) <= 1 + 1e-6
    assert float(jnp.abs(boxes.attention_box(inside)).max()) <= 1 + 1e-6


@pytest.mark.parametrize("translation", models.TRANSLATIONS)
def test_the_inverse_round_trips(translation):
    theta = jnp.asarray([[0.9, 0.05, -0.08], [0.3, 0.6, -0.5], [0.5, -0.4, 0.2]])
    if translation == "free":  # centres beyond 1 - s: only "free" reaches them
        theta = theta.at[0, 1:].set(jnp.asarray([0.8, -0.95]))
    raw = models.inside_attention_inverse(theta, MIN, MAX, translation)
    np.testing.assert_allclose(models.inside_attention(raw, MIN, MAX, translation), theta,
                               atol=1e-5)
    raw = jnp.asarray([[0.7, -1.2, 0.4], [-2.0, 0.0, 2.5]])
    back = models.inside_attention_inverse(models.inside_attention(raw, MIN, MAX, translation),
                                           MIN, MAX, translation)
    np.testing.assert_allclose(back, raw, atol=1e-4)


def test_the_two_inverses_differ_where_the_mappings_do():
    theta = jnp.asarray([[0.5, 0.25, -0.25]])
    inside = models.inside_attention_inverse(theta, MIN, MAX, "inside")
    free = models.inside_attention_inverse(theta, MIN, MAX, "free")
    np.testing.assert_allclose(inside[0, 1:], np.arctanh([0.5, -0.5]), atol=1e-5)
    np.testing.assert_allclose(free[0, 1:], np.arctanh([0.25, -0.25]), atol=1e-5)


def make(**kwargs):
    return models.CoLocaliser((84, 84, 1), mnist.CNN((28, 28, 1), rngs=nnx.Rngs(1)),
                              initial_scale=0.9, min_scale=MIN, rngs=nnx.Rngs(0), **kwargs)


def test_the_default_is_inside_and_unchanged():
    """The default keeps the box inside (`t = (1 - s) tanh(z)`); both start at the centred box
    of half-side 0.9, and the same raw output gives "inside"'s translation by default."""
    default, free = make(), make(translation="free")
    assert default.transformer.loc_net.translation == "inside"
    assert models.inside_attention(raw_at(0.9, 1.0, 1.0), MIN, MAX).tolist() == \
        models.inside_attention(raw_at(0.9, 1.0, 1.0), MIN, MAX, "inside").tolist()
    images = jnp.asarray(np.random.default_rng(0).random((2, 84, 84, 1)), jnp.float32)
    for model in (default, free):
        np.testing.assert_allclose(model(images)["theta"], [[0.9, 0, 0]] * 2, atol=1e-5)
    # the regression's bias is the raw start: shift it, and the two models move differently
    for model in (default, free):
        bias = model.transformer.loc_net.regression.bias
        bias.value = bias.value.at[1].add(2.0)
    np.testing.assert_allclose(default(images)["theta"][:, 1], 0.1 * np.tanh(2.0), atol=1e-5)
    np.testing.assert_allclose(free(images)["theta"][:, 1], np.tanh(2.0), atol=1e-5)


def test_a_bad_translation_is_refused():
    with pytest.raises(ValueError, match="translation='wrap' is unknown; expected one of "
                                         "inside, free"):
        make(translation="wrap")
    with pytest.raises(ValueError, match="translation"):
        models.inside_attention(raw_at(0.5, 0, 0), MIN, MAX, "outside")
