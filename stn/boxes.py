"""Axis-aligned boxes in normalised image coordinates, and their overlap (pure jnp, layer 1).

A box is `[..., 4]` = `(x0, y0, x1, y1)` with `x0 <= x1`, `y0 <= y1`, in the sampler's
normalised coordinates with `align_corners=False`: -1 and 1 are the outer edges of the image's
corner pixels, x runs along the width. So a box covering pixel columns `a .. b - 1` of an image
`W` wide has `x0 = 2 a / W - 1`, `x1 = 2 b / W - 1` (`pixel_box`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["pixel_box", "attention_box", "box_attention", "area", "intersection_area",
           "covered_fraction", "iou"]


def pixel_box(left: jax.Array, top: jax.Array, width: float, height: float,
              image_width: int, image_height: int) -> jax.Array:
    """`[B, 4]` normalised box of the pixel rectangle with top-left corner `(left, top)` [B]
    (pixels, float or int) and size `width x height` pixels, on a `image_width x image_height`
    image: `x = 2 * pixel / size - 1` at the outer pixel edges."""
    left = jnp.asarray(left, jnp.float32)
    top = jnp.asarray(top, jnp.float32)
    x0, x1 = 2.0 * left / image_width - 1.0, 2.0 * (left + width) / image_width - 1.0
    y0, y1 = 2.0 * top / image_height - 1.0, 2.0 * (top + height) / image_height - 1.0
    return jnp.stack([x0, y0, x1, y1], axis=-1)


def attention_box(params: jax.Array) -> jax.Array:
    """`[B, 3]` attention parameters `(s, t_x, t_y)` (paper eq. 2) -> `[B, 4]` box.

    With `align_corners=False` the output grid's outer edges `x_t = +-1` sample the input at
    `x_s = s x_t + t_x`, so the crop covers `[t_x - |s|, t_x + |s|]` (a negative scale mirrors
    the crop but covers the same region)."""
    params = jnp.asarray(params, jnp.float32)
    half = jnp.abs(params[..., 0])
    tx, ty = params[..., 1], params[..., 2]
    return jnp.stack([tx - half, ty - half, tx + half, ty + half], axis=-1)


def box_attention(box: jax.Array) -> jax.Array:
    """`[B, 4]` square box -> `[B, 3]` attention parameters `(s, t_x, t_y)` that crop it; the
    inverse of `attention_box` for square boxes (a non-square box gets the mean half-side)."""
    box = jnp.asarray(box, jnp.float32)
    half = 0.25 * ((box[..., 2] - box[..., 0]) + (box[..., 3] - box[..., 1]))
    centre_x = 0.5 * (box[..., 0] + box[..., 2])
    centre_y = 0.5 * (box[..., 1] + box[..., 3])
    return jnp.stack([half, centre_x, centre_y], axis=-1)


def area(box: jax.Array) -> jax.Array:
    """`[..., 4]` -> `[...]` area (0 for an empty or inverted box)."""
    width = jnp.maximum(box[..., 2] - box[..., 0], 0.0)
    height = jnp.maximum(box[..., 3] - box[..., 1], 0.0)
    return width * height


def intersection_area(a: jax.Array, b: jax.Array) -> jax.Array:
    """`|a n b|`, elementwise over the leading axes: `[..., 4]` x `[..., 4]` -> `[...]`."""
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    lower = jnp.maximum(a[..., :2], b[..., :2])
    upper = jnp.minimum(a[..., 2:], b[..., 2:])
    return area(jnp.concatenate([lower, upper], axis=-1))


def covered_fraction(crop: jax.Array, target: jax.Array) -> jax.Array:
    """The share of `target` that `crop` covers, `|crop n target| / |target|` (`[..., 4]` x
    `[..., 4]` -> `[...]`): 1 when the crop holds the whole target, however large the crop;
    0 for an empty target."""
    target_area = area(jnp.asarray(target, jnp.float32))
    inter = intersection_area(crop, target)
    return jnp.where(target_area > 0, inter / jnp.where(target_area > 0, target_area, 1.0), 0.0)


def iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Intersection over union of two boxes, elementwise over the leading axes: `[..., 4]` x
    `[..., 4]` -> `[...]`, `|a n b| / (|a| + |b| - |a n b|)`; 0 where both boxes are empty."""
    inter = intersection_area(a, b)
    union = area(jnp.asarray(a, jnp.float32)) + area(jnp.asarray(b, jnp.float32)) - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)
