"""The offline SVHN stand-in: sequences of 1-5 real MNIST digits (`stn.experiments.data.mnist_sequences`).

    python train.py --config=configs/mnist_sequences.py:st_cnn_multi --workdir=runs/seq_multi

trains the SVHN sequence models (`stn.experiments.models.svhn`) on 64x64 canvases of digits from the
embedded 10k-digit sample, so the whole SVHN path (data on device, sequence loss, sequence
error, transformer pictures) runs with no download. Default widths are reduced (`small`) so it
runs on a CPU; `full` uses the paper's SVHN widths (an accelerator).

`arg` is comma-separated: a model (cnn, st_cnn_single, st_cnn_multi), a canvas (64px, 128px),
`small` (default) or `full`, and a length: the default (20k steps of 128), `short` (4,000 steps
of 64: 7-20 minutes on a 2-core CPU with --cpu_devices=2, the comparison in docs/reports/svhn.md) or
`quick` (600 steps of 32, a check that the loss falls).

The learning rate is 0.005 (docs/reports/svhn.md: at 0.02 this deep plain ReLU stack dies at once).
Override the base digits with `--config.data.source=idx:DIR` or `tfds:mnist`.
"""
from __future__ import annotations

import ml_collections

from stn.experiments import config_args
from stn.experiments.models import svhn

CANVASES = {"64px": 64, "128px": 128}
SMALL_FEATURES = (16, 16, 32, 32, 48, 48, 48, 48)
SMALL_FC = (256, 256)
FULL_FEATURES = (48, 64, 128, 160, 192, 192, 192, 192)
FULL_FC = (3072, 3072, 3072)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config for `arg` (see module docstring)."""
    picked = config_args.parse(arg, where="configs/mnist_sequences.py",
                               choices={"model": svhn.MODEL_NAMES, "canvas": tuple(CANVASES),
                                        "width": ("small", "full"), "length": ("short", "quick")},
                               model="cnn", canvas="64px", width="small", length=None)
    c = ml_collections.ConfigDict()
    c.name = "_".join(["mnistseq", picked["canvas"], picked["model"], picked["width"]]
                      + ([picked["length"]] if picked["length"] else []))
    c.task = "sequences"
    c.seed = 0
    c.distributed = False

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist_sequences"
    c.data.source = "sample"  # base digits: sample, idx:DIR or tfds:mnist
    c.data.canvas_size = CANVASES[picked["canvas"]]
    c.data.num_test_examples = 2000
    c.data.validation_size = 1000  # base training digits held out; as many sequences of them
    c.data.validation_seed = 0
    c.data.test_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = picked["model"]
    c.model.transform = "affine"
    c.model.kernel = "bilinear"
    # True: stretch the sampling kernel by the grid's footprint where a transformer zooms out
    # (docs/guides/sampling.md, antialiasing); off keeps the paper's plain sampler.
    c.model.antialias = False
    c.model.padding = "zeros"
    full = picked["width"] == "full"
    c.model.features = FULL_FEATURES if full else SMALL_FEATURES
    c.model.fc_widths = FULL_FC if full else SMALL_FC
    c.model.loc_lr_multiplier = 0.1  # as the paper's SVHN models

    c.train, c.eval = config_args.run_sections(
        steps=20_000, batch_size=128, learning_rate=0.005, momentum=0.9, lr_decay_every=8_000,
        eval_every=2_000, checkpoint_every=2_000,
        grad_clip_norm=10.0)  # keeps one bad batch from throwing a transformer off (docs/reports/svhn.md)

    if picked["length"] == "short":
        c.train.steps = 4_000
        c.train.batch_size = 64
        c.train.lr_decay_every = 3_000
        c.train.eval_every = 1_000
        c.train.checkpoint_every = 500
    elif picked["length"] == "quick":
        c.data.num_test_examples = 500
        c.train.steps = 600
        c.train.batch_size = 32
        c.train.lr_decay_every = 10_000
        c.train.log_every = 50
        c.train.eval_every = 600
        c.train.checkpoint_every = 300
    return c
