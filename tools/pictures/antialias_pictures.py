"""Draws the antialiasing pictures of docs/guides/sampling.md from the real sampler.

    python tools/pictures/antialias_pictures.py   # docs/images/sampling_antialias.png, docs/images/sampling_antialias_loss.png

The input is a line drawing: the outline of one digit of the embedded sample at 112 x 112 pixels
(strokes 1-3 pixels wide). An affine grid turns it by theta and reads it into 28 x 28 pixels, a
4x zoom out, with plain bilinear sampling and with `antialias=True` (max_scale 4).

1. The outputs at a few angles, plain above and antialiased below.
2. The loss along a theta sweep: the mean squared difference to a target, the same view at
   theta0 = 10 degrees rendered by 8 x 8 supersampling (box filtered), for both samplers.
"""
from __future__ import annotations

import os
import sys

import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)
from sampling_pictures import _sheet, _tile  # noqa: E402

from stn import sampling, transforms  # noqa: E402
from stn.experiments.data import sources  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "images")
ZOOM = 4  # input pixels per output pixel
SIZE = 28  # output side
ANGLES = (0.0, 7.0, 14.0, 21.0, 28.0, 35.0)  # degrees, for the picture
THETA0 = 10.0  # degrees: the target's angle in the sweep
SUPERSAMPLE = 8


def line_drawing(digit: np.ndarray) -> np.ndarray:
    """[112, 112] in [0, 1]: the outline of the digit, upscaled 4x by bicubic sampling."""
    image = jnp.asarray(digit, jnp.float32)[None, :, :, None]
    big = sampling.sample(image, transforms.base_grid(SIZE * ZOOM, SIZE * ZOOM)[None],
                          kernel="bicubic", padding="border")[0, :, :, 0]
    big = np.asarray(big)
    return ((big > 0.25) & (big < 0.6)).astype(np.float32)


def rotation_grids(degrees: np.ndarray, size: int = SIZE) -> jnp.ndarray:
    """[N, size, size, 2]: the whole input turned by each angle (the input's extent: no zoom in
    normalised units, so 112 input pixels land on `size` output pixels)."""
    angle = np.deg2rad(np.asarray(degrees, np.float64))
    cos, sin = np.cos(angle), np.sin(angle)
    zeros = np.zeros_like(angle)
    theta = np.stack([np.stack([cos, -sin, zeros], -1), np.stack([sin, cos, zeros], -1)], 1)
    return transforms.affine_grid(jnp.asarray(theta, jnp.float32), size, size)


def render(image: np.ndarray, degrees, antialias: bool) -> np.ndarray:
    """[N, 28, 28] views of `image` turned by each of `degrees`."""
    grids = rotation_grids(np.atleast_1d(degrees))
    batch = jnp.broadcast_to(jnp.asarray(image)[None, :, :, None], (grids.shape[0], *image.shape, 1))
    out = sampling.sample(batch, grids, antialias=antialias, max_scale=float(ZOOM))
    return np.asarray(out[..., 0])


def supersampled(image: np.ndarray, degrees: float) -> np.ndarray:
    """[28, 28]: the view at `degrees` averaged over 8 x 8 bilinear samples per output pixel."""
    fine = rotation_grids([degrees], SIZE * SUPERSAMPLE)
    out = sampling.sample(jnp.asarray(image)[None, :, :, None], fine)[0, :, :, 0]
    return np.asarray(out).reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))


def loss_sweep(image: np.ndarray, degrees: np.ndarray) -> dict[str, np.ndarray]:
    """Mean squared difference to the supersampled view at THETA0, per angle, both samplers."""
    target = supersampled(image, THETA0)
    return {name: ((render(image, degrees, aa) - target) ** 2).mean(axis=(1, 2))
            for name, aa in (("plain bilinear", False), ("antialiased bilinear", True))}


def roughness(loss: np.ndarray) -> float:
    """Mean absolute second difference of a sampled curve: 0 for a straight line."""
    return float(np.abs(np.diff(loss, 2)).mean())


def views_picture(image: np.ndarray):
    rows = [("input 112x112", [_tile(image, 1)])]
    for name, aa in (("plain, 28x28", False), ("antialiased", True)):
        rows.append((name, [_tile(view, 4) for view in render(image, np.array(ANGLES), aa)]))
    return _sheet(rows, [f"theta = {a:g} deg" for a in ANGLES])


def loss_chart(degrees: np.ndarray, losses: dict[str, np.ndarray], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for name, loss in losses.items():
        ax.plot(degrees, loss, label=f"{name} (roughness {roughness(loss):.1e})", lw=1.2)
    ax.axvline(THETA0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("theta (degrees)")
    ax.set_ylabel("MSE to the target view")
    ax.set_title(f"Loss along theta: a {ZOOM}x zoom out, target at {THETA0:g} degrees")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    digit = sources.load_digits("sample").test_images[0].astype(np.float32) / 255.0  # a 3
    image = line_drawing(digit)
    views_picture(image).save(os.path.join(OUT, "sampling_antialias.png"))
    degrees = np.arange(-20.0, 40.0001, 0.25)
    losses = loss_sweep(image, degrees)
    loss_chart(degrees, losses, os.path.join(OUT, "sampling_antialias_loss.png"))
    for name, loss in losses.items():
        print(f"{name}: roughness {roughness(loss):.2e}, min at {degrees[np.argmin(loss)]:g} deg, "
              f"loss at theta0 {loss[np.argmin(np.abs(degrees - THETA0))]:.4f}")
    print("wrote docs/images/sampling_antialias.png and docs/images/sampling_antialias_loss.png")


if __name__ == "__main__":
    main()
