"""Table 2 of the paper: SVHN multi-digit sequence error, 64px and 128px crops x 3 models.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table2.py:seeds=1 --workdir=runs/table2
    python -m stn.experiments.results --workdir=runs/table2 --table=2

Each point is a configs/svhn.py run (`64px,cnn`, `128px,st_cnn_single`, `64px,st_cnn_multi`, ...).
The paper's Maxout CNN and DRAM rows are other papers' models and are not reproduced here.
Argument (all optional, `key=value` joined by commas): seeds=N (default 1), first_seed=K,
steps=N (override train.steps), manual_dir=DIR (data.manual_dir: the folder holding SVHN's
format 1 archives), tfds_data_dir=DIR (data.tfds_data_dir: where the built data set lives).
"""
from stn.experiments import config_args, sweeps

VARIANTS = ("64px", "128px")
MODELS = ("cnn", "st_cnn_single", "st_cnn_multi")


def get_sweep(arg: str | None = None) -> list[dict]:
    """Every (crop, model, seed) point of Table 2."""
    opts = config_args.parse(arg, where="configs/sweeps/table2.py", seeds=1, first_seed=0, steps=0, manual_dir=None,
                            tfds_data_dir=None)
    common = {}
    if opts["steps"]:
        common["train.steps"] = opts["steps"]
    for key in ("manual_dir", "tfds_data_dir"):
        if opts[key]:
            common[f"data.{key}"] = opts[key]
    seeds = range(opts["first_seed"], opts["first_seed"] + opts["seeds"])
    return [sweeps.point(name=f"svhn{a['variant']}-{a['model']}-s{a['seed']}",
                         config=f"configs/svhn.py:{a['variant']},{a['model']}",
                         overrides={"seed": a["seed"], **common})
            for a in sweeps.product(variant=VARIANTS, model=MODELS, seed=seeds)]
