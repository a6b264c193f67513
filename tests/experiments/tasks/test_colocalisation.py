"""The co-localisation task's headline metric (appendix A.2: the fraction of the optimised images
localised, IoU > 0.5) and its embedding CNN, a run of its own (named, or cached by
stn.experiments.embedding_cache)."""
import json
import shutil
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


def centre_boxes(centres, half=1 / 3):
    return np.concatenate([centres - half, centres + half], axis=-1).astype(np.float32)


def axis_centred(centres):
    """The centres less each axis's mean, flattened: the 2N pairs the pooled r is taken over."""
    return (centres - centres.mean(axis=0)).ravel()


def correlation_of(predicted, true):
    values = coloc.metrics({"box": jnp.asarray(predicted)}, {"box": jnp.asarray(true)})
    return coloc.set_metrics({k: float(jnp.mean(v)) for k, v in values.items()})


def test_centre_correlation_is_pearsons_r_of_the_centres_pooled_and_per_axis():
    rng = np.random.default_rng(0)
    true_centres = rng.uniform(-0.6, 0.6, (50, 2))
    guessed = 0.5 * true_centres + rng.normal(0, 0.2, (50, 2)) + [0.1, -0.3]
    figures = correlation_of(centre_boxes(guessed, 0.3), centre_boxes(true_centres))
    expected_x = np.corrcoef(guessed[:, 0], true_centres[:, 0])[0, 1]
    expected_y = np.corrcoef(guessed[:, 1], true_centres[:, 1])[0, 1]
    pooled = np.corrcoef(axis_centred(guessed), axis_centred(true_centres))[0, 1]  # 100 pairs
    assert abs(expected_x - expected_y) > 0.01 and 0.3 < pooled < 0.95
    np.testing.assert_allclose(figures["centre_correlation_x"], expected_x, atol=1e-4)
    np.testing.assert_allclose(figures["centre_correlation_y"], expected_y, atol=1e-4)
    np.testing.assert_allclose(figures["centre_correlation"], pooled, atol=1e-4)
    assert not any(k.startswith(coloc.MOMENT) for k in figures)  # the moments are consumed
    # boxes that follow the digits (any size) correlate 1; mirrored ones -1; a fixed box: NaN
    assert correlation_of(centre_boxes(0.5 * true_centres, 0.2),
                          centre_boxes(true_centres))["centre_correlation"] == pytest.approx(1)
    assert correlation_of(centre_boxes(-true_centres),
                          centre_boxes(true_centres))["centre_correlation"] == pytest.approx(-1)
    assert np.isnan(correlation_of(centre_boxes(np.zeros((50, 2))),
                                   centre_boxes(true_centres))["centre_correlation"])


def test_a_fixed_box_off_the_diagonal_does_not_read_as_a_correlation():
    """Boxes that all sit at one place, with x and y centres that differ, beside true centres
    whose axes' means differ too: pooling the raw 2N pairs gave r = 0.05 from the two axes'
    means alone (the "inside" runs that collapsed); each axis centred on its own means, no axis
    has a spread and r is NaN. One axis moving with the digits gives that axis's r."""
    rng = np.random.default_rng(2)
    true_centres = rng.uniform(-0.3, 0.3, (60, 2)) + [0.2, -0.1]
    fixed = np.tile([0.35, -0.4], (60, 1))
    figures = correlation_of(centre_boxes(fixed, 0.2), centre_boxes(true_centres))
    assert np.isnan(figures["centre_correlation"])
    assert np.isnan(figures["centre_correlation_x"]) and np.isnan(figures["centre_correlation_y"])
    follows_x = np.stack([true_centres[:, 0] + rng.normal(0, 0.1, 60), fixed[:, 1]], -1)
    figures = correlation_of(centre_boxes(follows_x, 0.2), centre_boxes(true_centres))
    expected_x = np.corrcoef(follows_x[:, 0], true_centres[:, 0])[0, 1]
    np.testing.assert_allclose(figures["centre_correlation_x"], expected_x, atol=1e-4)
    np.testing.assert_allclose(figures["centre_correlation"], expected_x, atol=1e-4)


def test_evaluation_reports_the_correlation_of_the_whole_set():
    """evaluation.evaluate makes the figure from the whole set's moments: batches of 3 over 7
    images (the last one padded) give numpy's r over the 7, not a mean of batches' r."""
    from stn.experiments import evaluation  # noqa: PLC0415
    import dataclasses  # noqa: PLC0415

    rng = np.random.default_rng(1)
    true_centres = rng.uniform(-0.6, 0.6, (7, 2))
    guessed = true_centres + rng.normal(0, 0.3, (7, 2))
    task = dataclasses.replace(coloc.TASK, forward=lambda model, batch: {"box": batch["guess"]},
                               loss=lambda outputs, batch: jnp.zeros(batch["box"].shape[:1]))
    graphdef, state = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))
    dataset = {"image": np.zeros((7, 2, 2, 1), np.float32), "box": centre_boxes(true_centres),
               "guess": centre_boxes(guessed, 0.25)}
    figures = evaluation.evaluate(task, graphdef, state, dataset, batch_size=3)
    np.testing.assert_allclose(figures["centre_correlation"],
                               np.corrcoef(axis_centred(guessed), axis_centred(true_centres))[0, 1],
                               atol=1e-4)
    np.testing.assert_allclose(figures["centre_correlation_x"],
                               np.corrcoef(guessed[:, 0], true_centres[:, 0])[0, 1], atol=1e-4)
    assert figures["num_examples"] == 7 and "localised" in figures
    assert not any(k.startswith(coloc.MOMENT) for k in figures)


def test_a_bad_translation_is_one_line_naming_the_field():
    config = coloc_config("t,class=3,quick")
    config.model.translation = "wrap"
    with pytest.raises(ValueError, match=r"^config.model.translation='wrap' is unknown; set it to "
                                         r"one of inside, free$"):
        coloc.validate_config(config)
    config.model.translation = "free"
    coloc.validate_config(config)


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- the embedding run
def test_embedding_is_a_classification_run_of_the_recipe():
    """`configs/colocalisation.py:embedding` is the config `init_weights` asks for: task
    classification, the CNN on the co-localisation config's digits after its validation split
    (which the embedding must not see), the recipe in `model.embedding`."""
    config = coloc_config("t,class=3,quick")
    embedding = coloc_config("t,class=3,quick,embedding")
    assert embedding.to_dict() == coloc.embedding_config(config).to_dict()
    assert (embedding.task, embedding.model.name) == ("classification", "cnn")
    assert embedding.data.source == config.data.source == "sample"
    assert (embedding.data.validation_size, embedding.data.validation_seed) == (
        config.data.validation_size, config.data.validation_seed)
    e = config.model.embedding
    assert embedding.data.distortion == e.distortion and embedding.seed == e.seed
    assert (embedding.train.steps, embedding.train.batch_size, embedding.train.learning_rate,
            embedding.train.momentum) == (e.steps, e.batch_size, e.learning_rate, e.momentum)
    assert embedding.train.lr_decay_factor == 1.0  # a constant rate, whatever the steps
    tasks.for_config(embedding).validate_config(embedding)


def _small_coloc(data_dir, **embedding):
    config = coloc_config("t,class=3,quick")
    config.data.source = f"idx:{data_dir}"
    config.data.update(num_train=8, validation_size=100)
    config.model.embedding.update({"steps": 3, "batch_size": 16, **embedding})
    config.train.update(steps=2, batch_size=4, log_every=1, eval_every=2, checkpoint_every=2,
                        num_images=0)
    config.eval.batch_size = 64
    return config


def _embedding_leaves(module):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(module))]


@pytest.mark.slow
def test_a_fresh_run_starts_from_the_named_embedding_run_and_needs_it_no_more(tmp_path, data_dir):
    """`model.embedding.workdir` names a finished run of `configs/colocalisation.py:embedding`:
    a fresh run loads its final weights into the frozen CNN; the run's own checkpoint holds
    them, so eval.py reads no embedding run; a run of another recipe is refused in one line."""
    from stn.experiments import evaluation, training
    config = _small_coloc(data_dir)
    embedding_dir = tmp_path / "embedding"
    training.train_and_evaluate(coloc.embedding_config(config), str(embedding_dir))
    trained, _ = embedding_cache.pretrained_model(
        coloc.embedding_config(config), workdir=str(embedding_dir), cache_dir="", kind="x",
        field="f")
    config.model.embedding.workdir = str(embedding_dir)
    task = tasks.get("colocalisation")
    model = task.make_model(config, (84, 84, 1), nnx.Rngs(0))
    assert not all(np.array_equal(a, b) for a, b in zip(_embedding_leaves(model.embedding),
                                                        _embedding_leaves(trained)))
    task.init_weights(config, model)
    for a, b in zip(_embedding_leaves(model.embedding), _embedding_leaves(trained)):
        np.testing.assert_array_equal(a, b)
    assert not nnx.state(model.embedding, nnx.Param)  # still frozen

    results = training.train_and_evaluate(config, str(tmp_path / "coloc"))
    shutil.rmtree(embedding_dir)
    again = evaluation.evaluate_checkpoint(None, str(tmp_path / "coloc"))
    assert again["test_loss"] == pytest.approx(results["test_loss"], rel=1e-6)

    other = _small_coloc(data_dir, steps=4)
    other.model.embedding.workdir = str(tmp_path / "coloc")  # not an embedding run at all
    with pytest.raises(ValueError, match=r"^config.model.embedding.workdir='.*coloc' is a run of "
                                         r"another config than coloc_embedding_none's \(") as info:
        task.init_weights(other, task.make_model(other, (84, 84, 1), nnx.Rngs(0)))
    assert "\n" not in str(info.value)


def test_the_landscape_scores_a_finished_runs_learned_boxes(tmp_path, data_dir):
    """tools/analyses/coloc_loss_landscape.py --workdir: the run's config and checkpoint give
    the loc net's boxes, whose IoU is the run's own `train_iou`, and whose centres correlate
    with the true ones as `learned_centres` says in float64; the true boxes score IoU 1; the
    centred kind takes the half-side of lowest loss; the random patches' size can be changed."""
    from stn.experiments import training
    landscape = helpers.module_at("tools/analyses/coloc_loss_landscape.py")
    config = _small_coloc(data_dir)
    config.model.translation = "free"
    results = training.train_and_evaluate(config, str(tmp_path / "run"))
    run_config, model, optimised, step = landscape.restored_run(str(tmp_path / "run"))
    assert step == 2 and run_config.model.translation == "free"
    assert model.transformer.loc_net.translation == "free" and model.patch_scale == 0
    sides = (1 / 3, 0.5, 0.9)
    rows = {kind.split(" (")[0]: rest
            for kind, *rest in landscape.learned_boxes(model, optimised, sides, repeats=2)}
    assert set(rows) == {"learned", "true", "centred, best half-side"}
    learned, true, centred = rows["learned"], rows["true"], rows["centred, best half-side"]
    assert learned[1] == pytest.approx(results["train_iou"], abs=1e-5)
    assert learned[2] == pytest.approx(results["train_localised"], abs=1e-6)
    assert true[1] == pytest.approx(1.0, abs=1e-5) and true[2] == 1.0
    assert true[0] == pytest.approx(1 / 3, abs=1e-5)
    images = jnp.asarray(optimised["image"])
    predicted = boxes.attention_box(model.transformer.loc_net(images))
    p = np.asarray(0.5 * (predicted[:, :2] + predicted[:, 2:]))
    q = 0.5 * (optimised["box"][:, :2] + optimised["box"][:, 2:])
    centres = landscape.learned_centres(model, optimised)
    assert centres["r"] == pytest.approx(
        np.corrcoef(axis_centred(p), axis_centred(q))[0, 1], abs=1e-9)
    # After two steps the centres barely move: the run's float32 moments may not resolve them
    # (NaN, recorded as None); where they do, they agree with the float64 passes.
    if results["train_centre_correlation"] is not None:
        assert results["train_centre_correlation"] == pytest.approx(centres["r"], abs=1e-3)
    assert centres["r_x"] == pytest.approx(np.corrcoef(p[:, 0], q[:, 0])[0, 1], abs=1e-4)
    assert centres["sd_y"] == pytest.approx(p[:, 1].std(), abs=1e-6)
    rng = np.random.default_rng(0)  # learned_boxes' draws (seed 0), in order
    draws = [jnp.asarray(rng.uniform(-1, 1, (len(images), 2)), jnp.float32) for _ in range(2)]
    centres = jnp.asarray(q, jnp.float32)
    losses = [landscape.mean_loss(model, images, jnp.concatenate(
        [jnp.full((len(images), 1), side, jnp.float32), centres], -1), draws) for side in sides]
    assert len(set(np.round(losses, 6))) >= 2  # the sizes differ, so "best" is a choice
    assert centred[0] == pytest.approx(sides[int(np.argmin(losses))], abs=1e-6)
    assert centred[3] == pytest.approx(min(losses), rel=1e-5)
    _, other, *_ = landscape.restored_run(str(tmp_path / "run"), patch_scale=0.5)
    truth = boxes.box_attention(jnp.asarray(optimised["box"]))
    assert other.patch_scale == 0.5  # the patches scored are half-side 0.5, not the crop's
    assert not np.allclose(other.outputs_at(images, truth, draws[0])["random_embedding"],
                           model.outputs_at(images, truth, draws[0])["random_embedding"])
    with pytest.raises(ValueError, match="does not exist"):
        landscape.restored_run(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_the_cache_trains_the_embedding_run_once_through_the_trainer(tmp_path, data_dir,
                                                                      monkeypatch):
    """With `model.embedding.workdir` empty, the first run trains the embedding config through
    `train_and_evaluate` into the cache, later ones read it; another recipe is another entry,
    and a cached folder that holds another run is refused in one line."""
    from stn.experiments import training
    calls = []
    real = training.train_and_evaluate

    def counted(config, workdir, **kwargs):
        calls.append(workdir)
        return real(config, workdir, **kwargs)
    monkeypatch.setattr(training, "train_and_evaluate", counted)
    config = _small_coloc(data_dir)
    config.model.embedding.cache_dir = str(tmp_path / "cache")
    task = tasks.get("colocalisation")
    first = task.make_model(config, (84, 84, 1), nnx.Rngs(0))
    task.init_weights(config, first)
    second = task.make_model(config, (84, 84, 1), nnx.Rngs(1))
    task.init_weights(config, second)  # as a second process would: read, not trained again
    assert calls == [embedding_cache.cached_workdir(coloc.embedding_config(config),
                                                    str(tmp_path / "cache"), "embeddings")]
    for a, b in zip(_embedding_leaves(first.embedding), _embedding_leaves(second.embedding)):
        np.testing.assert_array_equal(a, b)

    record = Path(calls[0]) / "results.json"  # a hand-edited or stale folder
    stored = json.loads(record.read_text())
    stored["config"]["train"]["learning_rate"] = 0.5
    record.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"^the cached run in .* is a run of another config "
                                         r"than coloc_embedding_none's \(train.learning_rate "
                                         r"0.5 -> 0.02\); delete that folder to train it again$"):
        task.init_weights(config, second)
    assert len(calls) == 1


def test_cache_root_defaults_and_keys():
    assert embedding_cache.cache_root("/x/y") == "/x/y"
    assert embedding_cache.config_key({"a": 1, "b": 2}) == embedding_cache.config_key(
        {"b": 2, "a": 1})
    assert embedding_cache.config_key({"a": 1}) != embedding_cache.config_key({"a": 2})
