"""Helpers shared by the tests (on sys.path through pytest.ini's `pythonpath`).

- Training: drawn class-dependent 28x28 patterns written as IDX files, a small ST-FCN config
  that reads them, the model at its initialisation and the parameters of a run's checkpoint.
- SVHN: a miniature of format 1 (PNGs and a MATLAB v7.3 digitStruct.mat).
- Sweeps: a stand-in for train.py and a tiny config, sweep files of plain data, the command line.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from PIL import Image

from stn.experiments import checkpointing, parallel, tasks
from stn.experiments.data import idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def module_at(relative_path):
    """The Python file at `relative_path` under the repository root, imported."""
    path = os.path.join(ROOT, relative_path)
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config_module():
    spec = importlib.util.spec_from_file_location("mnist_config", os.path.join(ROOT, "configs",
                                                                               "mnist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pattern_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 28, 28] images: class k is a bright 6x6 block at one of 10 spots, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 120, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + 12 * (k // 5), 2 + 5 * (k % 5)
        jitter = rng.integers(-2, 3, 2)  # neighbouring classes overlap: some errors remain
        images[i, r + jitter[0]:r + jitter[0] + 6, c + jitter[1]:c + jitter[1] + 6] = 255
    return images, labels


def write_pattern_set(directory, n_train=512, n_test=200):
    os.makedirs(directory, exist_ok=True)
    idx.write_split(str(directory), "train", *pattern_digits(n_train, 0))
    idx.write_split(str(directory), "test", *pattern_digits(n_test, 1))
    return str(directory)


def small_config(data_dir, **train):
    config = load_config_module().get_config("none,st_fcn,affine")
    config.data.source = f"idx:{data_dir}"
    config.data.distortion = "none"
    config.data.validation_size = 100
    config.train.update(dict(steps=40, batch_size=32, learning_rate=0.01, momentum=0.9,
                             lr_decay_every=1000, log_every=10, eval_every=20,
                             checkpoint_every=20, num_images=4))
    config.train.update(train)
    config.eval.batch_size = 64
    return config


def fresh_model(config):
    """`(model, graphdef, state)` of the config's model at its initialisation."""
    task = tasks.for_config(config)
    model = task.make_model(config, task.input_shape(config), nnx.Rngs(params=config.seed))
    return (model, *nnx.split(model))


def final_params(workdir, config):
    """Parameter leaves (numpy) of the latest checkpoint in `workdir`."""
    _, _, state = fresh_model(config)
    state = jax.device_put(state, parallel.replicated(parallel.make_mesh()))
    mngr = checkpointing.manager(str(workdir), read_only=True)
    restored, _ = checkpointing.restore(mngr, mngr.latest_step(), state)
    return [np.asarray(x) for x in jax.tree.leaves(restored)]


# --- sweeps ------------------------------------------------------------------------------------

REPO = Path(ROOT)


# A stand-in for train.py with the same flags (ml_collections' config flag, so its config is
# what `config_compare.resolve` gives) and train.py's workdir lock: counts its calls in
# WORKDIR/calls.txt, fails when its config says so, and with `wait_for_signal` waits for
# SIGTERM/SIGINT, then "saves a checkpoint" and exits 130, as train.py does; a rerun then
# resumes from that checkpoint.
FAKE_TRAIN = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    from absl import app, flags
    from ml_collections import config_flags
    from stn.experiments import workdir as workdir_lib
    config_flags.DEFINE_config_file("config", None, "config", lock_config=True)
    flags.DEFINE_string("workdir", None, "workdir")
    flags.DEFINE_integer("cpu_devices", 0, "as train.py's")

    def main(argv):
        with workdir_lib.workdir_lock(flags.FLAGS.workdir):
            train(flags.FLAGS.config, Path(flags.FLAGS.workdir))

    def train(config, workdir):
        with open(workdir.parent / "calls.txt", "a") as f:
            f.write(workdir.name + "\\n")
        print("training", workdir.name, flush=True)
        if config.fail:
            sys.exit("boom: this point fails on purpose")
        (workdir / "config.json").write_text(json.dumps(config.to_dict()))
        checkpoints = workdir / "checkpoints"
        start = max([int(c.name) for c in checkpoints.glob("*")] or [0])
        if config.wait_for_signal and start == 0:
            stop = []
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: stop.append(signum))
            (workdir / "started").write_text(str(os.getpid()))
            deadline = time.time() + 120  # never outlive a failed test for long
            while not stop and time.time() < deadline:
                time.sleep(0.02)
            (checkpoints / "1").mkdir(parents=True)
            print("stopped by signal", stop[0], "; checkpoint saved", flush=True)
            sys.exit(130)
        (workdir / "results.json").write_text(json.dumps({
            "config": config.to_dict(), "test_error": 0.25, "resumed_from_step": start}))

    app.run(main)
""")


TINY_CONFIG = textwrap.dedent("""
    import ml_collections

    def get_config(arg=None):
        c = ml_collections.ConfigDict()
        c.name = arg or "tiny"
        c.seed = 0
        c.fail = arg == "fail"
        c.wait_for_signal = False
        c.train = ml_collections.ConfigDict({"steps": 5, "learning_rate": 0.1, "log_every": 1})
        return c
""")


def sweep_file(tmp_path: Path, args: list[str], **overrides) -> Path:
    """A sweep file of plain data: one point of the tiny config per arg, seeds 0.., plus
    `overrides` (point name -> extra overrides)."""
    config = tmp_path / "tiny_config.py"
    config.write_text(TINY_CONFIG)
    points = [{"name": f"p{i}", "config": f"{config}:{a}",
               "overrides": {"seed": i, "train.steps": 5, **overrides.get(f"p{i}", {})}}
              for i, a in enumerate(args)]
    path = tmp_path / "tiny_sweep.py"
    path.write_text(f"def get_sweep(arg=None):\n    return {points!r}\n")
    return path


def fake(tmp_path: Path) -> Path:
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    return fake


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """python -m stn.experiments.sweeps ARGS, from the repository root unless `cwd` says otherwise."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "stn.experiments.sweeps", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def calls(workdir: Path) -> list[str]:
    path = workdir / "calls.txt"
    return path.read_text().split() if path.exists() else []


# --- SVHN --------------------------------------------------------------------------------------

# (name, image size (h, w), [(left, top, width, height, svhn_label), ...]); label 10 = digit 0.
SVHN_TRAIN = [
    ("1.png", (40, 90), [(10, 5, 12, 25, 1), (24, 6, 12, 25, 9)]),  # "19"
    ("2.png", (30, 30), [(8, 4, 10, 20, 10)]),  # "0": a lone box, stored in place
    ("3.png", (40, 120), [(5 + 15 * i, 5, 12, 25, 1 + i) for i in range(6)]),  # 6 digits
    ("4.png", (40, 100), [(5 + 15 * i, 6, 12, 25, l) for i, l in enumerate([2, 10, 4, 6, 8])]),
]


SVHN_TEST = [
    ("1.png", (36, 60), [(20, 4, 14, 26, 7), (35, 5, 14, 26, 3)]),  # "73"
    ("2.png", (50, 50), [(-3, 30, 15, 30, 5)]),  # box leaving the image: clipped
]


SVHN_EXPECTED = {  # filename -> digits
    "train": {"1.png": [1, 9], "2.png": [0], "4.png": [2, 0, 4, 6, 8]},
    "test": {"1.png": [7, 3], "2.png": [5]},
}


def svhn_pixels(entries):
    """The random RGB pixels of each image of a split, by file name (the same on every call)."""
    rng = np.random.default_rng(len(entries))
    return {name: rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            for name, (h, w), _ in entries}


def write_svhn_split(root, split, entries):
    """`root/split`: the split's PNGs and its digitStruct.mat; `(folder, records)`."""
    from stn.experiments.data.svhn_multidigit import digit_struct
    folder = os.path.join(root, split)
    os.makedirs(folder)
    pixels = svhn_pixels(entries)
    records = []
    for name, _, boxes in entries:
        Image.fromarray(pixels[name]).save(os.path.join(folder, name))
        array = np.array(boxes, np.float64)
        records.append(digit_struct.ImageBoxes(name, array[:, :4], array[:, 4].astype(np.int32)))
    digit_struct.write_digit_struct(os.path.join(folder, "digitStruct.mat"), records)
    return folder, records
