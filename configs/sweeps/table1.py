"""Table 1 of the paper: 4 distortions (R, RTS, P, E) x 8 models, every point a configs/mnist.py run.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/table1.py:seeds=3 --workdir=runs/table1
    python -m stn.experiments.results --workdir=runs/table1 --table=1

Argument (all optional, `key=value` joined by commas):
  seeds=N       seeds per cell (the paper averages three runs), default 1;
  first_seed=K  seeds K .. K+N-1, default 0 (add seeds to a finished sweep without re-running);
  steps=N       override train.steps, and train.lr_decay_every = N // 3 (default: the config's
                full recipe, 150k steps);
  data=SOURCE   override data.source: `idx:DIR`, `tfds:NAME`, `sample`, or a bare folder (= idx:);
  columns=r,rts,p,e  the distortions (columns) to run (default all four);
  eval_every=N  override train.eval_every; test_curves=true  evaluate the test set at every
                evaluation too (curves of validation and test error against steps).
"""
from stn.experiments import config_args, sweeps

DISTORTIONS = ("r", "rts", "p", "e")
# (model, transform) in the paper's row order; the plain networks have no transformer.
MODELS = (
    ("fcn", None), ("cnn", None),
    ("st_fcn", "affine"), ("st_fcn", "projective"), ("st_fcn", "tps"),
    ("st_cnn", "affine"), ("st_cnn", "projective"), ("st_cnn", "tps"),
)


def mnist_config(distortion: str, model: str, transform: str | None) -> str:
    """The --config of one Table 1 cell, e.g. `configs/mnist.py:rts,st_cnn,affine`."""
    parts = [distortion, model] + ([transform] if transform else [])
    return "configs/mnist.py:" + ",".join(parts)


def cell_name(distortion: str, model: str, transform: str | None, seed: int) -> str:
    """A point's name (its folder): `rts-st_cnn-affine-s0`, `r-cnn-s2`."""
    parts = [distortion, model] + ([transform] if transform else []) + [f"s{seed}"]
    return "-".join(parts)


def table1_points(seeds: int = 1, first_seed: int = 0, steps: int | None = None,
                  data: str | None = None, batch_size: int | None = None,
                  extra: dict | None = None, distortions=DISTORTIONS) -> list[dict]:
    """Every (distortion, model, seed) point of Table 1, with the shared overrides.

    A shorter run keeps the paper's schedule shape (appendix A.1: the learning rate divided by
    10 every 50k of 150k steps), so `steps` also sets train.lr_decay_every to a third of it.
    `extra` holds further overrides shared by every point.
    """
    common = {}
    if steps is not None:
        common["train.steps"] = steps
        common["train.lr_decay_every"] = max(1, steps // 3)
    if batch_size is not None:
        common["train.batch_size"] = batch_size
    common.update(extra or {})
    if data is not None:
        common["data.source"] = sweeps.data_source(data)
    points = []
    unknown = set(distortions) - set(DISTORTIONS)
    if unknown:
        raise ValueError(f"table1: unknown columns {sorted(unknown)}; expected {DISTORTIONS}")
    for axis in sweeps.product(distortion=distortions, model=MODELS,
                               seed=range(first_seed, first_seed + seeds)):
        (model, transform), d, s = axis["model"], axis["distortion"], axis["seed"]
        points.append(sweeps.point(name=cell_name(d, model, transform, s),
                                   config=mnist_config(d, model, transform),
                                   overrides={"seed": s, **common}))
    return points


def get_sweep(arg: str | None = None) -> list[dict]:
    """The Table 1 sweep; see the module docstring for the argument."""
    opts = config_args.parse(arg, where="configs/sweeps/table1.py", seeds=1, first_seed=0,
                             steps=0, data=None, columns=list(DISTORTIONS), eval_every=0,
                             test_curves=False)
    extra = {"eval.test_during_training": True} if opts["test_curves"] else {}
    if opts["eval_every"]:
        extra["train.eval_every"] = opts["eval_every"]
    return table1_points(seeds=opts["seeds"], first_seed=opts["first_seed"],
                         steps=opts["steps"] or None, data=opts["data"], extra=extra,
                         distortions=opts["columns"])
