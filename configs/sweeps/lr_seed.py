"""A tuning sweep: learning rate x localisation-net learning-rate multiplier x seed, one config.

    python -m stn.experiments.sweeps --workdir=runs/lr_rts_st_cnn \
        --sweep=configs/sweeps/lr_seed.py:config=configs/mnist.py:rts,st_cnn,affine,seeds=3

Argument (`key=value` joined by commas; a list continues after commas):
  config=PATH:ARG         the config to tune (default configs/mnist.py:rts,st_cnn,affine);
  lrs=A,B,...             train.learning_rate values (default 0.003,0.01,0.03);
  loc_multipliers=A,B,... model.loc_lr_multiplier values (default 1.0; the paper's reproduction
                          notes suggest trying 0.1 for the localisation net);
  seeds=N                 seeds 0..N-1 per setting (default 2);
  steps=N, data=SOURCE    shared overrides of train.steps and data.source.
Point names read `lr0.01-loc1-s0`.
"""
from stn.experiments import config_args, sweeps


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (learning rate, loc multiplier, seed) point for the chosen config."""
    opts = config_args.parse(arg, where="configs/sweeps/lr_seed.py", config="configs/mnist.py:rts,st_cnn,affine",
                            lrs=[0.003, 0.01, 0.03], loc_multipliers=[1.0], seeds=2,
                            steps=0, data=None)
    common = {}
    if opts["steps"]:
        common["train.steps"] = opts["steps"]
    if opts["data"]:
        common["data.source"] = sweeps.data_source(opts["data"])
    grid = sweeps.product(lr=opts["lrs"], loc=opts["loc_multipliers"],
                          seed=range(opts["seeds"]))
    return [sweeps.point(name=f"lr{g['lr']:g}-loc{g['loc']:g}-s{g['seed']}",
                         config=opts["config"],
                         overrides={"seed": g["seed"], "train.learning_rate": g["lr"],
                                    "model.loc_lr_multiplier": g["loc"], **common})
            for g in grid]
