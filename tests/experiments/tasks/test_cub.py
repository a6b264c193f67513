"""Table 3: the CUB data path on miniatures in the official layout, the CNN and
N x ST-CNN models, the configs' rows and the smoke runs."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from safetensors.numpy import save_file

from stn.experiments import tasks

import helpers
from stn import transforms
from stn.backbones import inception_v3, seeded, timm_import
from stn.experiments.data import cub as cub_data
from stn.experiments.models import cub as cub_models
from stn.experiments.tasks import cub as cub_task

ROOT = helpers.ROOT


def cub_config(arg="2xst_448,smoke"):
    import importlib.util
    spec = importlib.util.spec_from_file_location("cub_config", os.path.join(ROOT, "configs",
                                                                             "cub.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def write_layout(root, entries):
    """A hand-written official layout: entries are (id, relative path, class 1.., is_train,
    (height, width)); ids are written in the order given."""
    for image_id, rel, label, train, (h, w) in entries:
        os.makedirs(os.path.join(root, "images", os.path.dirname(rel)), exist_ok=True)
        pixels = np.full((h, w, 3), 40 * label, np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "images", rel))
    for name, column in (("images.txt", 1), ("image_class_labels.txt", 2),
                         ("train_test_split.txt", 3)):
        with open(os.path.join(root, name), "w") as f:
            f.write("".join(f"{e[0]} {e[column]}\n" for e in entries))
    return str(root)


ENTRIES = [(3, "002.B/c.jpg", 2, 0, (30, 50)), (1, "001.A/a.jpg", 1, 1, (40, 20)),
           (2, "001.A/b.jpg", 1, 0, (25, 25)), (4, "002.B/d.jpg", 2, 1, (60, 33))]


def test_read_index_official_layout(tmp_path):
    """Ids sorted whatever the file order, classes from 1 become labels from 0, flags split."""
    index = cub_data.read_index(write_layout(tmp_path, ENTRIES))
    assert index.paths == ["001.A/a.jpg", "001.A/b.jpg", "002.B/c.jpg", "002.B/d.jpg"]
    np.testing.assert_array_equal(index.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(index.is_train, [True, False, False, True])


def test_load_dir_sizes_and_labels(tmp_path):
    images = cub_data.load_dir(write_layout(tmp_path, ENTRIES), 16)
    assert images.train_images.shape == (2, 16, 16, 3) and images.train_images.dtype == np.uint8
    np.testing.assert_array_equal(images.train_labels, [0, 1])
    np.testing.assert_array_equal(images.test_labels, [0, 1])
    assert images.test_images[1].mean() == pytest.approx(80, abs=2)  # class 2's grey level


@pytest.mark.parametrize("damage, message", [
    (lambda r: os.remove(os.path.join(r, "train_test_split.txt")), "train_test_split.txt is missing"),
    (lambda r: open(os.path.join(r, "image_class_labels.txt"), "a").write("9 1\n"),
     "list different image ids \\(e.g. 9\\)"),
    (lambda r: open(os.path.join(r, "images.txt"), "a").write("oops\n"),
     "images.txt:5: expected '<image id> <value>'"),
    (lambda r: os.remove(os.path.join(r, "images", "001.A", "b.jpg")), "cannot read image"),
])
def test_bad_layout_is_one_line(tmp_path, damage, message):
    root = write_layout(tmp_path, ENTRIES)
    damage(root)
    with pytest.raises(ValueError, match=message) as info:
        cub_data.load_dir(root, 8)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, line", [("images.txt", "1 001.A/b.jpg"),
                                        ("image_class_labels.txt", "1 2"),
                                        ("train_test_split.txt", "1 0")])
def test_an_image_id_listed_twice_is_one_line(tmp_path, name, line):
    """A second line for image 1 would relabel it, or move it between train and test (the last
    line winning): refused, naming the file, the line and the id."""
    root = write_layout(tmp_path, ENTRIES)
    with open(os.path.join(root, name), "a") as f:
        f.write(line + "\n")
    with pytest.raises(ValueError, match=rf"^{root}/{name}:5: image id 1 is listed again "
                                         rf"\(first on line 2\)[^\n]*$"):
        cub_data.read_index(root)


def test_a_16_bit_image_is_scaled_to_8_bits(tmp_path):
    """A 16-bit PNG (saved under a .jpg name): its 0..65535 ramp becomes 0..255, not the
    almost-white image Pillow's own conversion gives."""
    root = write_layout(tmp_path, ENTRIES)
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (40, 1))
    Image.fromarray(ramp).save(os.path.join(root, "images", "001.A", "a.jpg"), format="PNG")
    image = cub_data.decode_resized(os.path.join(root, "images", "001.A", "a.jpg"), 40)
    assert image.dtype == np.uint8 and image.shape == (40, 40, 3)
    np.testing.assert_allclose(image[20, :, 0], np.round(ramp[20] / 65535 * 255), atol=1)
    assert image[..., 0].mean() == pytest.approx(127.5, abs=2)


def test_a_decompression_bomb_is_one_line(tmp_path, monkeypatch):
    """An image over Pillow's pixel limit (a 20000x20000 one here is a 40x40 one under a limit
    of 100 pixels) is refused in one line naming the file, not a Pillow traceback."""
    root = write_layout(tmp_path, ENTRIES)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(
        os.path.join(root, "images", "001.A", "a.jpg"))
    with pytest.raises(ValueError, match=r"^cannot read image .*001.A/a.jpg: it is too large to "
                                         r"decode safely \([^\n]*\)$"):
        cub_data.load_dir(root, 8)


def test_miniature_and_task_splits(tmp_path):
    """The synthetic miniature read through dir:, a validation split carved from training, the
    test split fixed (same images whatever the validation size)."""
    config = cub_config()
    config.data.synthetic.dir = str(tmp_path / "mini")
    task = tasks.get("cub")
    data = task.load_data(config)
    s = config.data.synthetic
    n_train = s.num_classes * s.train_per_class - config.data.validation_size
    assert data.train_arrays[0].shape == (n_train, config.data.store_size,
                                          config.data.store_size, 3)
    assert data.validation["image"].shape == (4, 96, 96, 3)
    assert data.test["image"].shape == (s.num_classes * s.test_per_class, 96, 96, 3)
    np.testing.assert_array_equal(np.bincount(data.test["label"]), [s.test_per_class] * 4)
    config.data.validation_size = 8
    other = task.load_data(config)
    np.testing.assert_array_equal(other.test["image"], data.test["image"])
    assert len(other.train_arrays[0]) == n_train - 4


@pytest.mark.slow
def test_train_batch_crops_flips_and_is_pure():
    images = jnp.asarray(np.arange(4 * 6 * 6 * 1).reshape(4, 6, 6, 1) % 251, jnp.uint8)
    labels = jnp.arange(4)
    batch = cub_data.train_batch(images, labels, 0, 3, batch_size=4, size=4)
    again = cub_data.train_batch(images, labels, 0, 3, batch_size=4, size=4)
    np.testing.assert_array_equal(batch["image"], again["image"])
    assert batch["image"].shape == (4, 4, 4, 1) and batch["image"].dtype == jnp.float32
    source = np.asarray(images, np.float32) / 255.0
    for crop, label in zip(np.asarray(batch["image"]), np.asarray(batch["label"])):
        windows = [source[label, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
        assert any(np.allclose(crop, w) or np.allclose(crop, w[:, ::-1]) for w in windows)
    flipped = []  # whole-image crops: each is its image, or its mirror image
    for step in range(4):
        whole = cub_data.train_batch(images, labels, 0, step, batch_size=4, size=6)
        for crop, label in zip(np.asarray(whole["image"]), np.asarray(whole["label"])):
            same, mirror = np.allclose(crop, source[label]), np.allclose(crop, source[label, :, ::-1])
            assert same != mirror
            flipped.append(mirror)
    assert 0 < sum(flipped) < len(flipped)


@pytest.mark.slow
def test_random_crop_corners_cover_every_position():
    """The crop's top-left corner takes every value 0..limit on each axis (limit = stored side -
    crop side), the last one included: each pixel holds its own row and column."""
    side, size = 9, 5
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    images = jnp.asarray(np.stack([rows, cols], -1)[None].repeat(64, 0), jnp.uint8)
    corners = set()
    for step in range(4):
        batch = cub_data.train_batch(images, jnp.arange(64), 0, step, batch_size=64, size=size,
                                     flip=False)
        corner = np.round(np.asarray(batch["image"])[:, 0, 0] * 255).astype(int)
        corners |= {tuple(c) for c in corner}
    limit = side - size
    assert {r for r, _ in corners} == set(range(limit + 1))
    assert {c for _, c in corners} == set(range(limit + 1))


def test_cluttered_objects_place_each_item_once():
    items = np.zeros((3, 28, 28), np.uint8)
    items[:, 10:18, 10:18] = 200
    canvas, labels = cub_data.cluttered_objects(items, np.arange(3), canvas=60,
                                                scale_range=(1.0, 1.0), clutter=0, seed=0)
    assert canvas.shape == (3, 60, 60, 3)
    assert [(c[..., 0] == 200).sum() for c in canvas] == [64, 64, 64]
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_cluttered_objects_with_boxes_gives_each_items_place():
    """The recorded `(top, left, side)` is exactly the pasted item's footprint (clutter off,
    so every lit pixel is the item's), and the canvases and labels are `cluttered_objects`'."""
    items = np.full((4, 28, 28), 90, np.uint8)
    kwargs = dict(canvas=50, scale_range=(0.5, 1.5), clutter=0, seed=3)
    canvas, labels, places = cub_data.cluttered_objects_with_boxes(items, np.arange(4), **kwargs)
    plain, plain_labels = cub_data.cluttered_objects(items, np.arange(4), **kwargs)
    np.testing.assert_array_equal(canvas, plain)
    np.testing.assert_array_equal(labels, plain_labels)
    assert len(set(places[:, 2].tolist())) > 1  # sides differ
    for image, (top, left, side) in zip(canvas[..., 0], places):
        rows, cols = np.nonzero(image)
        assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (
            top, left, top + side, left + side)


@pytest.mark.slow
def test_models_shapes_initial_boxes_and_grids():
    config = cub_config("4xst_448,smoke")
    model = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 96, 96, 3)), jnp.float32)
    assert model(x).shape == (2, 4)
    grids = model.transformer_grids(x)
    assert len(grids) == 4 and grids[0].shape == (2, 48, 48, 2)
    boxes = cub_models.initial_boxes(4, 0.5, 0.25)
    for k, grid in enumerate(grids):  # zero-kernel regression: the initial boxes exactly
        expected = transforms.get("attention").grid(jnp.asarray(boxes[k])[None], 48, 48)
        np.testing.assert_allclose(np.asarray(grid[:1]), np.asarray(expected), atol=1e-6)
    assert len({tuple(b) for b in boxes.tolist()}) == 4  # the crops start apart
    assert len(model.parts) == 4  # a sub-net per crop
    config.model.share_backbones = True
    assert len(cub_models.get_model(config.model, 4, nnx.Rngs(0)).parts) == 1
    config = cub_config("cnn,smoke")
    cnn = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    assert cnn(x[:, :48, :48]).shape == (2, 4) and cnn.transformer_grids(x) == []


def _weights_file(config, path, seed=5):
    """A timm-style safetensors file for the config's backbones (seeded values, a 1000-way
    head as the published file has); returns its arrays."""
    probe = cub_models.get_model(config.model, int(config.data.num_classes), nnx.Rngs(0))
    shapes = timm_import.checkpoint_shapes(cub_models.backbones(probe)[0])
    width = shapes["Conv2d_1a_3x3.conv.weight"][0]  # any head shape: it is skipped
    arrays = seeded.seeded_weights({**shapes, "fc.weight": (1000, width), "fc.bias": (1000,)},
                                   seed)
    save_file(arrays, str(path))
    return arrays


def test_init_weights_loads_the_file_into_every_backbone(tmp_path):
    config = cub_config("2xst_448,smoke")
    arrays = _weights_file(config, tmp_path / "w.safetensors")
    config.model.weights = str(tmp_path / "w.safetensors")
    task = tasks.get("cub")
    model = task.make_model(config, (96, 96, 3), nnx.Rngs(0))
    found = cub_models.backbones(model)
    assert len(found) == 3  # the loc net's and the two parts'
    key = "Mixed_5d.branch_pool.bn.running_mean"
    assert not np.array_equal(np.asarray(found[0].Mixed_5d.branch_pool.bn.mean[...]), arrays[key])
    task.init_weights(config, model)
    for backbone in found:
        np.testing.assert_array_equal(np.asarray(backbone.Mixed_5d.branch_pool.bn.mean[...]),
                                      arrays[key])


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "does not exist"),
    (lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]),
     "is not a readable safetensors file"),
    (lambda p: p.write_bytes(b"PK\x03\x04 a zip, not weights"), "is not a readable safetensors"),
    (lambda p: (p.unlink(), p.mkdir()), "is a folder, not a safetensors file"),
])
def test_a_bad_weights_file_is_one_line(tmp_path, damage, message):
    """A missing, truncated, foreign or folder `model.weights`: one line naming the field and
    the file, from the importer's one reader (`timm_import.read_safetensors`)."""
    config = cub_config("2xst_448,smoke")
    path = tmp_path / "w.safetensors"
    _weights_file(config, path)
    damage(path)
    config.model.weights = str(path)
    task = tasks.get("cub")
    task.validate_config(config)  # a config check reads no file (eval.py needs none)
    with pytest.raises(ValueError, match=rf"^config.model.weights: {path} {message}") as info:
        task.init_weights(config, task.make_model(config, (96, 96, 3), nnx.Rngs(0)))
    assert "\n" not in str(info.value)


def test_training_from_a_truncated_weights_file_is_one_line(tmp_path):
    """train.py prints a ValueError's one line: the trainer raises it before any step."""
    from stn.experiments import training
    path = tmp_path / "w.safetensors"
    config = _tiny_cnn_run(tmp_path, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"^config.model.weights: {path} is not a readable "
                                         rf"safetensors file \(") as info:
        training.train_and_evaluate(config, str(tmp_path / "run"))
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "run" / "checkpoints").glob("[0-9]*"))  # no step saved


def test_eval_sets_are_test_validation_or_another_copy_of_the_data():
    """eval.py's --data for a CUB run: `dir:PATH` reads another copy (a config override of
    data.source would be refused as another run's config, so it is not offered)."""
    with pytest.raises(ValueError, match=r"^--data must be 'test', 'validation' or 'dir:PATH' "
                                         r"\(another copy of the data in the official layout\)"
                       ) as info:
        cub_task.load_eval_set(cub_config(), "npz:x.npz")
    assert "--config.data.source" not in str(info.value)


def _tiny_cnn_run(tmp_path, weights, steps=2):
    """The CNN row's smoke run, smaller still (a backbone cut after Conv2d_4a_3x3), starting
    from a weights file written at `weights`."""
    config = cub_config("cnn,smoke")
    config.data.synthetic.dir = str(tmp_path / "mini")
    config.model.last_block = "Conv2d_4a_3x3"
    config.train.update(steps=steps, batch_size=4, eval_every=2, checkpoint_every=2,
                        log_every=1, num_images=0)
    _weights_file(config, weights)
    config.model.weights = str(weights)
    return config


@pytest.mark.slow
def test_a_finished_run_needs_its_weights_file_no_more(tmp_path):
    """The checkpoint holds every parameter: once trained, a run is evaluated and resumed with
    its `model.weights` file replaced by other weights or gone, and the numbers of the resumed
    run are those of a run that never stopped; `--data=dir:PATH` evaluates the test split of
    another copy of the data."""
    from stn.experiments import evaluation, training
    weights = tmp_path / "w.safetensors"
    straight = _tiny_cnn_run(tmp_path, weights, steps=4)
    training.train_and_evaluate(straight, str(tmp_path / "straight"))
    stopped = _tiny_cnn_run(tmp_path, weights, steps=2)
    training.train_and_evaluate(stopped, str(tmp_path / "stopped"))
    _weights_file(stopped, weights, seed=9)  # other weights at the same path
    stopped.train.steps = 4
    resumed = training.train_and_evaluate(stopped, str(tmp_path / "stopped"))
    assert resumed["resumed_from_step"] == 2
    for a, b in zip(helpers.final_params(tmp_path / "straight", straight),
                    helpers.final_params(tmp_path / "stopped", stopped)):
        np.testing.assert_array_equal(a, b)
    weights.unlink()
    again = evaluation.evaluate_checkpoint(None, str(tmp_path / "stopped"))
    assert again["test_error"] == resumed["test_error"]
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(tmp_path / "mini", copy)
    other = evaluation.evaluate_checkpoint(None, str(tmp_path / "stopped"), data=f"dir:{copy}")
    assert other["test_error"] == resumed["test_error"] and other["data"] == f"dir:{copy}"


@pytest.mark.parametrize("field, value, message", [
    ("data.source", "cub", "config.data.source='cub' is unknown"),
    ("model.last_block", "Mixed_6b", "config.model.last_block='Mixed_6b' is unknown"),
    ("data.image_size", 200, "config.data.image_size=200 must be in 1..data.store_size"),
    ("model.crop_size", 8, "does not fit"),
    ("model.bounded_boxes", True, None),
])
def test_bad_configs_are_one_line(field, value, message):
    config = cub_config()
    section, key = field.split(".")
    config[section][key] = value
    if message is None:  # bounded boxes with a starting box that leaves the image
        config.model.init_scale, message = 0.9, "bounded_boxes needs 0 < init_scale < max_scale"
    with pytest.raises(ValueError, match=message) as info:
        tasks.get("cub").validate_config(config)
    assert "\n" not in str(info.value)


def test_rows_follow_the_paper():
    rows = {row: cub_config(row) for row in ("cnn", "2xst_224", "2xst_448", "4xst_448")}
    assert rows["cnn"].model.name == "cnn" and rows["cnn"].data.image_size == 224
    for row, (n, size) in {"2xst_224": (2, 224), "2xst_448": (2, 448), "4xst_448": (4, 448)}.items():
        config = rows[row]
        assert (config.model.name, config.model.num_transformers, config.data.image_size) == (
            "st", n, size)
        assert config.model.loc_size == 224 and config.model.crop_size == 224
        assert config.data.num_classes == 200 and not config.model.share_backbones


def _picture_colours(path):
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    from stn.experiments import pictures
    return [bool(np.all(pixels == np.asarray(c, np.uint8), axis=1).any()) for c in pictures.OUTLINES]


@pytest.mark.slow
@pytest.mark.parametrize("row, boxes", [("2xst_448", 2), ("4xst_448", 4)])
def test_smoke_run_writes_results_and_boxes(tmp_path, row, boxes):
    """The issue's done-when: `train.py --config=configs/cub.py:<row>,smoke` runs offline on
    the CPU, writes results.json with test_error and a picture with one box per transformer."""
    workdir = tmp_path / "run"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the synthetic miniature lands here
    proc = subprocess.run([sys.executable, "train.py", f"--config=configs/cub.py:{row},smoke",
                           f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert 0.0 <= results["test_error"] <= 1.0 and results["num_test_examples"] == 12
    colours = _picture_colours(workdir / "images" / "transformer_latest.png")
    assert colours[:boxes] == [True] * boxes and not any(colours[boxes:])


def test_table3_sweep_emits_the_four_rows():
    from stn.experiments import sweeps
    points = sweeps.load_sweep(os.path.join(ROOT, "configs", "sweeps", "table3.py")
                               + ":data=/d/CUB_200_2011,weights=/w.safetensors,steps=800")
    assert [p["config"] for p in points] == [f"configs/cub.py:{r}" for r in
                                             ("cnn", "2xst_224", "2xst_448", "4xst_448")]
    assert points[0]["overrides"] == {"seed": 0, "data.source": "dir:/d/CUB_200_2011",
                                      "model.weights": "/w.safetensors", "train.steps": 800,
                                      "train.lr_decay_every": 300}


def test_table3_puts_runs_in_their_rows(tmp_path):
    """`python -m stn.experiments.results --table=3`: each row's runs in its cell (error %), smoke
    runs left out."""
    from stn.experiments.results import collect, summary
    for row, error in (("cnn", 0.2), ("2xst_224", 0.18), ("2xst_448", 0.16), ("4xst_448", 0.15),
                       ("4xst_448,smoke", 0.5)):
        run = tmp_path / row.replace(",", "_")
        run.mkdir()
        (run / "results.json").write_text(json.dumps(
            {"config": cub_config(row).to_dict(), "test_error": error}))
    runs, _ = collect.collect_results(tmp_path)
    built = summary.build_table(runs, collect.table_spec(3))
    ours = [row[0]["ours"]["mean"] for row in built["cells"]]
    assert ours == pytest.approx([20.0, 18.0, 16.0, 15.0])
    assert [row[0]["paper"] for row in built["cells"]] == [17.7, 16.9, 16.1, 15.9]
    assert len(built["ignored"]) == 1


def test_tfds_caltech_birds_through_mock_data(tmp_path):
    """tfds' own mock data for caltech_birds2011, read TF-free: sizes, labels in 0..199."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        images = cub_data.load_tfds("caltech_birds2011", 24, data_dir=str(tmp_path))
    assert images.train_images.shape == (5, 24, 24, 3) and images.test_images.shape[0] == 5
    assert images.train_images.dtype == np.uint8 and images.train_images.std() > 0
    assert images.train_labels.min() >= 0 and images.train_labels.max() < 200


def test_tfds_not_prepared_is_one_line(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="not prepared as array_record") as info:
        cub_data.load_tfds("caltech_birds2011", 24, data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("row, stored", [("cnn", 48), ("2xst_448", 128)])
def test_standin_source_builds_cluttered_canvases(tmp_path, row, stored):
    """`clutter:idx:DIR` (synthetic items here): 128x128 canvases, down-sampled to 48 for the
    CNN row (its lower-resolution view), validation carved from training, test fixed."""
    from stn.experiments.data import idx
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        items = np.zeros((n, 28, 28), np.uint8)
        items[:, 8:20, 8:20] = rng.integers(100, 255, (n, 1, 1))
        idx.write_split(tmp_path, split, items, np.arange(n) % 10)
    config = cub_config(f"{row},standin")
    config.data.source = f"clutter:idx:{tmp_path}"
    config.data.validation_size = 8
    config.data.clutter.update(train_limit=0, test_limit=0)
    data = tasks.get("cub").load_data(config)
    assert data.train_arrays[0].shape == (32, stored, stored, 3)
    assert data.validation["image"].shape == (8, stored, stored, 3)
    assert data.test["image"].shape == (10, stored, stored, 3)
    np.testing.assert_array_equal(data.test["label"], np.arange(10))


def test_centred_items_sizes_and_places():
    """Each item resized to a side in the range and pasted near the centre, nothing else."""
    items = np.full((50, 28, 28), 200, np.uint8)
    out = cub_data.centred_items(items, canvas=48, side_range=(12, 20), jitter=2, seed=0)
    assert out.shape == (50, 48, 48) and out.dtype == np.uint8
    for canvas in out:
        rows, cols = np.nonzero(canvas)
        side = rows.max() - rows.min() + 1
        assert 12 <= side <= 20 and cols.max() - cols.min() + 1 == side
        assert abs((rows.min() + rows.max()) / 2 - 23.5) <= 2.5  # centred within the jitter
    with pytest.raises(ValueError, match="item sides"):
        cub_data.centred_items(items, canvas=48, side_range=(30, 20), jitter=0, seed=0)


def test_centred_items_clutter_adds_pieces_around_the_same_items():
    """`clutter` pastes that many 8x8 pieces of other items (by maximum) on the canvas: every
    pixel of the uncluttered canvas is kept, and pieces add lit pixels; 0 adds none."""
    items = np.zeros((20, 28, 28), np.uint8)
    items[:, 4:24, 4:24] = np.arange(20, dtype=np.uint8)[:, None, None] * 10 + 50
    plain = cub_data.centred_items(items, canvas=48, side_range=(14, 14), jitter=0, seed=0)
    again = cub_data.centred_items(items, canvas=48, side_range=(14, 14), jitter=0, seed=0,
                                   clutter=0)
    np.testing.assert_array_equal(plain, again)
    cluttered = cub_data.centred_items(items, canvas=48, side_range=(14, 14), jitter=0, seed=0,
                                       clutter=3)
    assert np.all(cluttered >= plain)
    added = (cluttered > 0).sum(axis=(1, 2)) - (plain > 0).sum(axis=(1, 2))
    assert np.all(added >= 0) and added.mean() > 20


def _write_items(folder, n_train=40, n_test=10):
    """Synthetic 28x28 items as IDX files, each one different (its index in its corner)."""
    from stn.experiments.data import idx
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        items = np.zeros((n, 28, 28), np.uint8)
        items[:, 8:20, 8:20] = rng.integers(100, 255, (n, 1, 1))
        items[:, 0, 0], items[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        idx.write_split(folder, split, items, np.arange(n) % 10)
    return str(folder)


def _pretrain_config(tmp_path):
    """The stand-in with a tiny, fast backbone on synthetic items written as IDX files (40
    training items, the first 24 for canvases, the rest for pretraining)."""
    config = cub_config("2xst_448,standin")
    config.data.source = f"clutter:idx:{_write_items(tmp_path / 'items')}"
    config.data.validation_size = 4
    config.data.clutter.update(train_limit=24, test_limit=0)
    config.model.update(width=0.125, last_block="Conv2d_4a_3x3")
    config.model.pretrain.update(steps=2, batch_size=4, held_out=4,
                                 cache_dir=str(tmp_path / "cache"))
    return config


def test_pretrain_config_is_the_standins_recipe():
    """`configs/cub.py:pretrain` is the run every stand-in row asks for: its items (those no
    canvas uses), its backbones' shape and input size, and the recipe of `model.pretrain`
    (SGD 0.05 with momentum 0.9, 1,500 steps of 64, / 10 after 1,000, seed 0)."""
    from stn.experiments.tasks import cub_pretrain
    pretrain = cub_config("pretrain")
    for row in ("cnn", "2xst_448", "4xst_448"):
        assert cub_pretrain.pretrain_config(cub_config(f"{row},standin")).to_dict() == (
            pretrain.to_dict())
    assert (pretrain.task, pretrain.seed) == ("cub_pretrain", 0)
    assert pretrain.data.to_dict() == dict(
        source="sample", first_item=12000, held_out=2000, test_limit=2000, canvas=96,
        side_min=16, side_max=64, jitter=4, pieces=6, num_classes=10)
    assert pretrain.model.to_dict() == dict(width=0.25, last_block="Mixed_5d")
    t = pretrain.train
    assert (t.steps, t.batch_size, t.learning_rate, t.momentum, t.lr_decay_every,
            t.lr_decay_factor, t.weight_decay) == (1500, 64, 0.05, 0.9, 1000, 0.1, 0.0)


def test_the_standin_on_its_default_source_names_the_source_to_set():
    """The standin preset wants 12,000 training items; the embedded sample has 8,000: one line
    naming data.source and what to set it to (before, the canvases were silently fewer and
    the pretraining's message named train_limit)."""
    from stn.experiments.tasks import cub_pretrain
    with pytest.raises(ValueError, match=r"^config.data.clutter.train_limit=12000 asks for more "
                                         r"train items than config.data.source='clutter:sample' "
                                         r"holds \(8000\); .*set config.data.source=clutter:idx:"
                       ) as info:
        tasks.get("cub").load_data(cub_config("2xst_448,standin"))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"^config.data.first_item=12000 .* leaves none of the "
                                         r"8000 training items of sample .*clutter:idx:"):
        cub_pretrain.load_data(cub_config("pretrain"))


def test_pretraining_keeps_its_held_out_items_and_the_canvases_items_apart(tmp_path):
    """The held-out (validation) items, the items pretrained on and the items of the stand-in's
    canvases are compared themselves: no item is in two of them, and together they are every
    training item. (Items on a canvas of their own size with no jitter or clutter are their
    canvas.)"""
    from stn.experiments.data import sources
    from stn.experiments.tasks import cub_pretrain
    config = cub_config("pretrain")
    config.data.update(source=f"idx:{_write_items(tmp_path / 'items', 60)}", first_item=20,
                       held_out=15, canvas=28, side_min=28, side_max=28, jitter=0, pieces=0,
                       test_limit=0)
    data = cub_pretrain.load_data(config)
    as_bytes = lambda images: {np.asarray(x).tobytes() for x in images}  # noqa: E731
    held = as_bytes(np.round(data.validation["image"][..., 0] * 255).astype(np.uint8))
    trained = as_bytes(data.train_arrays[0])
    items = sources.load_digits(config.data.source).train_images
    on_canvases, spare = as_bytes(items[:20]), as_bytes(items[20:])
    assert len(held) == 15 and len(trained) == 25
    assert not held & trained and not (held | trained) & on_canvases
    assert held | trained == spare


@pytest.mark.slow
def test_pretrained_backbone_trained_once_through_the_trainer_and_loaded(tmp_path, monkeypatch):
    """The first fresh stand-in run trains the `cub_pretrain` config once through
    `train_and_evaluate` into the cache (batch-norm statistics learnt); every backbone gets its
    weights through the importer; the next run reads the cache; a cached run of another config,
    or whose final checkpoint is damaged, is refused in one line."""
    from stn.experiments import embedding_cache, training
    from stn.experiments.tasks import cub_pretrain
    calls = []
    real = training.train_and_evaluate

    def counted(config, workdir, **kwargs):
        calls.append(workdir)
        return real(config, workdir, **kwargs)
    monkeypatch.setattr(training, "train_and_evaluate", counted)
    config = _pretrain_config(tmp_path)
    task = tasks.get("cub")
    task.validate_config(config)
    model = task.make_model(config, None, nnx.Rngs(0))
    task.init_weights(config, model)
    pretraining = cub_pretrain.pretrain_config(config)
    folder = embedding_cache.cached_workdir(pretraining, str(tmp_path / "cache"), "backbones")
    assert calls == [folder]
    record = json.loads(open(os.path.join(folder, "results.json")).read())
    assert record["task"] == "cub_pretrain" and 0 <= record["validation_error"] <= 1
    net, _ = embedding_cache.pretrained_model(pretraining, workdir=folder, cache_dir="",
                                              kind="", field="f")
    stored = timm_import.export_arrays(net)
    for backbone in cub_models.backbones(model):  # the loc net's and the two parts'
        np.testing.assert_array_equal(np.asarray(backbone.Conv2d_4a_3x3.bn.var[...]),
                                      stored["Conv2d_4a_3x3.bn.running_var"])
    assert not np.allclose(stored["Conv2d_4a_3x3.bn.running_var"], 1.0)  # statistics learnt
    task.init_weights(config, task.make_model(config, None, nnx.Rngs(1)))
    assert len(calls) == 1  # read from the cache

    results = os.path.join(folder, "results.json")
    edited = json.loads(open(results).read())
    edited["config"]["data"]["side_max"] = 99
    with open(results, "w") as f:
        json.dump(edited, f)
    asked = config.model.pretrain.side_max
    with pytest.raises(ValueError, match=rf"^the cached run in .* is a run of another config "
                                         rf"than cub_pretrain's \(data.side_max 99 -> {asked}\); "
                                         rf"delete that folder to train it again$"):
        task.init_weights(config, model)
    with open(results, "w") as f:
        json.dump(record, f)
    step = os.path.join(folder, "checkpoints", str(config.model.pretrain.steps))
    files = [os.path.join(d, n) for d, _, names in os.walk(step) for n in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:  # a truncated cached backbone
        f.truncate(os.path.getsize(largest) // 2)
    with pytest.raises(ValueError, match=r"^the cached run in .*: its checkpoint does not "
                                         r"restore \(.*\); delete that folder to train it "
                                         r"again$") as info:
        task.init_weights(config, model)
    assert "\n" not in str(info.value) and len(calls) == 1


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.data, "source", "synthetic"), "needs a clutter: source"),
    (lambda c: setattr(c.model, "weights", __file__), "are both set; keep one"),
    (lambda c: setattr(c.data.clutter, "train_limit", 0),
     r"^config.model.pretrain needs training items that no canvas uses: set "
     r"config.data.clutter.train_limit > 0"),
])
def test_bad_pretrain_configs_are_one_line(tmp_path, change, message):
    config = _pretrain_config(tmp_path)
    change(config)
    with pytest.raises(ValueError, match=message) as info:
        tasks.get("cub").validate_config(config)
    assert "\n" not in str(info.value)


def test_bounded_boxes_stay_inside_and_start_as_configured():
    """`bounded_boxes`: whatever the regression outputs, 0 < s < 1 and |t| + s <= 1 (the box
    inside the image); with the zero kernel the grids are the configured boxes."""
    raw = jnp.asarray([[40.0, 40.0, -40.0], [-40.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    boxes = np.asarray(cub_models.bound_boxes(raw))
    assert np.all(boxes[:, 0] > 0) and np.all(boxes[:, 0] <= 1)
    assert np.all(np.abs(boxes[:, 1:]) + boxes[:, :1] <= 1 + 1e-6)
    start = cub_models.initial_boxes(2, 0.5, 0.25)
    np.testing.assert_allclose(np.asarray(cub_models.bound_boxes(
        jnp.asarray(cub_models.unbound_boxes(start)))), start, atol=1e-6)
    config = cub_config("2xst_448,smoke")
    config.model.bounded_boxes = True
    model = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 96, 96, 3)), jnp.float32)
    np.testing.assert_allclose(np.asarray(model.attention(x))[0], start, atol=1e-6)
    capped = np.asarray(cub_models.bound_boxes(raw, 0.5))
    assert np.all(capped[:, 0] <= 0.5) and capped[2, 0] == pytest.approx(0.25)
    small = cub_models.initial_boxes(2, 0.3, 0.25)
    np.testing.assert_allclose(np.asarray(cub_models.bound_boxes(
        jnp.asarray(cub_models.unbound_boxes(small, 0.5)), 0.5)), small, atol=1e-6)
    with pytest.raises(ValueError, match="bounded boxes need 0 < init_scale < max_scale"):
        cub_models.unbound_boxes(cub_models.initial_boxes(2, 1.0, 0.0))
    with pytest.raises(ValueError, match="bounded boxes need 0 < init_scale < max_scale"):
        cub_models.unbound_boxes(start, 0.4)


def test_flattened_loc_head_reads_the_whole_feature_map():
    """`loc_head="flattened"`: the regression reads the flattened feature map (h * w * D
    inputs, not D), so it is told where things are: the output is a linear read of that map."""
    config = cub_config("2xst_448,smoke")
    config.model.loc_head = "flattened"
    model = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    loc = model.loc_net
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 96, 96, 3)), jnp.float32)
    inner = loc.backbone.feature_map(inception_v3.normalise(cub_models.resize_to(x, 48)))
    assert loc.regression.kernel.shape == (int(np.prod(inner.shape[1:])), 6)
    loc.regression.kernel.value = jnp.asarray(
        np.random.default_rng(1).normal(size=loc.regression.kernel.shape), jnp.float32)
    expected = inner.reshape(2, -1) @ loc.regression.kernel[...] + loc.regression.bias[...][None]
    np.testing.assert_allclose(np.asarray(loc(x)), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_soft_argmax_is_the_weighted_mean_of_cell_centres():
    """A map peaked on one cell gives that cell's centre; a flat map gives the image centre;
    two peaks of equal height give their midpoint (hand-computed on a 4x4 map)."""
    peaked = np.full((1, 4, 4, 3), -1e4, np.float32)
    peaked[0, 1, 3, 0] = 0.0         # row 1, column 3: centre (0.75, -0.25)
    peaked[0, :, :, 1] = 0.0         # flat
    peaked[0, 0, 0, 2] = peaked[0, 3, 0, 2] = 0.0  # (-0.75, -0.75) and (-0.75, 0.75)
    centres = np.asarray(cub_models.soft_argmax(jnp.asarray(peaked)))
    np.testing.assert_allclose(centres[0], [[0.75, -0.25], [0.0, 0.0], [-0.75, 0.0]],
                               atol=1e-6)


@pytest.mark.slow
def test_soft_argmax_head_starts_centred_and_moves_towards_the_salient_cell():
    """The soft_argmax head starts every box at the centre with the configured scale; a
    saliency kernel that responds to the feature map moves each centre to the weighted mean of
    the cells it marks, and its gradient reaches the saliency kernel."""
    config = cub_config("2xst_448,smoke")
    config.model.update(loc_head="soft_argmax", init_offset=0.0, init_scale=0.4,
                        bounded_boxes=True, max_scale=0.8)
    model = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    loc = model.loc_net
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 96, 96, 3)), jnp.float32)
    start = np.asarray(model.attention(x))
    np.testing.assert_allclose(start, np.tile([[0.4, 0.0, 0.0]], (2, 2, 1)), atol=1e-6)
    inner = loc.backbone.feature_map(inception_v3.normalise(cub_models.resize_to(x, 48)))
    kernel = np.random.default_rng(1).normal(size=loc.saliency.kernel.shape)
    loc.saliency.kernel.value = jnp.asarray(kernel, jnp.float32)
    expected = cub_models.soft_argmax(inner @ loc.saliency.kernel[...])
    np.testing.assert_allclose(np.asarray(model.attention(x))[..., 1:], np.asarray(expected),
                               rtol=1e-5, atol=1e-5)

    def centre_x(loc):
        return loc(x).reshape(2, 2, 3)[:, 0, 1].sum()
    grads = nnx.grad(centre_x)(loc)
    assert np.any(np.asarray(grads.saliency.kernel.value))


def test_soft_argmax_head_with_an_offset_is_refused_in_one_line():
    config = cub_config("2xst_448,smoke")
    config.model.update(loc_head="soft_argmax", init_offset=0.25)
    with pytest.raises(ValueError, match=r"^config.model.loc_head='soft_argmax' starts every box "
                                         r"at the centre: set config.model.init_offset to 0"):
        cub_task.validate_config(config)
    config.model.update(loc_head="corner")
    with pytest.raises(ValueError, match=r"^config.model.loc_head='corner' is unknown"):
        cub_task.validate_config(config)


def test_enlarged_view_holds_no_more_than_the_view():
    """`view(x, 12, 24)`: the 12x12 view resized to 24x24; it equals enlarging the 12x12 view
    itself, so two images with the same 12x12 view give the same enlarged view."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(2, 48, 48, 3)), jnp.float32)
    small = cub_models.view(x, 12)
    assert small.shape == (2, 12, 12, 3)
    enlarged = cub_models.view(x, 12, 24)
    assert enlarged.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(np.asarray(enlarged),
                               np.asarray(cub_models.resize_to(small, 24)), atol=1e-6)


def test_view_enlarged_reaches_the_cnn_and_the_loc_net_but_not_the_crops():
    """With `view_enlarged`, the CNN's backbone and the loc net's see the enlarged view (their
    outputs equal the backbone on `view(...)`), the part nets still see crop_size crops."""
    config = cub_config("2xst_448,smoke")
    config.model.update(view_enlarged=64, loc_head="flattened")
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 96, 96, 3)), jnp.float32)
    st = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    inner = st.loc_net.backbone.feature_map(inception_v3.normalise(cub_models.view(x, 48, 64)))
    assert st.loc_net.regression.kernel.shape[0] == int(np.prod(inner.shape[1:]))
    assert st.transformer_grids(x)[0].shape == (2, 48, 48, 2)
    config.model.name = "cnn"
    cnn = cub_models.get_model(config.model, 4, nnx.Rngs(0))
    small = x[:, ::2, ::2]
    expected = cnn.classifier(cnn.backbone.features(inception_v3.normalise(
        cub_models.resize_to(small, 64))))
    np.testing.assert_allclose(np.asarray(cnn(small)), np.asarray(expected), atol=1e-5)
    config.model.view_enlarged = -1
    with pytest.raises(ValueError, match=r"^config.model.view_enlarged=-1 must be >= 0"):
        cub_task.validate_config(config)


def test_box_statistics_of_hand_made_boxes():
    """tools/analyses/cub_standin_boxes.py's measure: a box exactly on each item covers all of it,
    follows it (centre correlation 1) and zooms `crop / (s * canvas)`; a fixed box in a corner
    covers only the items that reach into it and does not follow them."""
    module = helpers.module_at("tools/analyses/cub_standin_boxes.py")
    canvas = 100
    places = np.array([[10, 20, 20], [50, 60, 30], [0, 0, 40]])  # (top, left, side)
    half = places[:, 2] / canvas
    centre_x = (places[:, 1] + places[:, 2] / 2) / canvas * 2 - 1
    centre_y = (places[:, 0] + places[:, 2] / 2) / canvas * 2 - 1
    on_item = np.stack([half, centre_x, centre_y], axis=1)
    corner = np.tile([[0.2, -0.8, -0.8]], (3, 1))  # pixels 0..19 on both axes
    stats = module.box_statistics(np.stack([on_item, corner], axis=1), places, canvas, 48)
    assert stats[0]["covered_mean"] == pytest.approx(1.0)
    assert stats[0]["covered_90"] == 1.0
    assert stats[0]["centre_corr_x"] == pytest.approx(1.0)
    assert stats[0]["zoom_mean"] == pytest.approx(np.mean(48 / (half * canvas)))
    # the corner box: nothing of items 0 and 1, (20 * 20) / (40 * 40) of item 2
    assert stats[1]["covered_mean"] == pytest.approx((0 + 0 + 0.25) / 3)
    assert stats[1]["centre_corr_x"] == 0.0 and stats[1]["scale_std"] == pytest.approx(0.0)
