"""Co-localisation (appendix A.2, Table 5): every digit class, on T and TC, each point a
configs/colocalisation.py run.

    python -m stn.experiments.sweeps --sweep=configs/sweeps/colocalisation.py:reduced --workdir=runs/coloc_reduced
    python -m stn.experiments.results --workdir=runs/coloc_reduced --table=colocalisation

`reduced` (the CPU preset, one seed, the embedded sample): the `reduced` preset of
configs/colocalisation.py for the 10 classes on T and TC (see docs/reports/appendix.md
for the budget). Without it, the config's defaults.

Argument (comma-separated): `reduced`, and `key=value` for classes=LIST (default 0..9, e.g.
`classes=3,8`), data=LIST of `t` / `tc` (default both), seeds=N (default 1), first_seed=K,
source=SOURCE (`idx:DIR`, `tfds:NAME`, `sample`, or a bare folder), crop_sizes=LIST (crop sides
to compare on validation; each point's name gains `-cropN`; default: the config's).
"""
from stn.experiments import config_args, sweeps


def get_sweep(arg: str | None = None) -> list[dict]:
    """The co-localisation sweep; see the module docstring for the argument."""
    opts = config_args.parse(arg, where="configs/sweeps/colocalisation.py",
                             choices={"preset": ("reduced",)}, preset=None,
                             classes=list(range(10)), data=["t", "tc"], seeds=1, first_seed=0,
                             source=None, crop_sizes=[])
    for k in opts["classes"]:
        if not 0 <= k <= 9:
            raise ValueError(f"configs/sweeps/colocalisation.py: class {k} must be in 0..9")
    for d in opts["data"]:
        if d not in ("t", "tc"):
            raise ValueError(f"configs/sweeps/colocalisation.py: data {d!r}; expected t or tc")
    try:
        crops = [int(v) for v in opts["crop_sizes"]]
    except ValueError:
        raise ValueError(f"configs/sweeps/colocalisation.py: crop_sizes="
                         f"{','.join(opts['crop_sizes'])} must be whole numbers") from None
    common = {"data.source": sweeps.data_source(opts["source"])} if opts["source"] else {}
    points = []
    for axis in sweeps.product(data=opts["data"], digit_class=opts["classes"],
                               crop=crops or [None],
                               seed=range(opts["first_seed"], opts["first_seed"] + opts["seeds"])):
        crop = axis["crop"]
        tuned = {"model.crop_size": crop} if crop is not None else {}
        parts = [axis["data"], f"class={axis['digit_class']}"] + (
            [opts["preset"]] if opts["preset"] else [])
        points.append(sweeps.point(
            name=f"{axis['data']}-class{axis['digit_class']}"
                 + (f"-crop{crop}" if crop is not None else "") + f"-s{axis['seed']}",
            config="configs/colocalisation.py:" + ",".join(parts),
            overrides={"seed": axis["seed"], **tuned, **common}))
    return points
