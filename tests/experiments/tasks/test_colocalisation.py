"""The co-localisation task's headline metric (appendix A.2: the fraction of the optimised images
localised, IoU > 0.5) and its cached embedding CNN (stn.experiments.embedding_cache)."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stn import boxes
from stn.experiments import embedding_cache, tasks
from stn.experiments.tasks import colocalisation as coloc

import helpers

ROOT = Path(helpers.ROOT)


def coloc_config(arg="t,class=3"):
    import importlib.util
    spec = importlib.util.spec_from_file_location("coloc_cfg", ROOT / "configs/colocalisation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


# ----------------------------------------------------------------------------- the metric
def test_localised_fraction_on_hand_made_boxes():
    # True boxes: 28x28 cells on 84x84. Predictions: the true box (IoU 1), the true box shifted
    # by 7 px (IoU 21/35 = 0.6), by 14 px (IoU 14/42 = 1/3), and a box far away (IoU 0):
    # two of four pass IoU > 0.5.
    true = boxes.pixel_box(np.array([0, 28, 56, 0]), np.array([0, 28, 56, 56]), 28, 28, 84, 84)
    shifts = np.array([0, 7, 14, 0])
    left = np.array([0, 28, 56, 56]) - shifts
    left[3] = 56
    predicted = boxes.pixel_box(np.maximum(left, 0), np.array([0, 28, 56, 0]), 28, 28, 84, 84)
    values = coloc.metrics({"box": jnp.asarray(predicted)}, {"box": jnp.asarray(true)})
    np.testing.assert_allclose(values["iou"], [1.0, 0.6, 1 / 3, 0.0], atol=1e-5)
    np.testing.assert_array_equal(values["localised"], [1, 1, 0, 0])
    assert float(values["localised"].mean()) == 0.5
    assert float(values["error"].mean()) == 0.5
    # The baseline: a centred 28x28 box localises only the digit in the middle cell.
    np.testing.assert_array_equal(values["centre_box_error"], [1, 0, 1, 1])
    np.testing.assert_array_equal(values["centre_box_localised"], [0, 1, 0, 0])


def test_the_optimised_images_are_the_tasks_optimised_set():
    # load_data hands the trainer the training images (image, box, rand_pos) as `optimised`,
    # which training.evaluate_run scores as `train_*` and draws at every evaluation.
    config = coloc_config("t,class=3,quick")
    config.data.num_train = 20
    data = tasks.get("colocalisation").load_data(config)
    assert set(data.optimised) == {"image", "box", "rand_pos"}
    np.testing.assert_array_equal(data.optimised["image"], data.train_arrays[0])
    np.testing.assert_array_equal(data.optimised["box"], data.train_arrays[1])
    assert tasks.Data.__dataclass_fields__["optimised"].default is None  # other tasks: none


# ----------------------------------------------------------------------------- the cache
@pytest.fixture
def counted_training(monkeypatch):
    """`train_embedding` replaced by a counter returning a fixed random CNN (no training)."""
    calls = []

    def fake_train(spec):
        calls.append(spec)
        state = nnx.split(coloc._embedding_cnn(spec["distortion"], 7))[1]
        return jax.device_get(state), {"test_error": 0.25}

    monkeypatch.setattr(coloc, "train_embedding", fake_train)
    coloc._cached_embedding.cache_clear()
    yield calls
    coloc._cached_embedding.cache_clear()


def test_cached_embedding_is_trained_once_and_reused(tmp_path, counted_training):
    config = coloc_config()
    config.model.embedding.cache_dir = str(tmp_path)
    first, record = coloc.pretrained_embedding(config)
    coloc._cached_embedding.cache_clear()  # as a second process (a run, then eval.py) would
    second, again = coloc.pretrained_embedding(config)
    assert len(counted_training) == 1
    assert record["folder"] == again["folder"] and again["test_error"] == 0.25
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(a, b)
    # The model is built on the cached weights, not on fresh ones.
    model = coloc.make_model(config, (84, 84, 1), nnx.Rngs(0))
    np.testing.assert_array_equal(model.embedding.classifier.kernel.get_value(),
                                  first["classifier"]["kernel"].get_value())
    assert len(counted_training) == 1
    # Another embedding recipe is another cache entry, trained once too.
    config.model.embedding.steps = 17
    coloc.pretrained_embedding(config)
    assert len(counted_training) == 2


def test_cached_embedding_with_another_stored_config_is_refused(tmp_path, counted_training):
    config = coloc_config()
    config.model.embedding.cache_dir = str(tmp_path)
    _, record = coloc.pretrained_embedding(config)
    path = Path(record["folder"]) / "config.json"
    stored = json.loads(path.read_text())
    stored["config"]["steps"] = 1
    path.write_text(json.dumps(stored))
    coloc._cached_embedding.cache_clear()
    with pytest.raises(ValueError, match=r"^the cached embedding in .* was trained with another "
                                         r"config \(steps: stored 1, asked \d+\)") as info:
        coloc.pretrained_embedding(config)
    assert "\n" not in str(info.value)
    assert len(counted_training) == 1


def test_cache_root_defaults_and_keys():
    assert embedding_cache.cache_root("/x/y") == "/x/y"
    assert embedding_cache.config_key({"a": 1, "b": 2}) == embedding_cache.config_key(
        {"b": 2, "a": 1})
    assert embedding_cache.config_key({"a": 1}) != embedding_cache.config_key({"a": 2})
