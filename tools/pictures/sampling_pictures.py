"""Draws the pictures of docs/guides/sampling.md from the real sampler.

    python tools/pictures/sampling_pictures.py      # writes docs/images/sampling_kernels.png, docs/images/sampling_volume.png

1. One digit of the embedded MNIST sample, its middle zoomed 8x (an attention grid, paper eq. 2)
   with each kernel: nearest, bilinear, bicubic (Keys a = -0.75), Keys a = -0.5, Gaussian sigma 0.7.
2. A volume (the digit extruded in depth, fading with z, with a ball beside it) and a few of its
   depth slices: as it is, turned 35 degrees about the x axis (affine3d, trilinear), and warped by
   a smooth random velocity field integrated by scaling and squaring (a diffeomorphic warp).
"""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from stn import kernels, sampling, transforms  # noqa: E402
from stn.experiments.data import sources  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "images")
KERNELS = [("nearest", "nearest"), ("bilinear", "bilinear"), ("bicubic (Keys a=-0.75)", "bicubic"),
           ("Keys a=-0.5", kernels.Keys(-0.5)), ("Gaussian sigma=0.7", kernels.Gaussian(0.7, 2.5))]


def _tile(array: np.ndarray, scale: int = 1) -> Image.Image:
    """A [H, W] array in [0, 1] as a grey image, enlarged ``scale`` times (nearest)."""
    pixels = (np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(pixels, "L")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def _sheet(rows: list[tuple[str, list[Image.Image]]], captions: list[str]) -> Image.Image:
    """Tiles in rows with a label on the left of each row and captions above the columns."""
    pad, label_width, caption_height = 6, 150, 18
    tile_w = max(t.width for _, tiles in rows for t in tiles)
    tile_h = max(t.height for _, tiles in rows for t in tiles)
    columns = max(len(tiles) for _, tiles in rows)
    sheet = Image.new("L", (label_width + columns * (tile_w + pad) + pad,
                            caption_height + len(rows) * (tile_h + pad) + pad), 255)
    draw = ImageDraw.Draw(sheet)
    for c, caption in enumerate(captions):
        draw.text((label_width + c * (tile_w + pad) + pad, 3), caption, fill=0)
    for r, (label, tiles) in enumerate(rows):
        top = caption_height + r * (tile_h + pad) + pad
        draw.text((4, top + tile_h // 2 - 6), label, fill=0)
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (label_width + c * (tile_w + pad) + pad, top))
    return sheet


ZOOM = (0.3, 0.0, 0.05)  # attention (s, t_x, t_y): the middle of the digit, 0.3 of its width


def kernel_picture(digit: np.ndarray) -> Image.Image:
    """The digit's middle (0.3 of its width, the box on the input) zoomed to 84x84 pixels."""
    image = jnp.asarray(digit, jnp.float32)[None, :, :, None]
    zoom = transforms.get("attention").grid(jnp.array([ZOOM]), 84, 84)
    tiles = [_tile(np.asarray(sampling.sample(image, zoom, kernel=k)[0, :, :, 0]), 2)
             for _, k in KERNELS]
    whole = _tile(digit, 6).convert("L")
    scale, t_x, t_y = ZOOM
    box = [((t - scale + 1) * 14 * 6, (t + scale + 1) * 14 * 6) for t in (t_x, t_y)]
    ImageDraw.Draw(whole).rectangle([box[0][0], box[1][0], box[0][1], box[1][1]], outline=128,
                                    width=2)
    return _sheet([("input (28x28)", [whole]), ("box zoomed 8x", tiles)],
                  ["input / kernel: " + KERNELS[0][0]] + [name for name, _ in KERNELS[1:]])


def volume_of(digit: np.ndarray, depth: int = 28) -> np.ndarray:
    """[D, 28, 28]: the digit extruded through the middle half of the depth, fading with z, and
    a ball of radius 5 in a corner."""
    z = np.arange(depth)[:, None, None]
    middle = (z >= depth // 4) & (z < 3 * depth // 4)
    fade = 1.0 - 0.6 * (z - depth // 4) / (depth // 2)
    volume = np.where(middle, digit[None] * fade, 0.0)
    zz, yy, xx = np.meshgrid(np.arange(depth), np.arange(28), np.arange(28), indexing="ij")
    ball = ((zz - depth / 2) ** 2 + (yy - 6) ** 2 + (xx - 21) ** 2) < 25
    return np.maximum(volume, 0.8 * ball)


def volume_picture(digit: np.ndarray) -> Image.Image:
    volume = jnp.asarray(volume_of(digit), jnp.float32)[None, ..., None]  # [1, D, H, W, 1]
    depth = volume.shape[1]
    angle = np.deg2rad(35.0)
    # Output (x, y, z) -> source (x, y cos - z sin, y sin + z cos): a turn about the x axis.
    theta = jnp.array([[[1.0, 0.0, 0.0, 0.0],
                        [0.0, np.cos(angle), -np.sin(angle), 0.0],
                        [0.0, np.sin(angle), np.cos(angle), 0.0]]], jnp.float32)
    turned = sampling.sample(volume, transforms.affine_grid(theta, depth, 28, 28))
    key = jax.random.PRNGKey(0)
    coarse = jax.random.normal(key, (1, 4, 4, 4, 3)) * 3.0  # pixels, on a 4^3 lattice
    velocity = sampling.sample(coarse, transforms.base_grid(depth, 28, 28, align_corners=True)[None],
                               kernel="bicubic", padding="border", align_corners=True)
    displacement = transforms.integrate_velocity(velocity, steps=6)
    warped = sampling.sample(volume, transforms.displacement_grid(displacement))
    slices = list(range(6, depth - 4, 4))
    rows = [(name, [_tile(np.asarray(v[0, z, :, :, 0]), 3) for z in slices])
            for name, v in [("volume", volume), ("affine3d: 35 deg about x", turned),
                            ("velocity field, 2^6 steps", warped)]]
    return _sheet(rows, [f"z = {z}" for z in slices])


def main() -> None:
    digits = sources.load_digits("sample")
    digit = digits.test_images[0].astype(np.float32) / 255.0  # a 3
    kernel_picture(digit).save(os.path.join(OUT, "sampling_kernels.png"))
    volume_picture(digit).save(os.path.join(OUT, "sampling_volume.png"))
    print("wrote docs/images/sampling_kernels.png and docs/images/sampling_volume.png")


if __name__ == "__main__":
    main()
