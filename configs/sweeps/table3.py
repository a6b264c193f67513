"""Table 3 of the paper: CUB-200-2011, CNN and 2x / 4x ST-CNN, every point a configs/cub.py run.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table3.py:data=/data/CUB_200_2011,\
weights=/weights/model.safetensors --workdir=runs/table3
    python -m stn.experiments.results --workdir=runs/table3 --table=3

Argument (all optional, `key=value` joined by commas):
  data=PATH      the official CUB_200_2011 folder (data.source=dir:PATH), or tfds:NAME;
  weights=FILE   timm's inception_v3.tv_in1k model.safetensors (model.weights);
  seeds=N, first_seed=K  seeds per row (default 1, from 0);
  steps=N        override train.steps (and train.lr_decay_every = 3N // 8, the recipe's shape);
  batch=N        override train.batch_size;  validation_size=N  override data.validation_size
                 (0 for final runs on all 5,994 training images);
  smoke=true     the rows' smoke modifier (synthetic data, narrow backbone: a CPU check).
"""
from stn.experiments import config_args, sweeps

ROWS = ("cnn", "2xst_224", "2xst_448", "4xst_448")


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (row, seed) point of Table 3; see the module docstring for the argument."""
    opts = config_args.parse(arg, where="configs/sweeps/table3.py", data=None, weights=None,
                             seeds=1, first_seed=0, steps=0, batch=0, validation_size=-1,
                             smoke=False)
    common = {}
    if opts["data"]:
        data = opts["data"]
        common["data.source"] = data if data.startswith(("dir:", "tfds:")) else f"dir:{data}"
    if opts["weights"]:
        common["model.weights"] = opts["weights"]
    if opts["steps"]:
        common["train.steps"] = opts["steps"]
        common["train.lr_decay_every"] = max(1, 3 * opts["steps"] // 8)
    if opts["batch"]:
        common["train.batch_size"] = opts["batch"]
    if opts["validation_size"] >= 0:
        common["data.validation_size"] = opts["validation_size"]
    mode = ",smoke" if opts["smoke"] else ""
    seeds = range(opts["first_seed"], opts["first_seed"] + opts["seeds"])
    return [sweeps.point(name=f"cub-{a['row']}-s{a['seed']}",
                         config=f"configs/cub.py:{a['row']}{mode}",
                         overrides={"seed": a["seed"], **common})
            for a in sweeps.product(row=ROWS, seed=seeds)]
