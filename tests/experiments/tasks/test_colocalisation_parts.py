"""Co-localisation: data (stn.experiments.data.colocalisation), model and triplet loss
(stn.experiments.models.colocalisation), on synthetic digits and hand-made embeddings."""
import hashlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import boxes, layers, sampling, transforms
from stn.experiments.data import colocalisation as data
from stn.experiments.data import pipeline
from stn.experiments.data.sources import DigitSet
from stn.experiments.models import colocalisation as models
from stn.experiments.models import mnist, num_params


def synthetic_digits(n, seed=0):
    """uint8 `[n, 28, 28]`: a full-width bar at the top and bottom rows of the 28x28 cell (so
    the ink spans the whole cell) plus a random bar; labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, :] = 200
    images[:, 27, :] = 200
    for image in images:
        col = rng.integers(2, 26)
        image[:, col] = 255
    return images, (np.arange(n) % 10).astype(np.int32)


def digit_set(n_train=400, n_test=100):
    train, train_labels = synthetic_digits(n_train, 0)
    test, test_labels = synthetic_digits(n_test, 1)
    return DigitSet(train, train_labels, test, test_labels, "synthetic")


def compose(digits, clutter, seed=0, pool=None):
    pool = digits if pool is None else pool
    floats = pipeline.to_float(digits)[..., 0]
    return jax.jit(partial(data.compose, clutter=clutter))(
        floats, pipeline.to_float(pool)[..., 0], jax.random.key(seed))


# ----------------------------------------------------------------------------- data
def test_translated_digit_sits_whole_inside_its_true_box():
    digits, _ = synthetic_digits(64)
    images, box = compose(digits, clutter=0)
    assert images.shape == (64, 84, 84, 1) and box.shape == (64, 4)
    # The true box's 28x28 attention crop is exactly the digit, and nothing lies outside it.
    params = boxes.box_attention(box)
    crops = sampling.sample(images, transforms.get("attention").grid(params, 28, 28))
    np.testing.assert_allclose(crops[..., 0], digits / np.float32(255.0), atol=1e-4)
    np.testing.assert_allclose(images.sum((1, 2, 3)), digits.sum((1, 2)) / 255.0, rtol=1e-5)
    assert float(box.min()) >= -1.0 and float(box.max()) <= 1.0
    np.testing.assert_allclose(box[:, 2] - box[:, 0], 2 * 28 / 84, atol=1e-6)
    centres = np.asarray(box[:, :2])
    assert centres.min() < -0.8 and centres[:, 0].max() > 0.1  # positions spread


@pytest.mark.slow
def test_clutter_is_sixteen_6x6_patches_of_pool_digits():
    digits, _ = synthetic_digits(32)
    pool = np.full((5, 28, 28), 77, np.uint8)  # the clutter's grey level marks it
    plain, box = compose(digits, clutter=0, seed=3)
    cluttered, same_box = compose(digits, clutter=data.CLUTTER_PATCHES, seed=3, pool=pool)
    np.testing.assert_array_equal(box, same_box)
    added = np.asarray(cluttered - plain)[..., 0]
    assert np.allclose(added[added > 0], 77 / 255.0 - np.asarray(plain)[..., 0][added > 0])
    counts = (np.asarray(cluttered)[..., 0] == np.float32(77 / 255.0)).sum((1, 2))
    assert counts.max() <= 16 * 36 and counts.min() >= 36
    assert np.all(np.asarray(cluttered) >= np.asarray(plain))  # max-combined


@pytest.mark.slow
def test_class_digits_and_datasets_are_fixed_and_disjoint():
    digits = digit_set()
    sets = data.datasets(digits, digit_class=3, num_train=20, validation_size=100, clutter=16,
                         seed=0)
    assert sets["train"]["image"].shape == (20, 84, 84, 1)
    train, _, held_labels = pipeline.split_validation(digits, 100, seed=0)
    assert len(sets["validation"]["image"]) == int((held_labels == 3).sum())
    assert len(sets["test"]["image"]) == 10
    again = data.datasets(digits, digit_class=3, num_train=20, validation_size=100, clutter=16,
                          seed=0)
    for name in sets:
        for key in ("image", "box", "rand_pos"):
            np.testing.assert_array_equal(sets[name][key], again[name][key])
    # Each training image holds one of the first 20 class-3 training digits left after the
    # validation split, inside its box.
    ours = data.class_digits(train, 3).train_images[:20] / np.float32(255.0)
    crops = sampling.sample(jnp.asarray(sets["train"]["image"]),
                            transforms.get("attention").grid(
                                boxes.box_attention(sets["train"]["box"]), 28, 28))
    assert np.all(np.asarray(crops)[..., 0] >= ours - 1e-5)
    with pytest.raises(ValueError, match="num_train"):
        data.datasets(digits, digit_class=3, num_train=1000, validation_size=100, clutter=0,
                      seed=0)


# A stored hash of the uint8-rounded test set of class 3 (as for the Table-1 test sets):
# threefry keys are platform-independent and the rounding absorbs float round-off.
EXPECTED_TEST_SHA256 = "425581d12926b11dde73f89ba958f07ab2218ad46d3ac072397e681316b27953"


@pytest.mark.slow
def test_test_set_bytes_match_stored_hash():
    test = data.datasets(digit_set(), digit_class=3, num_train=20, validation_size=100,
                         clutter=16, seed=0)["test"]
    quantised = np.round(test["image"] * 255.0).astype(np.uint8)
    digest = hashlib.sha256(quantised.tobytes() + np.round(test["box"] * 84).astype(np.int32)
                            .tobytes()).hexdigest()
    assert digest == EXPECTED_TEST_SHA256


@pytest.mark.slow
def test_train_batches_are_a_function_of_seed_and_step():
    sets = data.datasets(digit_set(), digit_class=1, num_train=30, validation_size=0, clutter=0,
                         seed=0)["train"]
    make = jax.jit(partial(data.train_batch, batch_size=8))
    a = make(sets["image"], sets["box"], 0, 4)
    b = make(sets["image"], sets["box"], 0, 4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = make(sets["image"], sets["box"], 0, 5)
    assert not np.allclose(a["rand_pos"], c["rand_pos"])
    index = np.asarray(pipeline.batch_indices(30, 0, 4, 8))
    np.testing.assert_array_equal(a["box"], sets["box"][index])
    assert a["rand_pos"].shape == (8, 2) and float(jnp.abs(a["rand_pos"]).max()) <= 1.0


@pytest.mark.parametrize("scale", [0.0, 1 / 3])
def test_random_patches_lie_inside_the_image(scale):
    theta = jnp.asarray([[0.5, 0.2, -0.1], [1.7, 0.0, 0.0], [-0.25, 0.9, 0.9]])
    corners = jnp.asarray([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # the extreme positions
    patch = models.random_patch_params(theta, corners, scale)
    side = patch[:, 0]
    expected = [scale] * 3 if scale else [0.5, 1.0, 0.25]  # the crop's |s|, at most 1
    np.testing.assert_allclose(side, expected, atol=1e-6)
    box = boxes.attention_box(patch)
    assert float(box.min()) >= -1 - 1e-6 and float(box.max()) <= 1 + 1e-6
    np.testing.assert_allclose(np.abs(np.asarray(box)).max(axis=1), 1.0, atol=1e-6)  # touches


def test_inside_attention_keeps_the_box_inside_and_inverts():
    raw = jnp.asarray([[-30.0, 40.0, -40.0], [0.0, 0.0, 0.0], [30.0, 0.3, -2.0]])
    theta = models.inside_attention(raw, 0.2)
    assert float(theta[:, 0].min()) >= 0.2 and float(theta[:, 0].max()) <= 1.0
    box = boxes.attention_box(theta)
    assert float(box.min()) >= -1 - 1e-6 and float(box.max()) <= 1 + 1e-6
    np.testing.assert_allclose(models.inside_attention_inverse(theta[1:2], 0.2), raw[1:2],
                               atol=1e-5)
    start = jnp.asarray([[0.5, 0.1, -0.2]])
    np.testing.assert_allclose(
        models.inside_attention(models.inside_attention_inverse(start, 0.2), 0.2), start,
        atol=1e-5)
    capped = models.inside_attention(raw, 0.3, 0.45)
    # float32: a saturated sigmoid gives 0.3 + 0.15 * 1.0 = 0.45000002
    assert float(capped[:, 0].min()) >= 0.3 - 1e-6 and float(capped[:, 0].max()) <= 0.45 + 1e-6
    start = jnp.asarray([[0.4, -0.3, 0.5]])
    np.testing.assert_allclose(models.inside_attention(
        models.inside_attention_inverse(start, 0.3, 0.45), 0.3, 0.45), start, atol=1e-5)


# ----------------------------------------------------------------------------- model and loss
def test_triplet_loss_is_zero_when_the_margin_is_met():
    anchor = jnp.asarray([[0.0, 0.0], [1.0, 1.0]])
    positive = jnp.asarray([[1.0, 0.0], [1.0, 1.5]])   # ||a - p||^2 = 1, 0.25
    negative = jnp.asarray([[2.0, 0.0], [1.0, 3.0]])   # ||a - n||^2 = 4, 4
    np.testing.assert_allclose(models.triplet_hinge_loss(anchor, positive, negative, 1.0),
                               [0.0, 0.0])
    # margin 4: 1 - 4 + 4 = 1 and 0.25 - 4 + 4 = 0.25
    np.testing.assert_allclose(models.triplet_hinge_loss(anchor, positive, negative, 4.0),
                               [1.0, 0.25])


def test_triplet_loss_gradient_pulls_the_positive_and_pushes_the_negative():
    anchor, positive, negative = (jnp.asarray([[0.0, 0.0]]), jnp.asarray([[2.0, 0.0]]),
                                  jnp.asarray([[1.0, 0.0]]))  # violated: 4 - 1 + 1 = 4
    loss = lambda a, p, n: models.triplet_hinge_loss(a, p, n, 1.0).sum()  # noqa: E731
    g_anchor, g_positive, g_negative = jax.grad(loss, argnums=(0, 1, 2))(anchor, positive,
                                                                          negative)
    # d/dp ||a - p||^2 = 2 (p - a) = (4, 0): a descent step moves p towards a
    np.testing.assert_allclose(g_positive, [[4.0, 0.0]])
    # d/dn -||a - n||^2 = -2 (n - a) = (-2, 0): a descent step moves n away from a
    np.testing.assert_allclose(g_negative, [[-2.0, 0.0]])
    np.testing.assert_allclose(g_anchor, [[-2.0, 0.0]])
    # a met margin gives no gradient at all
    far = jnp.asarray([[9.0, 0.0]])
    assert not np.any(np.asarray(jax.grad(loss, argnums=1)(anchor, positive, far)))


def test_colocalisation_loss_averages_the_pairs_of_the_batch():
    crops = jnp.asarray([[0.0], [1.0], [3.0]])
    rand = jnp.asarray([[2.0], [1.0], [3.0]])
    loss = models.colocalisation_loss({"embedding": crops, "random_embedding": rand}, 1.0)
    # n=0: m=1: max(0, 1 - 4 + 1) = 0; m=2: max(0, 9 - 4 + 1) = 6 -> 3
    # n=1: rand is the crop itself (0): m=0: 1 + 1 = 2; m=2: 4 + 1 = 5 -> 3.5
    # n=2: m=0: 9 + 1 = 10; m=1: 4 + 1 = 5 -> 7.5
    np.testing.assert_allclose(loss, [3.0, 3.5, 7.5])
    with pytest.raises(ValueError, match="at least 2"):
        models.colocalisation_loss({"embedding": crops[:1], "random_embedding": rand[:1]})


def make_model(seed=0):
    return models.CoLocaliser((84, 84, 1), mnist.CNN((28, 28, 1), rngs=nnx.Rngs(seed + 1)),
                              rngs=nnx.Rngs(seed))


def test_model_outputs_start_at_the_whole_image():
    model = make_model()
    images = jnp.asarray(np.random.default_rng(0).random((4, 84, 84, 1)), jnp.float32)
    rand = jnp.tile(jnp.asarray([[0.2, -0.1]]), (4, 1))
    out = model(images, rand)
    assert out["theta"].shape == (4, 3) and out["box"].shape == (4, 4)
    assert out["embedding"].shape == out["random_embedding"].shape
    assert out["embedding"].shape == (4, 10 * 10 * 64 + 2 * 2 * 64 + 10)
    np.testing.assert_allclose(out["theta"], jnp.tile(jnp.asarray([[1.0, 0, 0]]), (4, 1)),
                               atol=1e-6)
    np.testing.assert_allclose(out["box"], jnp.tile(jnp.asarray([[-1.0, -1, 1, 1]]), (4, 1)),
                               atol=1e-6)
    assert "random_embedding" not in model(images)
    grids = model.transformer_grids(images)
    assert len(grids) == 1 and grids[0].shape == (4, 28, 28, 2)
    assert len(layers.localisation_paths(model)) == 1


@pytest.mark.slow
def test_bounded_start_and_unit_descriptors():
    model = models.CoLocaliser((84, 84, 1), mnist.CNN((28, 28, 1), rngs=nnx.Rngs(1)),
                               initial_scale=0.5, min_scale=0.2, descriptor="unit",
                               loc_hidden=(16, 16), rngs=nnx.Rngs(0))
    images = jnp.asarray(np.random.default_rng(0).random((3, 84, 84, 1)), jnp.float32)
    out = model(images, jnp.zeros((3, 2)))
    np.testing.assert_allclose(out["theta"], jnp.tile(jnp.asarray([[0.5, 0, 0]]), (3, 1)),
                               atol=1e-5)
    # each of the three layers' blocks has unit norm: squared norm 3
    np.testing.assert_allclose(jnp.sum(jnp.square(out["embedding"]), axis=-1), 3.0, rtol=1e-4)
    with pytest.raises(ValueError, match="descriptor"):
        models.CoLocaliser((84, 84, 1), mnist.CNN((28, 28, 1), rngs=nnx.Rngs(1)),
                           descriptor="cosine", rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_embedding_is_fixed_and_only_the_localiser_is_trained():
    model = make_model()
    trainable = num_params(model)
    loc = sum(x.size for x in jax.tree.leaves(nnx.state(model.transformer.loc_net, nnx.Param)))
    assert trainable == loc < 10_000  # the appendix's small loc net; the CNN is not counted
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.random((4, 84, 84, 1)), jnp.float32),
             "rand_pos": jnp.tile(jnp.asarray([[0.3, 0.3]]), (4, 1))}

    def loss(state):
        outputs = nnx.merge(graphdef, state)(batch["image"], batch["rand_pos"])
        return models.colocalisation_loss(outputs).mean()

    grads = jax.jit(jax.grad(loss))(state)
    flat = {jax.tree_util.keystr(p): np.abs(np.asarray(g)).sum()
            for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]}
    embedding = [v for k, v in flat.items() if "embedding" in k]
    regression = [v for k, v in flat.items() if "regression" in k]
    assert embedding and all(v == 0 for v in embedding)
    assert sum(regression) > 0


def test_the_centre_box_baseline_on_hand_made_boxes():
    """`centre_box_iou` is the IoU of a box of the true box's size centred in the image: worked
    out by hand for a box in a corner, one already centred, and a flat one off centre. Using
    the full side as the half side would give 0.25 for each."""
    from stn.experiments.tasks import colocalisation as task  # noqa: PLC0415

    true = jnp.asarray([[0.0, 0.0, 0.5, 0.5],      # centre box +-0.25: overlap 1/16 of 7/16
                        [-0.2, -0.2, 0.2, 0.2],    # already centred: the same box
                        [-0.6, -0.1, 0.2, 0.1]])   # 0.8 x 0.2: centre box overlap 0.12 of 0.2
    predicted = jnp.asarray([[0.0, 0.0, 0.5, 0.5]] * 3)
    values = task.metrics({"box": predicted}, {"box": true})
    np.testing.assert_allclose(values["centre_box_iou"], [1 / 7, 1.0, 0.6], atol=1e-6)
    np.testing.assert_array_equal(values["centre_box_error"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(values["iou"], [1.0, 0.04 / 0.37, 0.02 / 0.39], atol=1e-6)
    np.testing.assert_array_equal(values["error"], [0.0, 1.0, 1.0])
