"""Co-localisation (paper appendix A.2, Table 5): an attention transformer trained without labels.

    python train.py --config=configs/colocalisation.py:tc,class=3,quick --workdir=/tmp/coloc

first trains the embedding CNN on digit classification (printing its test error), then the
transformer's localisation net on 100 cluttered 84x84 images of threes by the triplet loss,
and reports the fraction of test images whose predicted box misses the true one (IoU <= 0.5)
beside `centre_box_error`, a fixed centred box's; the picture shows predicted (red) and true
(green) boxes. docs/addition_colocalisation.md gives measured numbers.
`python eval.py ... --data=train` measures the images optimised on, as the paper does
(paper: 100% localised on T, 75-93% on TC depending on the class).

`arg` is comma-separated: `t` (translated digits) or `tc` (with 16 clutter patches),
`class=K` (the digit class, default 3) and/or a preset: `quick` (a check that it localises)
or `reduced` (the CPU budget of configs/sweeps/colocalisation.py). Every field can be
overridden. Choices the paper leaves open are marked (unstated); docs/paper_appendix.md lists
what it states.
"""
from __future__ import annotations

import ml_collections

from stn import config_args
from stn.data import colocalisation

CLUTTER = {"t": 0, "tc": colocalisation.CLUTTER_PATCHES}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config for `arg` (see module docstring)."""
    picked = config_args.parse(arg, where="configs/colocalisation.py",
                               choices={"data": tuple(CLUTTER), "preset": ("quick", "reduced")},
                               data="tc", preset=None, **{"class": 3})
    c = ml_collections.ConfigDict()
    c.name = "_".join(["coloc", picked["data"], f"class{picked['class']}"]
                      + ([picked["preset"]] if picked["preset"] else []))
    c.task = "colocalisation"
    c.seed = 0
    c.distributed = False  # True: call jax.distributed.initialize() (multi-host runs)

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds:mnist"  # or "idx:DIR", "sample"
    c.data.digit_class = int(picked["class"])
    c.data.clutter = CLUTTER[picked["data"]]  # 6x6 patches of other digits per image
    c.data.num_train = 100  # images of the class optimised on (appendix A.2)
    # Training digits (all classes) held out for choosing recipes (unstated).
    c.data.validation_size = 1000
    c.data.validation_seed = 0
    c.data.test_seed = 0  # seed of the fixed image sets

    c.model = ml_collections.ConfigDict()
    c.model.name = "colocaliser"
    c.model.crop_size = 28  # the embedding CNN's input (unstated)
    c.model.kernel = "bilinear"
    c.model.margin = 1.0  # alpha (appendix A.2)
    c.model.initial_scale = 1.0  # the crop starts as the centred box of this half-side
    c.model.descriptor = "raw"  # or "unit": each layer's activations scaled to unit norm
    # I_n^rand's half-side (unstated): 0 = the crop's own, else fixed (1/3: the digit's).
    c.model.patch_scale = 0.0
    # > 0: the crop is kept inside the image with half-side in (min_scale, 1) (unstated)
    c.model.min_scale = 0.0
    c.model.loc_hidden = (8, 8)  # the loc net's two fully connected layers (appendix A.2)
    c.model.loc_lr_multiplier = 1.0  # the loc net is all that trains
    # The embedding: section 4.1's CNN trained on digit classification first, then fixed. On
    # which distortion, and how long (unstated): plain 28x28 digits.
    c.model.embedding = ml_collections.ConfigDict()
    c.model.embedding.distortion = "none"
    c.model.embedding.steps = 2000
    c.model.embedding.batch_size = 64
    c.model.embedding.learning_rate = 0.02
    c.model.embedding.momentum = 0.9

    # "SGD on random pairs" (appendix A.2); batch, rate and length (unstated).
    c.train = ml_collections.ConfigDict()
    c.train.steps = 2000
    c.train.batch_size = 16
    c.train.learning_rate = 0.01
    c.train.momentum = 0.9
    c.train.weight_decay = 0.0  # must stay 0: the embedding is fixed
    c.train.grad_clip_norm = 0.0  # off; > 0 clips the gradient's global norm
    c.train.lr_decay_every = 1500
    c.train.lr_decay_factor = 0.1
    c.train.loss_limit = 1e6  # squared distances of long descriptors: large but finite
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3
    c.train.num_images = 16  # test images shown in the picture at each evaluation
    c.train.max_steps_in_flight = 0  # 0: 50 on a GPU/TPU, 1 on the CPU

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 250
    c.eval.test_during_training = False  # True: the test set too at every evaluation

    if picked["preset"]:
        c.data.source = "sample"
    if picked["preset"] == "quick":
        c.model.embedding.steps = 500
        c.train.steps = 300
        c.train.lr_decay_every = 225
        c.train.log_every = 50
        c.train.eval_every = 150
        c.train.checkpoint_every = 150
    return c
