"""The SVHN input path on a written miniature: crops, batches, and a smoke run of train.py's loop."""
import json

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from stn.experiments.data import svhn_input  # noqa: E402
from stn.experiments.tasks import sequences  # noqa: E402
import helpers  # noqa: E402


def _config(manual, data_dir, **data):
    import configs.svhn as svhn_config  # noqa: PLC0415
    c = svhn_config.get_config("64px,st_cnn_single,smoke")
    c.data.manual_dir = manual
    c.data.tfds_data_dir = str(data_dir)
    c.data.train_split = "train"
    c.train.batch_size = 2  # the miniature holds 3 training images
    c.data.validation_size = 1
    for key, value in data.items():
        c.data[key] = value
    return c


def test_random_and_centre_crops():
    images = np.arange(2 * 8 * 8 * 1, dtype=np.uint8).reshape(2, 8, 8, 1)
    crops = np.asarray(svhn_input.random_crops(images, jax.random.PRNGKey(0), 5))
    assert crops.shape == (2, 5, 5, 1) and crops.dtype == np.float32
    for crop, image in zip(crops, images):  # every crop is a window of its own image
        hits = [(r, c) for r in range(4) for c in range(4)
                if np.allclose(image[r:r + 5, c:c + 5] / 255.0, crop)]
        assert len(hits) == 1
    centre = svhn_input.centre_crops(images, 4)
    np.testing.assert_allclose(centre, images[:, 2:6, 2:6] / 255.0)


@pytest.mark.slow
def test_train_batches_pair_each_image_with_its_own_label():
    """Image i is filled with a value computed from label i; every batch row must agree.

    Catches labels gathered with other indices than the images (e.g. reversed), which
    shape-only tests cannot see.
    """
    n = 20
    labels = np.full((n, 5), 10, np.int32)
    labels[:, 0], labels[:, 1] = np.arange(n) // 10, np.arange(n) % 10
    code = lambda label: 10 * label[..., 0] + label[..., 1] + 1  # noqa: E731  in 1..20
    images = np.broadcast_to(code(labels).astype(np.uint8)[:, None, None, None],
                             (n, 8, 8, 3)).copy()
    seen = []
    for step in range(7):  # 7 batches of 6 cross two epochs of 20
        batch = svhn_input.svhn_train_batch(jax.numpy.asarray(images), jax.numpy.asarray(labels),
                                            3, step, batch_size=6, crop_size=5)
        pixels = np.asarray(batch["image"]) * 255.0
        np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
        from_image = np.round(pixels[:, 0, 0, 0]).astype(int)
        assert (pixels.min(axis=(1, 2, 3)) == pixels.max(axis=(1, 2, 3))).all()
        np.testing.assert_array_equal(from_image, code(np.asarray(batch["label"])))
        seen += from_image.tolist()
    assert sorted(seen[:n]) == list(range(1, n + 1))  # the first epoch visits every example


class _FakeBuilder:
    """The few parts of a prepared tfds builder that `read_split` reads."""

    name = "svhn_multidigit"

    def __init__(self, labels):
        self.builder_config = type("Config", (), {"name": "64px", "size": 4})()
        self._examples = [{"image": np.zeros((4, 4, 3), np.uint8), "label": np.asarray(l)}
                          for l in labels]

    def as_data_source(self, split):
        examples = self._examples

        class Source(list):
            def __getitems__(self, keys):
                return [self[k] for k in keys]

        return Source(examples)


@pytest.mark.parametrize("labels,needle", [
    ([[1, 2, 10, 10, 10], [3, 11, 10, 10, 10]], "11 at index [1, 1]"),
    ([[1, 2, 10, 10, 10], [-1, 10, 10, 10, 10]], "-1 at index [1, 0]"),
    ([[1, 2, 10, 10, 10], [2 ** 40, 10, 10, 10, 10]], f"{2 ** 40} at index [1, 0]"),
    ([], "is empty"),
])
def test_read_split_refuses_bad_labels_and_empty_splits(labels, needle):
    with pytest.raises(ValueError) as e:
        svhn_input.read_split(_FakeBuilder(labels), "test", 0)
    message = str(e.value)
    assert "\n" not in message and needle in message
    assert "svhn_multidigit/64px split 'test'" in message


def test_load_builds_from_manual_dir_and_batches(manual_dir, tmp_path):
    data = sequences.load_data(_config(manual_dir, tmp_path, validation_size=0))
    assert data.input_shape == (54, 54, 3)
    images, labels = data.train_arrays
    assert images.shape == (3, 64, 64, 3) and labels.shape == (3, 5)
    assert data.test["image"].shape == (2, 54, 54, 3) and data.test["image"].dtype == np.float32
    assert sorted(map(tuple, data.test["label"].tolist())) == sorted(
        tuple(d + [10] * (5 - len(d))) for d in helpers.SVHN_EXPECTED["test"].values())
    a = data.train_batch(data.train_arrays, 0, 5)
    b = data.train_batch(data.train_arrays, 0, 5)
    assert a["image"].shape == (2, 54, 54, 3) and a["label"].shape == (2, 5)
    np.testing.assert_array_equal(a["image"], b["image"])


def test_bad_variant_and_manual_dir_raise(tmp_path):
    c = _config(str(tmp_path / "nowhere"), tmp_path)
    with pytest.raises(ValueError, match="manual_dir"):
        sequences.validate_config(c)
    c = _config("", tmp_path, variant="32px")
    with pytest.raises(ValueError, match="variant"):
        sequences.validate_config(c)


@pytest.mark.slow
def test_train_and_evaluate_smoke_on_miniature(manual_dir, tmp_path):
    """The whole SVHN path through stn.experiments.training: builds, trains 3 steps, writes results.json."""
    from stn.experiments import training
    c = _config(manual_dir, tmp_path / "tfds")
    c.model.features = (4, 4, 8, 8, 8, 8, 8, 8)
    c.model.fc_widths = (16,)
    c.train.steps = 3
    c.train.log_every = 3
    c.train.eval_every = 3
    c.train.checkpoint_every = 3
    c.eval.batch_size = 2
    results = training.train_and_evaluate(c, str(tmp_path / "run"))
    assert results["num_test_examples"] == 2
    assert results["test_error"] in (0.0, 0.5, 1.0)  # 2 test sequences
    from stn.experiments import evaluation
    again = evaluation.evaluate_checkpoint(c, str(tmp_path / "run"))
    assert again["test_error"] == results["test_error"]
    assert again["test_loss"] == pytest.approx(results["test_loss"], rel=1e-6)
    with open(tmp_path / "run" / "results.json") as f:
        assert json.load(f)["steps"] == 3
    assert (tmp_path / "run" / "images" / "transformer_latest.png").exists()
