"""Table 1 on a 2-core CPU: the 32 cells (R, RTS, P, E x 8 models) in about an hour, one seed.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table1_cpu.py --workdir=runs/table1_cpu --cpu_devices=2
    python -m stn.experiments.results --workdir=runs/table1_cpu --table=1

Data: the embedded sample (8,000 training digits, all of them: final runs keep no validation
split). The recipe was chosen on the validation split by `configs/sweeps/table1_cpu_tune.py`
(docs/reports/results.md: the settings tried and the validation errors that chose them). Argument
(`key=value` joined by commas): seeds=N, first_seed=K, columns=r,rts,p,e (a subset),
data=SOURCE (default sample).
"""
from pathlib import Path

from stn.experiments import config_args, sweeps

# The budget: batch 64, SGD with momentum 0.9, the learning rate divided by 10 at 3/4 of the
# steps; the cheap fully connected models get more steps than the convolutional ones.
BATCH = 64
STEPS = {"fcn": 6000, "st_fcn": 6000, "cnn": 2000, "st_cnn": 2000}
# Chosen on validation error by table1_cpu_tune.py (RTS; affine for the ST models; one seed):
# the learning rate from {0.01, 0.03, 0.1}, the loc-net multiplier from {0.1, 1}; the 2x2 pool
# after the ST-FCN's transformer lost (docs/reports/results.md has the numbers).
LEARNING_RATE = {"fcn": 0.03, "st_fcn": 0.01, "cnn": 0.03, "st_cnn": 0.03}
LOC_MULTIPLIER = {"st_fcn": 0.1, "st_cnn": 0.1}


def recipe(model: str, validation_size: int = 0) -> dict:
    """The CPU recipe's overrides for one model family (the same for every distortion)."""
    steps = STEPS[model]
    overrides = {
        "data.validation_size": validation_size, "train.steps": steps,
        "train.batch_size": BATCH, "train.momentum": 0.9,
        "train.learning_rate": LEARNING_RATE[model],
        "train.lr_decay_every": 3 * steps // 4,
        "train.log_every": steps // 10, "train.eval_every": steps,
        "train.checkpoint_every": steps // 2, "train.num_images": 16,
    }
    if model in LOC_MULTIPLIER:
        overrides["model.loc_lr_multiplier"] = LOC_MULTIPLIER[model]
    return overrides


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (distortion, model, seed) cell with the CPU recipe."""
    opts = config_args.parse(arg, where="configs/sweeps/table1_cpu.py", seeds=1, first_seed=0,
                             columns=["r", "rts", "p", "e"], data="sample")
    table1 = config_args.load_file(Path(__file__).with_name("table1.py"), "sweep file")
    points = []
    for distortion in opts["columns"]:
        for model, transform in table1.MODELS:
            for seed in range(opts["first_seed"], opts["first_seed"] + opts["seeds"]):
                points.append(sweeps.point(
                    name=table1.cell_name(distortion, model, transform, seed),
                    config=table1.mnist_config(distortion, model, transform),
                    overrides={"seed": seed, "data.source": sweeps.data_source(opts["data"]),
                               **recipe(model)}))
    return points
