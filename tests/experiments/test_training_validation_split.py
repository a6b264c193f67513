"""No task trains on its validation examples: for every registered task,
with `validation_size > 0`, no image that reaches training is also a validation image.

Compared as images, not indices: the held-out digits are taken where the split hands them out
(`pipeline.split_validation`, which every digit task calls), the training digits where training
gets them (the task's `train_arrays`, or for co-localisation the digits its training canvases
are drawn from); SVHN's split is the task's own, so there the centre crops of the training
images are compared with the validation images themselves.
"""
import importlib.util
import os
import sys

import numpy as np
import pytest

from stn.experiments import tasks
from stn.experiments.data import colocalisation, pipeline, svhn_input

import helpers

try:  # the SVHN miniature (the manual_dir fixture) needs tensorflow_datasets
    import tensorflow_datasets  # noqa: F401
    HAVE_TFDS = True
except ImportError:
    HAVE_TFDS = False


def _config(name, arg, data_dir, **data):
    spec = importlib.util.spec_from_file_location(f"_split_{name}",
                                                  os.path.join(helpers.ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    config.data.source = f"idx:{data_dir}"
    config.data.validation_size = 100
    config.data.update({k: v.format(data_dir=data_dir) if isinstance(v, str) else v
                        for k, v in data.items()})
    return config


CASES = {  # task -> (config file, arg, extra data fields)
    "classification": ("mnist", "none,st_fcn,affine", {}),
    "addition": ("mnist_addition", "quick", {}),
    "sequences": ("mnist_sequences", "quick", {"num_test_examples": 20}),
    "colocalisation": ("colocalisation", "t,quick", {"num_train": 10}),
    # CUB's CPU stand-in: the pattern digits on cluttered canvases, split as canvases
    "cub": ("cub", "cnn,standin", {"source": "clutter:idx:{data_dir}"}),
}


def _rows(images) -> set[bytes]:
    return {np.ascontiguousarray(x).tobytes() for x in np.asarray(images)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return helpers.write_pattern_set(tmp_path_factory.mktemp("patterns"), n_train=512, n_test=40)


#: Tasks whose validation split is checked item by item elsewhere: the CUB stand-in's
#: pretraining holds out its first items (test_cub.py, held-out items kept apart).
CHECKED_ELSEWHERE = {"cub_pretrain"}


def test_every_task_is_checked():
    assert set(CASES) | CHECKED_ELSEWHERE == set(tasks.NAMES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_training_digit_is_a_validation_digit(name, data_dir, monkeypatch):
    held, drawn = [], []
    split = pipeline.split_validation

    def spying_split(*args, **kwargs):
        result = split(*args, **kwargs)
        held.append(result[1])
        return result

    fixed_set = colocalisation.fixed_set

    def spying_fixed_set(images, *args, stream, **kwargs):
        if stream == colocalisation.TRAIN:
            drawn.append(images)
        return fixed_set(images, *args, stream=stream, **kwargs)

    monkeypatch.setattr(pipeline, "split_validation", spying_split)
    monkeypatch.setattr(colocalisation, "fixed_set", spying_fixed_set)
    file, arg, extra = CASES[name]
    config = _config(file, arg, data_dir, **extra)
    if name == "cub":  # every pattern digit makes a canvas (the preset's limits want more)
        config.data.clutter.update(train_limit=0, test_limit=0)
    task = tasks.get(name)
    assert config.task == name
    data = task.load_data(config)
    assert data.validation is not None and len(data.validation["image"])
    [held_digits] = held
    assert len(held_digits) == 100
    training = drawn[0] if name == "colocalisation" else data.train_arrays[0]
    assert len(_rows(helpers.pattern_digits(512, 0)[0])) == 512  # every digit differs from the rest
    assert not _rows(training) & _rows(held_digits)
    assert len(_rows(training)) > 0


@pytest.mark.skipif(not HAVE_TFDS, reason="the SVHN miniature needs tensorflow_datasets")
def test_svhn_trains_on_no_validation_image(manual_dir, tmp_path):  # noqa: F811 (fixture)
    """The sequences task's SVHN path splits by itself: its 3-image miniature, one held out."""
    import configs.svhn as svhn_config  # noqa: PLC0415
    config = svhn_config.get_config("64px,st_cnn_single,smoke")
    config.data.update(manual_dir=manual_dir, tfds_data_dir=str(tmp_path / "tfds"),
                       train_split="train", validation_size=1)
    config.train.batch_size = 2
    data = tasks.get("sequences").load_data(config)
    crops = svhn_input.centre_crops(data.train_arrays[0], int(config.data.crop_size))
    assert len(crops) == 2 and len(data.validation["image"]) == 1
    assert len(_rows(crops) | _rows(data.validation["image"])) == 3  # three different images
    assert not _rows(crops) & _rows(data.validation["image"])
