"""Every field of every config file, classed by whether changing it changes the numbers.

`stn.experiments.config_compare.NON_COMPUTATIONAL` decides which fields a rerun, a sweep's skip
and eval.py may see changed, and which fields the tables ignore when they decide that runs
differ only in their seed. The tables below state the class of each field of configs/*.py
(every preset and choice word); a config that gains a field in neither table fails here until
someone says which it is. The harmless class is then checked by training: changing every
harmless training field leaves the parameters and the test numbers bit-identical, while the
validation split (once wrongly listed as harmless) changes them.
"""
import importlib.util
import json
import os

import numpy as np
import pytest

from stn.experiments import config_compare, training
from stn import transforms
from stn.experiments.data import distortions
from stn.experiments.models import addition, mnist, svhn

import helpers

#: Fields that cannot change a run's numbers: its name (a label that nothing but the record
#: reads), how often it logs, evaluates and saves, how many checkpoints and pictures it keeps,
#: how many steps the host lets run ahead, what it also evaluates during training, the
#: evaluation batch (padding is masked; the loss mean may change in its last float bits only),
#: multi-host start-up, where SVHN's archives are read from when the prepared set is first
#: built, and where co-localisation's cached embedding lives (the cache checks its weights
#: against the config that trained them: tests/experiments/tasks/test_colocalisation.py).
HARMLESS = {
    "name", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.num_images", "train.max_steps_in_flight", "eval.batch_size",
    "eval.test_during_training", "distributed", "data.manual_dir", "model.embedding.cache_dir",
}
#: Fields that change the numbers: the data (which images, which split, which seeds), the
#: model, the optimisation. Paths of data count here: another folder may hold other data.
CHANGES_NUMBERS = {
    "task", "seed",
    # data
    "data.source", "data.distortion", "data.validation_size", "data.validation_seed",
    "data.test_seed", "data.name", "data.variant", "data.crop_size", "data.train_split",
    "data.test_split", "data.tfds_data_dir", "data.max_train_examples",
    "data.max_test_examples", "data.canvas_size", "data.num_test_examples", "data.clutter",
    "data.digit_class", "data.num_train",
    # model
    "model.name", "model.transform", "model.kernel", "model.padding", "model.st_output_size",
    "model.st_pool", "model.loc_lr_multiplier", "model.loc_warmup_steps", "model.features", "model.fc_widths",
    "model.margin", "model.crop_size", "model.descriptor", "model.initial_scale",
    "model.min_scale", "model.max_scale", "model.translation", "model.patch_scale",
    "model.loc_hidden",
    "model.embedding.distortion", "model.embedding.steps", "model.embedding.batch_size",
    "model.embedding.learning_rate", "model.embedding.momentum", "model.embedding.seed",
    "model.embedding.workdir",  # the embedding run (checked against the recipe): a path
    "model.antialias",
    # cub (Table 3): image sizes, the stand-in's clutter, the synthetic miniature, the backbone
    # and its weights file, the boxes' start
    "data.clutter.canvas", "data.clutter.pieces", "data.clutter.scale_max",
    "data.clutter.scale_min", "data.clutter.seed", "data.clutter.test_limit",
    "data.clutter.train_limit", "data.flip", "data.image_size", "data.num_classes",
    "data.store_size", "data.synthetic.dir", "data.synthetic.num_classes", "data.synthetic.seed",
    "data.synthetic.test_per_class", "data.synthetic.train_per_class", "model.init_offset",
    "model.init_scale", "model.last_block", "model.loc_size", "model.num_transformers",
    "model.share_backbones", "model.weights", "model.width", "model.bounded_boxes",
    "model.loc_head", "model.view_enlarged", "model.pretrain.steps", "model.pretrain.batch_size",
    "model.pretrain.learning_rate", "model.pretrain.momentum", "model.pretrain.side_min",
    "model.pretrain.side_max", "model.pretrain.jitter", "model.pretrain.pieces", "model.pretrain.held_out",
    "model.pretrain.seed", "model.pretrain.cache_dir", "model.pretrain.workdir",
    # optimisation
    "train.steps", "train.batch_size", "train.learning_rate", "train.momentum",
    "train.weight_decay", "train.grad_clip_norm", "train.lr_decay_every",
    "train.lr_decay_factor", "train.loss_limit", "train.optimizer",
}

#: Each config file with its default and every choice word and preset of its argument.
ARGS = {
    "mnist": [None, *distortions.NAMES, *mnist.MODEL_NAMES, *transforms.names(2), "quick"],
    "mnist_addition": [None, *addition.MODEL_NAMES, *transforms.NAMES, "quick", "reduced",
                       "short"],
    "mnist_sequences": [None, *svhn.MODEL_NAMES, "64px", "128px", "small", "full", "short",
                        "quick"],
    "svhn": [None, "64px", "128px", *svhn.MODEL_NAMES, "smoke"],
    "colocalisation": [None, "t", "tc", "quick", "reduced", "class=5"],
    "cub": [None, "cnn", "2xst_224", "2xst_448", "4xst_448", "2xst_448,smoke", "4xst_448,smoke",
            "2xst_448,standin"],
}


def _config_module(name):
    spec = importlib.util.spec_from_file_location(f"_config_{name}",
                                                  os.path.join(helpers.ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_field() -> dict[str, set[str]]:
    """Dotted field -> the config files (with args) that have it."""
    fields: dict[str, set[str]] = {}
    for name, args in ARGS.items():
        module = _config_module(name)
        for arg in args:
            config = json.loads(json.dumps(module.get_config(arg).to_dict()))
            for field in config_compare.flatten(config):
                fields.setdefault(field, set()).add(f"configs/{name}.py:{arg or ''}")
    return fields


def test_every_config_file_is_covered():
    on_disk = {f[:-3] for f in os.listdir(os.path.join(helpers.ROOT, "configs")) if f.endswith(".py")}
    assert on_disk == set(ARGS), "a config file was added or removed: list its args in ARGS"


def test_every_field_of_every_config_is_classed_once():
    fields = every_field()
    unclassed = {f: sorted(where)[:2] for f, where in fields.items()
                 if f not in HARMLESS | CHANGES_NUMBERS}
    assert not unclassed, (f"fields in no class (add each to HARMLESS or CHANGES_NUMBERS of "
                           f"this test, and to NON_COMPUTATIONAL if harmless): {unclassed}")
    assert not HARMLESS & CHANGES_NUMBERS
    stale = (HARMLESS | CHANGES_NUMBERS) - set(fields)
    assert not stale, f"classed fields no config has any more: {sorted(stale)}"


def test_only_the_harmless_fields_are_ignored_by_the_comparison():
    assert set(config_compare.NON_COMPUTATIONAL) == HARMLESS
    for field in every_field():  # each field changed alone: ignored exactly when harmless
        assert config_compare.differing_fields({field: 1}, {field: 2}) == (
            [] if field in HARMLESS else [field]), field


@pytest.mark.slow
def test_changing_every_harmless_training_field_leaves_the_numbers_bit_identical(tmp_path):
    data_dir = helpers.write_pattern_set(tmp_path / "patterns", n_train=256, n_test=100)
    base = helpers.small_config(data_dir, steps=6, log_every=2, eval_every=3, checkpoint_every=3)
    first = training.train_and_evaluate(base, str(tmp_path / "a"))
    changed = helpers.small_config(data_dir, steps=6, log_every=1, eval_every=2, checkpoint_every=4,
                              keep_checkpoints=1, num_images=0, max_steps_in_flight=5)
    changed.eval.batch_size = 37
    changed.eval.test_during_training = True
    changed.name = base.name + "_renamed"
    assert sorted(config_compare.differing_fields(base.to_dict(), changed.to_dict(),
                                                  ignore=())) == sorted(
        HARMLESS - {"distributed", "data.manual_dir", "model.embedding.cache_dir"})  # each one here changed
    second = training.train_and_evaluate(changed, str(tmp_path / "b"))
    for a, b in zip(helpers.final_params(tmp_path / "a", base),
                    helpers.final_params(tmp_path / "b", changed)):
        np.testing.assert_array_equal(a, b)
    for key in ("test_error", "validation_error"):
        assert first[key] == second[key], key
    for key in ("test_loss", "validation_loss"):  # another evaluation batch: float rounding
        np.testing.assert_allclose(first[key], second[key], rtol=1e-6)
    # The validation split is not harmless: it changes which digits train the model.
    other = helpers.small_config(data_dir, steps=6, log_every=2, eval_every=3, checkpoint_every=3)
    other.data.validation_size = 50
    assert config_compare.differing_fields(base.to_dict(), other.to_dict()) == [
        "data.validation_size"]
    training.train_and_evaluate(other, str(tmp_path / "c"))
    assert any(not np.array_equal(a, b) for a, b in zip(
        helpers.final_params(tmp_path / "a", base), helpers.final_params(tmp_path / "c", other)))


@pytest.mark.parametrize("name", sorted(ARGS))
def test_every_float_field_refuses_nan(name, tmp_path):
    """Over every config file: each float field set to NaN is refused by its name
    before anything is written."""
    config = _config_module(name).get_config(None)
    floats = [f for f, v in config_compare.flatten(config.to_dict()).items()
              if isinstance(v, float)]
    assert floats
    for field in floats:
        bad = _config_module(name).get_config(None)
        *sections, key = field.split(".")
        target = bad
        for section in sections:
            target = target[section]
        target[key] = float("nan")
        with pytest.raises(ValueError, match=rf"config.{field}=nan"):
            training.train_and_evaluate(bad, str(tmp_path / "run"))
        assert not (tmp_path / "run").exists()


def test_every_config_has_the_optimizer_choice_sgd_by_default(tmp_path):
    """`train.optimizer` in every config file and preset: SGD (the paper's) unless asked, and a
    bad name refused by its field in one line before anything is written."""
    for name, args in ARGS.items():
        module = _config_module(name)
        for arg in args:
            assert module.get_config(arg).train.optimizer == "sgd", f"configs/{name}.py:{arg}"
        bad = module.get_config(None)
        bad.train.optimizer = "rmsprop"
        with pytest.raises(ValueError, match=r"config.train.optimizer='rmsprop' is unknown"):
            training.train_and_evaluate(bad, str(tmp_path / name))
        assert not (tmp_path / name).exists()
