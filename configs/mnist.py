"""Distorted MNIST (paper section 4.1, Table 1): FCN / CNN / ST-FCN / ST-CNN on R, RTS, P, E, TC.

    python train.py --config=configs/mnist.py:quick --workdir=/tmp/quick
gives about 13% test error (measured: 13.40% on the 2,000 test digits; ST-CNN affine on RTS,
the embedded 10k-digit sample, 400 SGD steps of batch 64; 48-97 s wall on a 2-core CPU),
against 90% for chance; and writes the transformer picture to /tmp/quick/images/.
The localisation net learns at 0.1x the base rate: at the full rate (lr 0.05) the same run
diverged once the transformer moved (loss back to 2.30 by step 250, 87.75% error).

    python train.py --config=configs/mnist.py:rts,st_cnn,affine --workdir=runs/rts_st_cnn_affine
is the paper's recipe for one cell of Table 1 (paper: 0.5% error on RTS; needs full MNIST via
`tfds:mnist` and 150k steps of batch 256, i.e. an accelerator).

`arg` is comma-separated: a distortion (none, r, rts, p, e, tc), a model (fcn, cnn, st_fcn, st_cnn),
a transform (affine, projective, tps; ST models only), and/or `quick`. Every field can be
overridden on the command line, e.g. `--config.train.steps=1000 --config.data.source=idx:DIR`.
"""
from __future__ import annotations

import ml_collections

DISTORTIONS = ("none", "r", "rts", "p", "e", "tc")  # none: undistorted 28x28 digits
MODELS = ("fcn", "cnn", "st_fcn", "st_cnn")
TRANSFORMS = ("affine", "projective", "tps")


def _parse(arg: str | None) -> dict:
    """`"rts,st_cnn,affine"` -> `{"distortion": "rts", "model": "st_cnn", ...}`."""
    picked = {"distortion": "rts", "model": "st_cnn", "transform": "affine", "quick": False}
    for part in (arg or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "quick":
            picked["quick"] = True
        elif part in DISTORTIONS:
            picked["distortion"] = part
        elif part in MODELS:
            picked["model"] = part
        elif part in TRANSFORMS:
            picked["transform"] = part
        else:
            raise ValueError(
                f"configs/mnist.py: unknown part {part!r} in {arg!r}; expected distortions "
                f"{', '.join(DISTORTIONS)}; models {', '.join(MODELS)}; transforms "
                f"{', '.join(TRANSFORMS)}; or quick")
    return picked


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The config for `arg` (see module docstring); defaults are the paper's recipe."""
    picked = _parse(arg)
    c = ml_collections.ConfigDict()
    st = picked["model"].startswith("st_")
    c.name = "_".join(["mnist", picked["distortion"], picked["model"]]
                      + ([picked["transform"]] if st else []) + (["quick"] if picked["quick"] else []))
    c.seed = 0
    c.distributed = False  # True: call jax.distributed.initialize() (multi-host runs)

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds:mnist"  # or "idx:DIR", "sample"
    c.data.distortion = picked["distortion"]
    c.data.test_seed = 0  # seed of the fixed distorted test set

    c.model = ml_collections.ConfigDict()
    c.model.name = picked["model"]
    c.model.transform = picked["transform"]
    c.model.kernel = "bilinear"
    c.model.padding = "zeros"
    c.model.st_output_size = 0  # 0: the input's size
    c.model.loc_lr_multiplier = 1.0  # scales the localisation net's gradient

    # Paper, appendix A.1: SGD, batch 256, lr 0.01 divided by 10 every 50k steps, 150k steps,
    # no weight decay, no dropout. Momentum is not stated there; 0 keeps plain SGD.
    c.train = ml_collections.ConfigDict()
    c.train.steps = 150_000
    c.train.batch_size = 256
    c.train.learning_rate = 0.01
    c.train.momentum = 0.0
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 0.0  # off; > 0 clips the gradient's global norm
    c.train.lr_decay_every = 50_000
    c.train.lr_decay_factor = 0.1
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5_000
    c.train.keep_checkpoints = 3
    c.train.num_images = 16  # test inputs shown in the picture at each evaluation

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 1000

    if picked["quick"]:
        c.data.source = "sample"
        c.train.steps = 400
        c.train.batch_size = 64
        c.train.learning_rate = 0.02
        c.train.momentum = 0.9
        c.train.lr_decay_every = 300
        c.model.loc_lr_multiplier = 0.1  # as reimplementations advise; stable, see docstring
        c.train.log_every = 50
        c.train.eval_every = 200
        c.train.checkpoint_every = 200
        c.eval.batch_size = 500
    return c
