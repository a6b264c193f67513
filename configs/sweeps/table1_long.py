"""One cell of Table 1 followed further: RTS CNN and ST-CNN (affine) with table1_cpu.py's tuned
recipe run 10x longer (20,000 steps of 128), validation and test error every 2,000 steps.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table1_long.py --workdir=runs/table1_long --parallel=2
    python -m stn.experiments.results --workdir=runs/table1_long --table=curves

Beside the paper's own recipe on the same cells (configs/sweeps/table1.py:columns=rts,
test_curves=true), this shows how far from converged the CPU table is (docs/reports/results.md).
Argument: steps=N (default 20000), batch=N (default 128), data=SOURCE (default sample).
"""
from pathlib import Path

from stn.experiments import config_args, sweeps

CELLS = (("cnn", None), ("st_cnn", "affine"))


def get_sweep(arg: str | None = None) -> list[dict]:
    """The two long runs."""
    opts = config_args.parse(arg, where="configs/sweeps/table1_long.py", steps=20_000,
                             batch=128, data="sample")
    here = Path(__file__).parent
    cpu = config_args.load_file(here / "table1_cpu.py", "sweep file")
    table1 = config_args.load_file(here / "table1.py", "sweep file")
    points = []
    for model, transform in CELLS:
        steps = opts["steps"]
        overrides = {**cpu.recipe(model, validation_size=1000),
                     "data.source": sweeps.data_source(opts["data"]),
                     "train.steps": steps, "train.batch_size": opts["batch"],
                     "train.lr_decay_every": 3 * steps // 4, "train.log_every": steps // 100,
                     "train.eval_every": steps // 10, "train.checkpoint_every": steps // 10,
                     "eval.test_during_training": True}
        points.append(sweeps.point(name=table1.cell_name("rts", model, transform, 0) + "-long",
                                   config=table1.mnist_config("rts", model, transform),
                                   overrides=overrides))
    return points
