"""The tuning sweep behind table1_cpu.py: its recipe, chosen by validation error on RTS.

    for f in fcn cnn st_fcn st_cnn; do
      python -m stn.experiments.sweeps --sweep=configs/sweeps/table1_cpu_tune.py:family=$f \
          --workdir=runs/table1_cpu_tune/$f --cpu_devices=2
      python -m stn.experiments.results --workdir=runs/table1_cpu_tune/$f --table=sweep
    done

Each model family (FCN, CNN, ST-FCN affine, ST-CNN affine) on RTS at table1_cpu.py's budget,
with 1,000 of the 8,000 sample digits held out: learning rate in {0.01, 0.03, 0.1}; for the ST
models the localisation nets' multiplier in {0.1, 1}; for ST-FCN also the 2x2 average pool after
the transformer (the paper's RTS models). Argument: family=fcn|cnn|st_fcn|st_cnn (required: each
family is its own sweep, summarised on its own), lrs=..., loc_multipliers=..., seeds=N.
"""
from pathlib import Path

from stn.experiments import config_args, sweeps

FAMILIES = {"fcn": "fcn", "cnn": "cnn", "st_fcn": "st_fcn,affine", "st_cnn": "st_cnn,affine"}


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (family, setting, seed) point of the tuning grid."""
    opts = config_args.parse(arg, where="configs/sweeps/table1_cpu_tune.py",
                             choices={"family": tuple(FAMILIES)}, family=None,
                             lrs=[0.01, 0.03, 0.1], loc_multipliers=[0.1, 1.0], seeds=1)
    if opts["family"] is None:
        raise ValueError(f"table1_cpu_tune.py needs a family: one of {', '.join(FAMILIES)}")
    cpu = config_args.load_file(Path(__file__).with_name("table1_cpu.py"), "sweep file")
    points = []
    for family, model_arg in [(opts["family"], FAMILIES[opts["family"]])]:
        st = family.startswith("st_")
        grid = sweeps.product(lr=opts["lrs"], loc=opts["loc_multipliers"] if st else [1.0],
                              pool=[1, 2] if family == "st_fcn" else [1],
                              seed=range(opts["seeds"]))
        for g in grid:
            overrides = {**cpu.recipe(family, validation_size=1000), "seed": g["seed"],
                         "data.source": "sample", "train.learning_rate": g["lr"]}
            name = f"lr{g['lr']:g}"
            if st:
                overrides["model.loc_lr_multiplier"] = g["loc"]
                name += f"-loc{g['loc']:g}"
            if g["pool"] > 1:
                overrides["model.st_pool"] = g["pool"]
                name += f"-pool{g['pool']}"
            points.append(sweeps.point(name=f"{family}-{name}-s{g['seed']}",
                                       config=f"configs/mnist.py:rts,{model_arg}",
                                       overrides=overrides))
    return points
