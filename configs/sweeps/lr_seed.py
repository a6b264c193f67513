"""A tuning sweep: learning rate x seed, and the localisation nets' multiplier if asked, one config.

    python -m stn.experiments.sweeps --workdir=runs/lr_rts_st_cnn \
        --sweep=configs/sweeps/lr_seed.py:config=configs/mnist.py:rts,st_cnn,affine,seeds=3

Argument (`key=value` joined by commas; a list continues after commas):
  config=PATH:ARG         the config to tune (default configs/mnist.py:rts,st_cnn,affine);
  lrs=A,B,...             train.learning_rate values (default 0.003,0.01,0.03);
  loc_multipliers=A,B,... model.loc_lr_multiplier values (default: not an axis, so each point
                          keeps the config's own multiplier; the paper's reproduction notes
                          suggest trying 0.1 for the localisation net);
  seeds=N                 seeds 0..N-1 per setting (default 2);
  steps=N, data=SOURCE    shared overrides of train.steps and data.source.
Only the axes named here are overridden. Point names read `lr0.01-s0`, or `lr0.01-loc0.1-s0`
with `loc_multipliers`.
"""
from stn.experiments import config_args, sweeps


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (learning rate, [loc multiplier,] seed) point for the chosen config."""
    opts = config_args.parse(arg, where="configs/sweeps/lr_seed.py",
                             config="configs/mnist.py:rts,st_cnn,affine",
                             lrs=[0.003, 0.01, 0.03], loc_multipliers=[], seeds=2,
                             steps=0, data=None)
    try:
        locs = [float(v) for v in opts["loc_multipliers"]] or [None]
    except ValueError:
        raise ValueError(f"configs/sweeps/lr_seed.py: loc_multipliers="
                         f"{','.join(opts['loc_multipliers'])} must be numbers, e.g. "
                         f"loc_multipliers=0.1,1") from None
    common = {}
    if opts["steps"]:
        common["train.steps"] = opts["steps"]
    if opts["data"]:
        common["data.source"] = sweeps.data_source(opts["data"])
    points = []
    for g in sweeps.product(lr=opts["lrs"], loc=locs, seed=range(opts["seeds"])):
        loc = {} if g["loc"] is None else {"model.loc_lr_multiplier": g["loc"]}
        name = f"lr{g['lr']:g}" + ("" if g["loc"] is None else f"-loc{g['loc']:g}")
        points.append(sweeps.point(name=f"{name}-s{g['seed']}", config=opts["config"],
                                   overrides={"seed": g["seed"], "train.learning_rate": g["lr"],
                                              **loc, **common}))
    return points
