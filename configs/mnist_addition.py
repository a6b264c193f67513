"""MNIST addition (paper appendix A.1, Table 4): the sum of two RTS digits, one per channel.

    python train.py --config=configs/mnist_addition.py:2xst_fcn,affine,quick --workdir=runs/add

trains a 2xST-FCN (two affine transformers in parallel) for a few hundred steps on the embedded
sample and writes, at each evaluation, the picture of each transformer's box on both input
channels beside its output channels (runs/add/images/); chance is 90% error (the most common
sum, 9, is 10% of pairs). docs/reports/appendix.md gives measured numbers.

    python train.py --config=configs/mnist_addition.py:2xst_fcn,tps --workdir=runs/add_2xst_tps
is the paper's setting for its best cell (paper: 5.8% error; full MNIST via `tfds:mnist`; the
appendix names no optimiser settings, so section 4.1's are used: an accelerator).

`arg` is comma-separated: a model (fcn, cnn, st_fcn, st_cnn, 2xst_fcn, 2xst_cnn), a transform
(affine, projective, tps, ...; ST models only) and/or a preset: `quick` (a check that it learns)
, `reduced` (the CPU budget of configs/sweeps/addition.py, one seed) or `short` (the budget of
its three-seed table on a shared CPU, where every model stays near chance). Every field can be overridden,
e.g. `--config.train.steps=1000 --config.data.source=idx:DIR`. Choices the paper leaves open
are marked (unstated); docs/reports/appendix_facts.md lists what it states.
"""
from __future__ import annotations

import ml_collections

from stn.experiments import config_args
from stn import transforms
from stn.experiments.data import distortions
from stn.experiments.models import addition as models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config for `arg` (see module docstring); defaults follow the paper."""
    picked = config_args.parse(
        arg, where="configs/mnist_addition.py",
        choices={"model": models.MODEL_NAMES, "transform": transforms.NAMES,
                 "preset": ("quick", "reduced", "short")},
        model="2xst_fcn", transform="affine", preset=None)
    count = models.transformer_count(picked["model"])
    c = ml_collections.ConfigDict()
    c.name = "_".join(["addition", picked["model"]] + ([picked["transform"]] if count else [])
                      + ([picked["preset"]] if picked["preset"] else []))
    c.task = "addition"
    c.seed = 0
    c.distributed = False  # True: call jax.distributed.initialize() (multi-host runs)

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds:mnist"  # or "idx:DIR", "sample"
    c.data.distortion = "rts"  # each digit's, independently (appendix A.1)
    # Training digits held out for choosing recipes (unstated); 0 for final runs.
    c.data.validation_size = 1000
    c.data.validation_seed = 0
    c.data.test_seed = 0  # seed of the fixed test (and validation) pairs

    c.model = ml_collections.ConfigDict()
    c.model.name = picked["model"]
    c.model.transform = picked["transform"]
    c.model.kernel = "bilinear"
    # True: stretch the sampling kernel by the grid's footprint where a transformer zooms out
    # (docs/guides/sampling.md, antialiasing); off keeps the paper's plain sampler.
    c.model.antialias = False
    c.model.padding = "zeros"
    # Each transformer's output side (unstated): the transformers' outputs together have the
    # input's area, so every FCN classifier has about as many weights as the plain FCN's (the
    # paper keeps the parameter counts about equal): 42 for one transformer, 30 for two.
    c.model.st_output_size = 0  # set below from the canvas (0: the input's size)
    c.model.loc_lr_multiplier = 1.0  # the localisation nets learn at this multiple of the lr

    # The appendix says only "SGD"; section 4.1's recipe (unstated for A.1): batch 256, lr
    # 0.01 divided by 10 every 50k steps, 150k steps, no weight decay; momentum 0.
    c.train = ml_collections.ConfigDict()
    c.train.steps = 150_000
    c.train.batch_size = 256
    c.train.learning_rate = 0.01
    c.train.momentum = 0.0
    c.train.optimizer = "sgd"  # or "adam" (stn.experiments.training.base_optimizer)
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 0.0  # off; > 0 clips the gradient's global norm
    c.train.lr_decay_every = 50_000
    c.train.lr_decay_factor = 0.1
    c.train.loss_limit = 1e4  # a larger (finite) loss stops the run as diverged
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5_000
    c.train.keep_checkpoints = 3
    c.train.num_images = 8  # test pairs shown in the picture at each evaluation
    c.train.max_steps_in_flight = 0  # 0: 50 on a GPU/TPU, 1 on the CPU

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 1000
    c.eval.test_during_training = False  # True: the test set too at every evaluation

    if picked["preset"]:
        # The embedded sample (7,000 training digits after the validation split), batch 64,
        # momentum 0.9, lr 0.05, loc nets at 0.1x: chosen on validation error (docs/
        # addition_colocalisation.md); the lr is divided by 10 at 3/4 of the steps.
        c.data.source = "sample"
        c.train.batch_size = 64
        c.train.momentum = 0.9
        c.train.learning_rate = 0.05
        c.model.loc_lr_multiplier = 0.1
        c.eval.batch_size = 500
    if picked["preset"] == "quick":
        # A check of the whole path in well under a minute: undistorted digits (RTS pairs need
        # thousands of steps before an FCN leaves chance).
        c.data.distortion = "none"
        c.train.steps = 1000
    elif picked["preset"] == "reduced":
        # What a 2-core CPU affords per run: a CNN step costs about 6x an FCN step.
        c.train.steps = 4000 if picked["model"].endswith("cnn") else 20_000
    elif picked["preset"] == "short":
        # What a shared 2-core CPU affords for 3 seeds of the 7-row table in about an hour
        # (docs/reports/appendix.md): a CNN step costs about 5x an FCN step.
        c.train.steps = 600 if picked["model"].endswith("cnn") else 3000
    if picked["preset"]:
        c.train.lr_decay_every = 3 * c.train.steps // 4
        c.train.log_every = c.train.steps // 10
        # Ten validation points per `short` run draw its learning curve (no effect on the
        # numbers); `quick` and `reduced` evaluate twice.
        c.train.eval_every = c.train.steps // (10 if picked["preset"] == "short" else 2)
        c.train.checkpoint_every = c.train.steps // 2
    size = distortions.get(c.data.distortion).canvas_size
    c.model.st_output_size = models.equal_area_output_size(size, count) if count else 0
    return c
