"""Which box size does the co-localisation loss prefer? The triplet loss with every box centred on
the true digit (an oracle position), as a function of the box's half-side.

    python benchmarks/coloc_loss_landscape.py                      # T, class 3, the reduced preset
    python benchmarks/coloc_loss_landscape.py tc,class=3,reduced model.crop_size=28

The first argument is configs/colocalisation.py's `arg`; then `dotted.key=value` overrides. It
trains the embedding as a run does, then, for each half-side `s`, puts the box
`(s, centre of the true box)` on each of the 100 training images and prints the mean IoU with the
true box and the appendix's loss (`stn.models.colocalisation.colocalisation_loss`, averaged over
`--repeats` draws of the random patches). Where the loss is lowest is the box a localiser that
found every digit would settle on: if that is not near the true half-side (1/3, IoU 1), no
optimiser will make the boxes pass IoU > 0.5. docs/addition_colocalisation.md has the numbers.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import colocalisation as coloc_config  # noqa: E402
from stn import boxes, tasks  # noqa: E402
from stn.models import colocalisation as models  # noqa: E402

HALF_SIDES = (0.2, 0.25, 0.3, 1 / 3, 0.38, 0.42, 0.47, 0.5, 0.6, 0.7, 0.9)


def apply_override(config, assignment: str) -> None:
    """`model.crop_size=28` -> config.model.crop_size = 28 (the value parsed as a Python literal
    where it is one, else kept as a string)."""
    key, _, text = assignment.partition("=")
    if not text:
        raise SystemExit(f"override {assignment!r} must read dotted.key=value")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


def landscape(config, half_sides=HALF_SIDES, repeats: int = 4, seed: int = 0
              ) -> list[tuple[float, float, float]]:
    """`[(half_side, mean IoU, mean loss)]` for boxes centred on the true digits of the training
    images of `config` (a configs/colocalisation.py config)."""
    task = tasks.get(config.task)
    data = task.load_data(config)
    model = task.make_model(config, data.input_shape, nnx.Rngs(int(config.seed)))
    images, true_boxes = (jnp.asarray(a) for a in data.train_arrays)
    centres = 0.5 * (true_boxes[:, :2] + true_boxes[:, 2:])
    rng = np.random.default_rng(seed)
    rows = []
    for side in half_sides:
        theta = jnp.concatenate([jnp.full((len(images), 1), side, jnp.float32), centres], -1)
        losses = []
        for _ in range(repeats):
            rand_pos = jnp.asarray(rng.uniform(-1, 1, (len(images), 2)), jnp.float32)
            outputs = model.outputs_at(images, theta, rand_pos)
            losses.append(float(models.colocalisation_loss(outputs).mean()))
        iou = float(boxes.iou(boxes.attention_box(theta), true_boxes).mean())
        rows.append((float(side), iou, float(np.mean(losses))))
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arg", nargs="?", default="t,class=3,reduced",
                        help="configs/colocalisation.py's arg")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value")
    parser.add_argument("--repeats", type=int, default=4, help="random-patch draws per size")
    args = parser.parse_args(argv)
    config = coloc_config.get_config(args.arg)
    for assignment in args.overrides:
        apply_override(config, assignment)
    print(f"{args.arg} {' '.join(args.overrides)} (jax {jax.__version__}, "
          f"{jax.devices()[0].platform})")
    print("half-side  IoU   loss")
    for side, iou, loss in landscape(config, repeats=args.repeats):
        print(f"{side:9.3f}  {iou:.2f}  {loss:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
