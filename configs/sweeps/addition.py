"""MNIST addition (appendix A.1, Table 4): every model, each point a configs/mnist_addition.py run.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/addition.py:reduced --workdir=runs/addition_reduced
    python -m stn.experiments.results --workdir=runs/addition_reduced --table=addition

`reduced` (the CPU preset, one seed, the embedded sample): FCN, CNN, ST-FCN Aff, 2xST-FCN Aff /
Proj / TPS and 2xST-CNN Aff, at the `reduced` preset of configs/mnist_addition.py (FCN models
20k steps of 64, CNN models 4k: see docs/reports/appendix.md for the budget and how it
was chosen on validation); `short` the same rows at the `short` preset (3k / 600 steps: the
budget of the three-seed table, `short,first_seed=K` for K = 0, 1, 2). Without either, all 11 rows at the paper's setting (section 4.1's
optimiser; an accelerator).

Argument (comma-separated): `reduced` or `short`, and `key=value` for seeds=N (default 1),
first_seed=K (default 0), data=SOURCE (`idx:DIR`, `tfds:NAME`, `sample`, or a bare folder),
lrs=LIST (learning rates to compare on validation, e.g. `lrs=0.003,0.01`; each point's name
gains `-lrV`; default: the config's rate), optimizer=sgd|adam (`train.optimizer` of every
point, its name gains `-sgd`/`-adam`; default: the config's), e.g. the validation comparison
`reduced,optimizer=sgd,lrs=0.05` against the preset.
"""
from stn.experiments import config_args, sweeps

MODELS = (
    ("fcn", None), ("cnn", None),
    ("st_fcn", "affine"), ("st_fcn", "projective"), ("st_fcn", "tps"),
    ("2xst_fcn", "affine"), ("2xst_fcn", "projective"), ("2xst_fcn", "tps"),
    ("2xst_cnn", "affine"), ("2xst_cnn", "projective"), ("2xst_cnn", "tps"),
)
#: stn.experiments.training.OPTIMIZERS, named here so that loading the sweep does not import JAX.
OPTIMIZERS = ("sgd", "adam")
REDUCED_MODELS = (
    ("fcn", None), ("cnn", None), ("st_fcn", "affine"),
    ("2xst_fcn", "affine"), ("2xst_fcn", "projective"), ("2xst_fcn", "tps"),
    ("2xst_cnn", "affine"),
)


def get_sweep(arg: str | None = None) -> list[dict]:
    """The addition sweep; see the module docstring for the argument."""
    opts = config_args.parse(arg, where="configs/sweeps/addition.py",
                             choices={"preset": ("reduced", "short"), "optimizer": OPTIMIZERS},
                             preset=None, optimizer=None, seeds=1, first_seed=0, data=None, lrs=[])
    models = REDUCED_MODELS if opts["preset"] else MODELS
    try:
        lrs = [float(v) for v in opts["lrs"]]
    except ValueError:
        raise ValueError(f"configs/sweeps/addition.py: lrs={','.join(opts['lrs'])} must be "
                         f"numbers, e.g. lrs=0.003,0.01") from None
    common = {"data.source": sweeps.data_source(opts["data"])} if opts["data"] else {}
    if opts["optimizer"]:
        common["train.optimizer"] = opts["optimizer"]
    points = []
    for axis in sweeps.product(model=models, lr=lrs or [None],
                               seed=range(opts["first_seed"], opts["first_seed"] + opts["seeds"])):
        (model, transform), seed, lr = axis["model"], axis["seed"], axis["lr"]
        tuned = {"train.learning_rate": lr} if lr is not None else {}
        parts = [model] + ([transform] if transform else []) + ([opts["preset"]]
                                                                 if opts["preset"] else [])
        points.append(sweeps.point(
            name="-".join([model] + ([transform] if transform else [])
                          + ([opts["optimizer"]] if opts["optimizer"] else [])
                          + ([f"lr{lr:g}"] if lr is not None else []) + [f"s{seed}"]),
            config="configs/mnist_addition.py:" + ",".join(parts),
            overrides={"seed": seed, **tuned, **common}))
    return points
