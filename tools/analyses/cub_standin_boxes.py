"""Where a trained CUB stand-in's boxes go: each box against the item it should find.

    python tools/analyses/cub_standin_boxes.py --workdir=runs/standin_2xst

Restores the run's checkpoint (verified, `stn.experiments.evaluation.restore_run`), rebuilds its test
canvases with each item's true place (`stn.experiments.tasks.cub.standin_test_places`; the model never saw
these places), and reports per box, over the test canvases:

- `scale`: the box's half-side s (paper eq. 2), mean and spread: 1 is the whole canvas;
- `covered`: the share of the item's square that the crop holds (`stn.boxes.covered_fraction`),
  mean, and the share of canvases where it is at least 0.9;
- `zoom`: crop pixels per canvas pixel (`crop_size / (s * canvas)`): above the CNN's view
  (`cnn_view / canvas`), the crop sees the item at a higher resolution than the CNN does;
- `centre_corr`: the correlation between the box's centre and the item's centre, x and y: near
  0 when the box ignores where the item is, near 1 when it follows it.

The same numbers for the run's starting boxes (`stn.experiments.models.cub.initial_boxes`, one box for all
canvases) are printed beside them. The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from stn import boxes  # noqa: E402
from stn.experiments import evaluation
from stn.experiments.models import cub as cub_models  # noqa: E402
from stn.experiments.tasks import cub as cub_task  # noqa: E402


def box_statistics(attention: np.ndarray, places: np.ndarray, canvas: int,
                   crop_size: int) -> list[dict]:
    """Per box: `attention` `[N, K, 3]` `(s, t_x, t_y)` against item `places` `[N, 3]`
    `(top, left, side)` on `canvas`-pixel canvases (see the module docstring)."""
    side = places[:, 2].astype(np.float32)
    item = np.asarray(boxes.pixel_box(places[:, 1], places[:, 0], side, side, canvas, canvas))
    item_centre = 0.5 * (item[:, :2] + item[:, 2:])
    stats = []
    for k in range(attention.shape[1]):
        crop = np.asarray(boxes.attention_box(jnp.asarray(attention[:, k])))
        covered = np.asarray(boxes.covered_fraction(crop, item))
        scale = np.abs(attention[:, k, 0])
        centre = attention[:, k, 1:]
        corr = [float(np.corrcoef(centre[:, a], item_centre[:, a])[0, 1])
                if centre[:, a].std() > 1e-6 else 0.0 for a in range(2)]
        stats.append({"scale_mean": float(scale.mean()), "scale_std": float(scale.std()),
                      "covered_mean": float(covered.mean()),
                      "covered_90": float((covered >= 0.9).mean()),
                      "zoom_mean": float((crop_size / (scale * canvas)).mean()),
                      "centre_corr_x": corr[0], "centre_corr_y": corr[1]})
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a 2xST / 4xST stand-in run's folder")
    parser.add_argument("--checkpoint_step", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=250)
    args = parser.parse_args()
    try:
        config, _, graphdef, state, step, _ = evaluation.restore_run(
            args.workdir, step=args.checkpoint_step)
        if config.task != "cub" or config.model.name != "st":
            raise ValueError(f"{args.workdir} is a {config.task}/{config.model.name} run; this "
                             f"measures the boxes of a cub stand-in 'st' run")
        canvases, _, places = cub_task.standin_test_places(config)
    except ValueError as e:
        sys.exit(f"cub_standin_boxes.py: {e}")
    canvas, crop_size = canvases.shape[1], int(config.model.crop_size)
    if canvas != int(config.data.image_size):
        sys.exit(f"cub_standin_boxes.py: the run sees {config.data.image_size}px images, not the "
                 f"{canvas}px canvases; boxes are measured for runs on the full canvas")
    attend = jax.jit(lambda s, x: nnx.merge(graphdef, s).attention(x))
    attention = np.concatenate([
        np.asarray(attend(state, jnp.asarray(canvases[i:i + args.batch_size], jnp.float32) / 255))
        for i in range(0, len(canvases), args.batch_size)])
    m = config.model
    start = cub_models.initial_boxes(int(m.num_transformers), float(m.init_scale),
                                     float(m.init_offset))
    learnt = box_statistics(attention, places, canvas, crop_size)
    initial = box_statistics(np.broadcast_to(start, attention.shape), places, canvas, crop_size)
    cnn_view = int(m.loc_size) / canvas
    print(f"{args.workdir} step {step}: {len(canvases)} test canvases of {canvas}px; the CNN's "
          f"view has {cnn_view:.3f} pixels per canvas pixel")
    print("| box | scale | covered (mean, >= 0.9) | zoom | centre corr x, y | at the start: "
          "scale, covered, zoom |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, (a, b) in enumerate(zip(learnt, initial)):
        print(f"| {k} | {a['scale_mean']:.3f} +- {a['scale_std']:.3f} | {a['covered_mean']:.2f}, "
              f"{a['covered_90']:.2f} | {a['zoom_mean']:.3f} | {a['centre_corr_x']:+.2f}, "
              f"{a['centre_corr_y']:+.2f} | {b['scale_mean']:.3f}, {b['covered_mean']:.2f}, "
              f"{b['zoom_mean']:.3f} |")
    print(json.dumps({"workdir": os.path.abspath(args.workdir), "step": int(step),
                      "cnn_view_zoom": cnn_view, "boxes": learnt, "initial_boxes": initial}))


if __name__ == "__main__":
    main()
