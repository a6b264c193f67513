"""Resolving a config as train.py does, and the fields in which two runs' configs differ."""
import json
import textwrap
from pathlib import Path

import pytest

from stn.experiments import config_compare

import helpers

REPO = Path(helpers.ROOT)
MNIST = str(REPO / "configs/mnist.py")


def test_resolve_matches_the_config_file_and_parses_overrides_like_train_py():
    import configs.mnist as mnist  # noqa: PLC0415
    assert config_compare.resolve(f"{MNIST}:quick", {}) == json.loads(
        json.dumps(mnist.get_config("quick").to_dict()))
    config = config_compare.resolve(f"{MNIST}:rts,st_cnn,affine", {
        "seed": 3, "train.steps": 7, "train.learning_rate": 0.25, "data.source": "idx:/a b",
        "train.momentum": 1})
    assert config["seed"] == 3 and config["train"]["steps"] == 7
    assert config["train"]["learning_rate"] == 0.25 and config["data"]["source"] == "idx:/a b"
    assert config["train"]["momentum"] == 1.0 and isinstance(config["train"]["momentum"], float)
    assert config["model"]["transform"] == "affine" and config["data"]["distortion"] == "rts"


def test_resolve_makes_tuples_json_lists(tmp_path):
    path = tmp_path / "c.py"
    path.write_text(textwrap.dedent("""
        import ml_collections
        def get_config(arg=None):
            return ml_collections.ConfigDict({"widths": (3, 4), "flag": False})
    """))
    config = config_compare.resolve(str(path), {"flag": True})
    assert config == {"widths": [3, 4], "flag": True}
    assert config_compare.differing_fields(config, {"widths": (3, 4), "flag": True}) == []


@pytest.mark.parametrize("spec,overrides,needle", [
    (f"{MNIST}:quick", {"train.nope": 1}, "names no field"),
    (f"{MNIST}:quick", {"train.steps": "many"}, "invalid literal for int()"),
    (f"{MNIST}:quick", {"train.steps": 2.5}, "invalid literal for int()"),
    (f"{MNIST}:nonsense", {}, "unknown part 'nonsense'"),
    ("configs/nowhere.py", {}, "No such file"),
])
def test_resolve_errors_are_one_line(spec, overrides, needle):
    with pytest.raises(ValueError) as e:
        config_compare.resolve(spec, overrides)
    message = str(e.value)
    assert "\n" not in message and needle in message and spec in message


def test_differing_fields_ignores_what_does_not_change_the_computation():
    old = {"seed": 0, "distributed": False, "name": "x",
           "train": {"steps": 100, "learning_rate": 0.1, "log_every": 10, "eval_every": 50,
                     "checkpoint_every": 50, "keep_checkpoints": 3, "num_images": 16},
           "eval": {"batch_size": 500}, "data": {"source": "sample", "manual_dir": ""}}
    cosmetic = json.loads(json.dumps(old))
    cosmetic["distributed"] = True
    cosmetic["train"].update(log_every=1, eval_every=2, checkpoint_every=3, keep_checkpoints=9,
                             num_images=0)
    cosmetic["eval"]["batch_size"] = 64
    cosmetic["data"]["manual_dir"] = "/elsewhere"
    assert config_compare.differing_fields(old, cosmetic) == []
    changed = json.loads(json.dumps(old))
    changed["seed"] = 1
    changed["train"]["learning_rate"] = 0.5
    changed["data"]["source"] = "idx:/d"
    assert config_compare.differing_fields(old, changed) == [
        "data.source", "seed", "train.learning_rate"]
    assert config_compare.describe(old, changed, ["seed", "train.learning_rate"]) == \
        "seed 0 -> 1, train.learning_rate 0.1 -> 0.5"
    # Everything counts when nothing is ignored.
    assert "eval.batch_size" in config_compare.differing_fields(old, cosmetic, ignore=())


def test_train_steps_may_grow_only_when_asked():
    old = {"train": {"steps": 100, "lr_decay_every": 30}}
    longer = {"train": {"steps": 150, "lr_decay_every": 30}}
    shorter = {"train": {"steps": 50, "lr_decay_every": 30}}
    assert config_compare.differing_fields(old, longer) == ["train.steps"]
    assert config_compare.differing_fields(old, longer, steps_may_grow=True) == []
    assert config_compare.differing_fields(old, shorter, steps_may_grow=True) == ["train.steps"]
    rescheduled = {"train": {"steps": 150, "lr_decay_every": 50}}
    assert config_compare.differing_fields(old, rescheduled, steps_may_grow=True) == [
        "train.lr_decay_every"]


def test_fields_present_on_one_side_only_differ():
    old = {"train": {"steps": 1}}
    new = {"train": {"steps": 1, "max_loss": 1e6}}
    assert config_compare.differing_fields(old, new) == ["train.max_loss"]
    assert config_compare.differing_fields(new, old) == ["train.max_loss"]
    assert config_compare.describe(old, new, ["train.max_loss"]) == \
        "train.max_loss (absent) -> 1000000.0"


def test_antialias_changes_the_numbers_and_its_absence_means_off():
    """model.antialias is computational; a run recorded before the field existed is
    the plain sampler, so it stands for antialias=false and not for true."""
    before = config_compare.resolve("configs/mnist.py:quick", {})
    assert before["model"]["antialias"] is False
    old = json.loads(json.dumps(before))
    del old["model"]["antialias"]
    assert config_compare.differing_fields(old, before) == []
    on = config_compare.resolve("configs/mnist.py:quick", {"model.antialias": True})
    assert config_compare.differing_fields(before, on) == ["model.antialias"]
    assert config_compare.differing_fields(old, on) == ["model.antialias"]
    assert "model.antialias" not in config_compare.NON_COMPUTATIONAL
