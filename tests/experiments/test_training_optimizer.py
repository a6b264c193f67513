"""`train.optimizer` (stn.experiments.training.base_optimizer): SGD by default, Adam on request, one-line
error otherwise; and the stitched picture of the steps (stn.experiments.pictures.stitch_steps)."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from stn.experiments import pictures, training


def config(**train):
    c = ml_collections.ConfigDict()
    c.train = ml_collections.ConfigDict(dict(
        steps=10, batch_size=2, log_every=1, eval_every=1, checkpoint_every=1,
        lr_decay_every=100, keep_checkpoints=1, learning_rate=0.1, momentum=0.0,
        lr_decay_factor=0.1, **train))
    c.model = ml_collections.ConfigDict()
    c.eval = ml_collections.ConfigDict(dict(batch_size=2))
    return c


def first_update(cfg, grad):
    params = {"w": jnp.zeros(3)}
    tx, _ = training.make_optimizer(cfg, params, None)
    updates, _ = tx.update({"w": grad}, tx.init(params), params)
    return np.asarray(updates["w"])


def test_sgd_is_the_default_and_adam_normalises_the_step():
    grad = jnp.asarray([1e-3, -2.0, 0.0])
    np.testing.assert_allclose(first_update(config(), grad), -0.1 * np.asarray(grad), rtol=1e-6)
    np.testing.assert_allclose(first_update(config(optimizer="sgd"), grad),
                               -0.1 * np.asarray(grad), rtol=1e-6)
    # Adam's first step is lr * sign(g) (bias-corrected moments), whatever |g|.
    np.testing.assert_allclose(first_update(config(optimizer="adam"), grad), [-0.1, 0.1, 0.0],
                               rtol=1e-4, atol=1e-6)


def test_unknown_optimizer_is_one_line():
    with pytest.raises(ValueError, match=r"config.train.optimizer='rmsprop' is unknown; set it "
                                         r"to one of sgd, adam"):
        training.validate_train_config(config(optimizer="rmsprop"))


def test_step_pictures_are_stitched_first_to_last(tmp_path):
    for step, grey in ((10, 50), (20, 100), (30, 150), (40, 200)):
        pictures.save_step_picture(Image.new("RGB", (40, 20), (grey,) * 3), str(tmp_path), step)
    picture = pictures.stitch_steps(str(tmp_path), most=3, label_width=10)
    assert picture.size == (50, 60)  # steps 10, 20 or 30, and 40: three of four
    pixels = np.asarray(picture)
    assert pixels[5, 30, 0] == 50 and pixels[55, 30, 0] == 200
    assert pictures.stitch_steps(str(tmp_path / "none")) is None


def test_stitched_steps_carry_their_caption_above_the_frames(tmp_path):
    for step, grey in ((0, 50), (40, 200)):
        pictures.save_step_picture(Image.new("RGB", (200, 20), (grey,) * 3), str(tmp_path), step)
    caption = "the same examples at each step " * 3
    picture = pictures.stitch_steps(str(tmp_path), label_width=10, caption=caption)
    header = picture.height - 40
    assert header >= 2 * pictures.CAPTION_LINE_HEIGHT  # wrapped onto more than one line
    pixels = np.asarray(picture)
    assert (pixels[:header] > 150).any()  # the caption's text, in white on grey
    assert pixels[header + 5, 30, 0] == 50 and pixels[header + 25, 30, 0] == 200
