"""Which box size does the co-localisation loss prefer? The triplet loss with every box centred on
the true digit (an oracle position), as a function of the box's half-side.

    python tools/analyses/coloc_loss_landscape.py                      # T, class 3, the reduced preset
    python tools/analyses/coloc_loss_landscape.py tc,class=3,reduced model.crop_size=28
    python tools/analyses/coloc_loss_landscape.py t,class=3,reduced --offsets     # the path to the box

The first argument is configs/colocalisation.py's `arg`; then `dotted.key=value` overrides. It
trains the embedding as a run does, then, for each half-side `s`, puts the box
`(s, centre of the true box)` on each of the 100 training images and prints the mean IoU with the
true box and the appendix's loss (`stn.experiments.models.colocalisation.colocalisation_loss`, averaged over
`--repeats` draws of the random patches), and the same for a box of that size in the image
corner farthest from the digit (on background: the degenerate answer). Where the loss is lowest is the box a localiser that
found every digit would settle on: if that is not near the true half-side (1/3, IoU 1), no
optimiser will make the boxes pass IoU > 0.5.

With `--offsets` it prints instead the loss along the path from the true box to an empty one:
boxes of the digit's size moved `k` pixels sideways off each digit (towards the image's centre
line, kept inside the image), for every image at once, and for one image at a time while the
others keep the true box (`offset_landscape`). A loss higher part-way than at the empty end is a
barrier that gradient descent from an empty or partly covering box does not cross.
With `--workdir=runs/...` (a finished train.py run of configs/colocalisation.py) it scores the
boxes that run's loc net LEARNED instead: its config read from the run (`config.json`,
`stn.experiments.workdir.read_config`) and its model restored from its newest checkpoint
(verified, `stn.experiments.evaluation.restore_run`), it prints the mean half-side, mean IoU,
fraction localised (IoU > 0.5) and the loss on the 100 training images at the loc net's boxes,
at the true boxes, and at the centred boxes (on the true centres) of the half-side whose loss is
lowest among the landscape's, every kind under the same `--repeats` draws of the random patches
(`learned_boxes`), then the spread of the learned box centres and their correlation with the
true centres in float64 (`learned_centres`). `--patch_scale=S` scores them with random patches
of half-side S (0: the crop's own) instead of the run's `model.patch_scale` (the boxes are the
run's either way):

    python tools/analyses/coloc_loss_landscape.py --workdir=runs/coloc_t7 --repeats=8
    python tools/analyses/coloc_loss_landscape.py --workdir=runs/coloc_t7 --repeats=8 --patch_scale=0.3333333

docs/reports/appendix.md has the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from stn import boxes  # noqa: E402
from stn.experiments import config_compare, evaluation, tasks  # noqa: E402
from stn.experiments import workdir as workdir_lib  # noqa: E402
from stn.experiments.data import colocalisation as colocalisation_data  # noqa: E402
from stn.experiments.models import colocalisation as models  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "colocalisation.py")

HALF_SIDES = (0.2, 0.25, 0.3, 1 / 3, 0.38, 0.42, 0.47, 0.5, 0.6, 0.7, 0.9)
OFFSETS = (0, 2, 4, 7, 10, 14, 20, 28, 40)  # pixels of the 84-pixel image


def load_config(arg: str, overrides: list[str]) -> ml_collections.ConfigDict:
    """configs/colocalisation.py's config for `arg` with `dotted.key=value` overrides, parsed
    and type-checked exactly as `train.py --config=...:arg --config.KEY=VALUE` does."""
    pairs = dict(item.partition("=")[::2] for item in overrides)
    if any(not key or not value for key, value in pairs.items()):
        raise SystemExit(f"overrides {overrides} must each read dotted.key=value")
    return ml_collections.ConfigDict(config_compare.resolve(f"{CONFIG}:{arg}", pairs))


def far_corner(true_boxes: jax.Array, side: float) -> jax.Array:
    """`[N, 3]` boxes of half-side `side` in the image corner farthest from each true box's
    centre (a box on background, or clutter, rather than on the digit)."""
    centres = 0.5 * (true_boxes[:, :2] + true_boxes[:, 2:])
    away = -jnp.where(centres >= 0, 1.0, -1.0) * (1.0 - side)
    return jnp.concatenate([jnp.full((len(true_boxes), 1), side, jnp.float32), away], -1)


def landscape(config, half_sides=HALF_SIDES, repeats: int = 4, seed: int = 0, *,
              corner: bool = False, split: str = "train") -> list[tuple[float, float, float]]:
    """`[(half_side, mean IoU, mean loss)]` for boxes centred on the true digits of the `split`
    images (`train`: the 100 optimised on; `validation`: held-out digits of the class, for
    choosing settings) of `config` (a configs/colocalisation.py config); with `corner`, the
    boxes sit in the corner farthest from the digit instead (`far_corner`)."""
    task = tasks.get(config.task)
    data = task.load_data(config)
    model = task.make_model(config, data.input_shape, nnx.Rngs(int(config.seed)))
    task.init_weights(config, model)  # the trained embedding CNN, as a fresh run starts from
    chosen = data.optimised if split == "train" else data.require_validation()
    images, true_boxes = (jnp.asarray(chosen[k]) for k in ("image", "box"))
    centres = 0.5 * (true_boxes[:, :2] + true_boxes[:, 2:])
    rng = np.random.default_rng(seed)
    rows = []
    for side in half_sides:
        theta = (far_corner(true_boxes, side) if corner else jnp.concatenate(
            [jnp.full((len(images), 1), side, jnp.float32), centres], -1))
        losses = []
        for _ in range(repeats):
            rand_pos = jnp.asarray(rng.uniform(-1, 1, (len(images), 2)), jnp.float32)
            outputs = model.outputs_at(images, theta, rand_pos)
            losses.append(float(models.colocalisation_loss(outputs).mean()))
        iou = float(boxes.iou(boxes.attention_box(theta), true_boxes).mean())
        rows.append((float(side), iou, float(np.mean(losses))))
    return rows


def shifted_boxes(true_boxes: jax.Array, pixels: float) -> jax.Array:
    """`[N, 3]` boxes of the true boxes' size moved `pixels` along x towards the image's
    vertical centre line (then kept inside the image)."""
    half = 0.5 * (true_boxes[:, 2:3] - true_boxes[:, 0:1])
    centres = 0.5 * (true_boxes[:, :2] + true_boxes[:, 2:])
    step = 2.0 * pixels / colocalisation_data.CANVAS
    x = centres[:, :1] - jnp.where(centres[:, :1] > 0, step, -step)
    x = jnp.clip(x, -(1.0 - half), 1.0 - half)
    return jnp.concatenate([half, x, centres[:, 1:]], -1)


def offset_landscape(config, offsets=OFFSETS, repeats: int = 4, seed: int = 0,
                     split: str = "train") -> list[tuple[float, float, float, float]]:
    """`[(pixels, mean IoU, loss with every box moved, loss of a moved box while the others
    keep the true box)]` for boxes of the digit's size moved sideways off the digits
    (`shifted_boxes`). The second loss is image n's row of the appendix's loss (its mean over
    partners m) with only n's box moved, averaged over n; the random patches are the crop's
    size whatever its place, so they are drawn once per repeat for both."""
    task = tasks.get(config.task)
    data = task.load_data(config)
    model = task.make_model(config, data.input_shape, nnx.Rngs(int(config.seed)))
    task.init_weights(config, model)  # the trained embedding CNN, as a fresh run starts from
    chosen = data.optimised if split == "train" else data.require_validation()
    images, true_boxes = (jnp.asarray(chosen[k]) for k in ("image", "box"))
    rng = np.random.default_rng(seed)
    count = len(images)
    true_theta = shifted_boxes(true_boxes, 0.0)
    rows = []
    for pixels in offsets:
        theta = shifted_boxes(true_boxes, float(pixels))
        every, alone = [], []
        for _ in range(repeats):
            rand_pos = jnp.asarray(rng.uniform(-1, 1, (count, 2)), jnp.float32)
            moved = model.outputs_at(images, theta, rand_pos)
            every.append(float(models.colocalisation_loss(moved).mean()))
            kept = model.outputs_at(images, true_theta)["embedding"]
            close = jnp.sum(jnp.square(moved["embedding"][:, None] - kept[None]), -1)
            far = jnp.sum(jnp.square(moved["embedding"] - moved["random_embedding"]), -1)
            pairs = jnp.maximum(0.0, close - far[:, None] + model.margin)
            pairs = pairs * (1.0 - jnp.eye(count))
            alone.append(float((pairs.sum(1) / (count - 1)).mean()))
        iou = float(boxes.iou(boxes.attention_box(theta), true_boxes).mean())
        rows.append((float(pixels), iou, float(np.mean(every)), float(np.mean(alone))))
    return rows


def restored_run(workdir: str, patch_scale: float | None = None):
    """`(config, model, optimised set, step)` of the finished co-localisation run in `workdir`:
    its config as the run recorded it (`workdir_lib.read_config`), its model at the newest
    checkpoint, verified (`evaluation.restore_run`: the one restore path), and the images it
    optimised on. `patch_scale` (not None) sets the random patches' half-side the loss is then
    scored with (the boxes stay the run's)."""
    config = ml_collections.ConfigDict(workdir_lib.read_config(workdir))
    if config.task != "colocalisation":
        raise ValueError(f"{workdir} holds a run of task {config.task!r}, not colocalisation")
    config, task, graphdef, state, step, _ = evaluation.restore_run(workdir, config)
    model = nnx.merge(graphdef, state)
    if patch_scale is not None:
        if not 0 <= patch_scale <= 1:
            raise ValueError(f"--patch_scale={patch_scale} must be in [0, 1] (0: the crop's own)")
        model.patch_scale = float(patch_scale)
    return config, model, task.load_data(config).optimised, step


def mean_loss(model, images: jax.Array, theta: jax.Array, draws: list[jax.Array]) -> float:
    """The appendix's loss over `images` at the boxes `theta`, averaged over the random
    patches' positions `draws` (each `[N, 2]`)."""
    return float(np.mean([models.colocalisation_loss(model.outputs_at(images, theta, pos)).mean()
                          for pos in draws]))


def learned_boxes(model, optimised: dict, half_sides=HALF_SIDES, repeats: int = 8,
                  seed: int = 0) -> list[tuple[str, float, float, float, float]]:
    """`[(kind, mean half-side, mean IoU, fraction with IoU > 0.5, loss)]` on the `optimised`
    images for the boxes of three kinds: "learned" (the loc net's own), "true" (the digits'
    boxes) and "centred, best half-side" (on the true centres, the half-side of `half_sides`
    with the lowest loss), each loss averaged over the same `repeats` draws of the random
    patches."""
    images, true_boxes = (jnp.asarray(optimised[k]) for k in ("image", "box"))
    rng = np.random.default_rng(seed)
    draws = [jnp.asarray(rng.uniform(-1, 1, (len(images), 2)), jnp.float32)
             for _ in range(repeats)]
    centres = 0.5 * (true_boxes[:, :2] + true_boxes[:, 2:])

    def centred(side):
        return jnp.concatenate([jnp.full((len(images), 1), side, jnp.float32), centres], -1)

    best = min(half_sides, key=lambda side: mean_loss(model, images, centred(side), draws))
    kinds = [("learned", model.transformer.loc_net(images)),
             ("true", boxes.box_attention(true_boxes)),
             (f"centred, best half-side ({best:.3g})", centred(best))]
    rows = []
    for kind, theta in kinds:
        overlap = boxes.iou(boxes.attention_box(theta), true_boxes)
        rows.append((kind, float(jnp.abs(theta[:, 0]).mean()), float(overlap.mean()),
                     float((overlap > 0.5).mean()), mean_loss(model, images, theta, draws)))
    return rows


def learned_centres(model, optimised: dict) -> dict[str, float]:
    """The spread of the loc net's box centres on the `optimised` images (`sd_x`, `sd_y`, in
    normalised units: 0.01 is about 0.4 px of the 84-px image) and Pearson's r of them against
    the true centres (`r`: x and y pooled, each centred on its own mean; `r_x`, `r_y`), in two
    float64 passes: NaN where the centres do not move at all."""
    predicted = boxes.attention_box(model.transformer.loc_net(jnp.asarray(optimised["image"])))
    p = 0.5 * (np.asarray(predicted[:, :2], np.float64) + np.asarray(predicted[:, 2:], np.float64))
    q = 0.5 * (optimised["box"][:, :2] + optimised["box"][:, 2:]).astype(np.float64)

    def pearson(a, b):
        a, b = a - a.mean(axis=0), b - b.mean(axis=0)
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        return float((a * b).sum() / denominator) if denominator > 0 else float("nan")

    return {"sd_x": float(p[:, 0].std()), "sd_y": float(p[:, 1].std()), "r": pearson(p, q),
            "r_x": pearson(p[:, 0], q[:, 0]), "r_y": pearson(p[:, 1], q[:, 1])}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arg", nargs="?", default=None,
                        help="configs/colocalisation.py's arg (default t,class=3,reduced)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value")
    parser.add_argument("--repeats", type=int, default=4, help="random-patch draws per size")
    parser.add_argument("--split", choices=("train", "validation"), default="train",
                        help="the images scored: the optimised ones, or held-out (choices)")
    parser.add_argument("--offsets", action="store_true",
                        help="the loss along boxes moved sideways off the digits instead")
    parser.add_argument("--workdir", default="",
                        help="a finished run: score its loc net's boxes (no arg or overrides)")
    parser.add_argument("--patch_scale", type=float, default=None,
                        help="with --workdir: the random patches' half-side (0: the crop's own; "
                             "default the run's model.patch_scale)")
    args = parser.parse_args(argv)
    if args.workdir:
        if args.arg or args.overrides or args.offsets or args.split != "train":
            raise SystemExit("--workdir scores the run's own config on its training images: "
                             "give no config arg, overrides, --offsets or --split with it")
        try:
            config, model, optimised, step = restored_run(args.workdir, args.patch_scale)
        except ValueError as error:  # one line: no run, no checkpoint, another task
            raise SystemExit(str(error)) from None
        patches = f"{model.patch_scale:.4g}" if model.patch_scale else "the crop's own"
        print(f"{args.workdir} ({config.name}, step {step}, model.translation="
              f"{config.model.get('translation', 'inside')}): random patches of half-side "
              f"{patches}, {args.repeats} draws (jax {jax.__version__}, "
              f"{jax.devices()[0].platform})")
        print(f"{'boxes':32s}  half-side  IoU   IoU>0.5  loss")
        for kind, side, iou, localised, loss in learned_boxes(model, optimised,
                                                              repeats=args.repeats):
            print(f"{kind:32s}  {side:9.3f}  {iou:.2f}  {100 * localised:6.0f}%  {loss:.4f}")
        c = learned_centres(model, optimised)
        print(f"learned centres: sd x {c['sd_x']:.4f}, y {c['sd_y']:.4f}; r against the true "
              f"centres {c['r']:.2f} (x {c['r_x']:.2f}, y {c['r_y']:.2f})")
        return
    args.arg = args.arg or "t,class=3,reduced"
    try:
        config = load_config(args.arg, args.overrides)
    except ValueError as error:  # one line: an unknown field or a badly typed value
        raise SystemExit(str(error)) from None
    print(f"{args.arg} {' '.join(args.overrides)} --split={args.split} (jax {jax.__version__}, "
          f"{jax.devices()[0].platform})")
    if args.offsets:
        print("pixels  IoU   loss (every box moved) | loss (one box moved, the others true)")
        for pixels, iou, every, alone in offset_landscape(config, repeats=args.repeats,
                                                          split=args.split):
            print(f"{pixels:6.0f}  {iou:.2f}  {every:.3f}{'':19s}| {alone:.3f}")
        return
    print("half-side  IoU   loss (centred on the digit) | IoU   loss (in the far corner)")
    centred = landscape(config, repeats=args.repeats, split=args.split)
    away = landscape(config, repeats=args.repeats, corner=True, split=args.split)
    for (side, iou, loss), (_, corner_iou, corner_loss) in zip(centred, away):
        print(f"{side:9.3f}  {iou:.2f}  {loss:.3f}{'':21s}| {corner_iou:.2f}  {corner_loss:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
