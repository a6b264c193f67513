r"""Writes a PNG grid of distorted digits, to see the data before training.

    python -m stn.experiments.data.preview --source=sample --out=preview.png          # every distortion
    python -m stn.experiments.data.preview --config=configs/mnist.py:tc --out=tc.png  # the config's one
    python -m stn.experiments.data.preview --config=configs/mnist.py:tc --source=sample --out=tc.png

Each row is one distortion (its name and canvas size on the left); all rows distort the same
test digits, drawn on black with a 2-pixel gap. Rows of smaller canvases are centred.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image, ImageDraw

from stn.experiments.data import distortions, sources

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional experiment config (uses config.data.source and .distortion).",
    lock_config=False)
_SOURCE = flags.DEFINE_string(
    "source", None, "Digit source (default: config.data.source with --config, else 'sample').")
_DISTORTIONS = flags.DEFINE_list(
    "distortions", list(distortions.NAMES), "Distortions to show without --config.")
_NUM = flags.DEFINE_integer("num", 12, "Examples per row.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random distortions.")
_ZOOM = flags.DEFINE_integer("zoom", 2, "Integer upscaling of each pixel.")
_OUT = flags.DEFINE_string("out", "preview.png", "Output PNG path.")

_GAP = 2
_LABEL_WIDTH = 70


def distortion_rows(images: np.ndarray, names: list[str], seed: int) -> list[np.ndarray]:
    """`[num, S, S]` uint8 examples of each distortion in `names`, from uint8 `[num, 28, 28]`."""
    x = jnp.asarray(images[..., None], jnp.float32) / 255.0
    rows = []
    for i, name in enumerate(names):
        key = jax.random.fold_in(jax.random.key(seed), i)
        out = jax.jit(distortions.get(name).apply)(x, key)
        rows.append(np.asarray(jnp.round(out[..., 0] * 255.0), np.uint8))
    return rows


def render_grid(rows: list[np.ndarray], names: list[str], zoom: int = 2) -> Image.Image:
    """Tiles rows of `[num, S, S]` uint8 images into one grey image with a label per row."""
    largest = max(r.shape[1] for r in rows) * zoom
    num = max(r.shape[0] for r in rows)
    width = _LABEL_WIDTH + num * (largest + _GAP)
    height = len(rows) * (largest + _GAP)
    canvas = Image.new("L", (width, height), 40)
    draw = ImageDraw.Draw(canvas)
    for r, (row, name) in enumerate(zip(rows, names)):
        top = r * (largest + _GAP)
        size = row.shape[1]
        draw.text((4, top + largest // 2 - 6), f"{name} {size}x{size}", fill=255)
        for c, example in enumerate(row):
            tile = Image.fromarray(example, "L").resize((size * zoom, size * zoom),
                                                         Image.NEAREST)
            pad = (largest - size * zoom) // 2
            canvas.paste(tile, (_LABEL_WIDTH + c * (largest + _GAP) + pad, top + pad))
    return canvas


def check_flags(num: int, zoom: int, names: list[str]) -> None:
    """One-line ValueErrors for flags that would draw nothing or something absurd.

    (A negative `--num` used to slice from the end, `[:-3]`, drawing every digit but three.)
    """
    if num < 1:
        raise ValueError(f"--num={num}: expected a positive number of examples per row")
    if zoom < 1:
        raise ValueError(f"--zoom={zoom}: expected a positive integer upscaling")
    if not names:
        raise ValueError(f"--distortions is empty: expected some of {', '.join(distortions.NAMES)}")


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    if config is not None:
        source, names = _SOURCE.value or config.data.source, [config.data.distortion]
    else:
        source, names = _SOURCE.value or "sample", list(_DISTORTIONS.value)
    try:
        check_flags(_NUM.value, _ZOOM.value, names)
        for name in names:
            distortions.recipe(name)  # one-line error for an unknown name, before loading data
        digits = sources.load_digits(source)
        if _NUM.value > len(digits.test_images):
            raise ValueError(f"--num={_NUM.value}: {source} has only {len(digits.test_images)} "
                             f"test digits")
    except ValueError as e:  # a one-line message, not a traceback
        raise SystemExit(f"error: {e}") from None
    print(f"drawing {_NUM.value} digits from {source} under {', '.join(names)} (compiling each "
          f"distortion first)", flush=True)
    rows = distortion_rows(digits.test_images[: _NUM.value], names, _SEED.value)
    out = os.path.abspath(_OUT.value)
    render_grid(rows, names, _ZOOM.value).save(out)
    print(f"wrote {out}: {len(names)} rows x {_NUM.value} digits", flush=True)


if __name__ == "__main__":
    app.run(main)
