"""The tuning sweep behind configs/mnist.py's `quick` preset, ranked by validation error.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/quick_tune.py --workdir=runs/quick_tune
    python -m stn.experiments.results --workdir=runs/quick_tune --table=sweep

The quick preset (an ST-CNN, affine, on RTS over the embedded sample, 1,000 of its 8,000
training digits held out for validation) at a budget of about two minutes on a 2-core CPU:
learning rate x the localisation nets' multiplier x the number of steps (the learning rate
falls 10x at three quarters of them) x the transformer's output side (0: the input's 42; 28:
the classifier sees a down-sampled view, so enlarging the digit pays). The paper's 2x2 pool
after the transformer is not an axis: the CNN needs at least 24x24 pixels, and RTS's 42x42
pooled is 21x21. Arguments (`key=value` joined by commas; a list continues after commas):
lrs=..., loc_multipliers=..., steps=..., output_sizes=..., seeds=N (seeds 0..N-1 per setting;
default 1). Point names read `lr0.03-loc0.3-steps400-s0`, with `-out28` before the seed where
the output side is not 0.
"""
from stn.experiments import config_args, sweeps

CONFIG = "configs/mnist.py:quick"


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (learning rate, loc multiplier, steps, output side, seed) point over `quick`."""
    opts = config_args.parse(arg, where="configs/sweeps/quick_tune.py",
                             lrs=[0.01, 0.03, 0.1], loc_multipliers=[0.1, 0.3, 1.0],
                             steps=[400], output_sizes=[0], seeds=1)
    points = []
    for g in sweeps.product(lr=opts["lrs"], loc=opts["loc_multipliers"], steps=opts["steps"],
                            out=opts["output_sizes"], seed=range(opts["seeds"])):
        lr, loc, steps, out = float(g["lr"]), float(g["loc"]), int(g["steps"]), int(g["out"])
        overrides = {"seed": g["seed"], "train.learning_rate": lr,
                     "model.loc_lr_multiplier": loc,
                     "train.steps": steps, "train.lr_decay_every": 3 * steps // 4,
                     "train.eval_every": steps // 2, "train.checkpoint_every": steps // 2,
                     **({"model.st_output_size": out} if out else {})}
        name = f"lr{lr:g}-loc{loc:g}-steps{steps}" + (f"-out{out}" if out else "")
        name += f"-s{g['seed']}"
        points.append(sweeps.point(name=name, config=CONFIG, overrides=overrides))
    return points
