"""The paper's distorted-MNIST sets (Jaderberg et al. 2015, section 4.1 and appendix A.1).

Every warp is a layer-1 grid (`stn.transforms`) sampled by `stn.sampling.sample` (bilinear,
zero padding, `align_corners=False`), so the data and the models share one sampler. A grid maps
every OUTPUT pixel to its SOURCE position, so each recipe below writes down the inverse of the
distortion it describes.

Each distortion is split in two pure, batched, jittable functions:

- `sample_params(key, images) -> dict of [B, ...] arrays`: the random draw (exposed so tests and
  users can check the parameter distributions);
- `warp(images, params) -> images`: the deterministic warp,

and `Distortion.apply(images, key) = warp(images, sample_params(key, images))` maps float32
`[B, 28, 28, 1]` in [0, 1] to float32 `[B, S, S, 1]` in [0, 1].

Coordinates: with `align_corners=False` a normalised coordinate `n` of an image of size `L`
lies `n * L / 2` pixels from the image centre. Angles are in degrees, positive is
counter-clockwise as seen on screen (y points down).

| name | canvas | recipe |
| --- | --- | --- |
| `none` | 28 | the digit unchanged |
| `r` | 28 | rotation uniform in [-90, 90] degrees about the centre |
| `rts` | 42 | rotation uniform in [-45, 45], scale uniform in [0.7, 1.2], placed uniformly at random on a 42x42 canvas such that the digit's ink stays on the canvas |
| `p` | 28 | scale uniform in [0.75, 1.0], then each image corner moved by N(0, 5 px) per axis: the homography taking the 4 corners there |
| `e` | 28 | scale uniform in [0.75, 1.0], then the 16 control points of a 4x4 thin-plate spline moved by N(0, 1.5 px) per axis |
| `tc` | 60 | digit at a uniformly random integer position fully inside a 60x60 canvas, plus 6 patches of 6x6 cut at random positions from other digits of the batch, pasted at random positions (max-combined) |
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from stn import sampling, transforms

DIGIT_SIZE = 28
Params = dict  # name -> [B, ...] array


class Distortion(NamedTuple):
    """A named distortion: `apply(images [B,28,28,1], key) -> [B, canvas_size, canvas_size, 1]`."""

    name: str
    canvas_size: int
    apply: Callable[[jax.Array, jax.Array], jax.Array]


class Recipe(NamedTuple):
    """A distortion split into its random draw and its deterministic warp."""

    name: str
    canvas_size: int
    sample_params: Callable[[jax.Array, jax.Array], Params]
    warp: Callable[[jax.Array, Params], jax.Array]


# ----------------------------------------------------------------------------- shared helpers
def _check_images(images: jax.Array) -> jax.Array:
    """Raises a one-line ValueError unless `images` is float `[B, 28, 28, 1]`."""
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE, 1):
        raise ValueError(f"distortions expect images [B, 28, 28, 1], got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"distortions expect float images in [0, 1], got dtype {images.dtype}")
    return images


def _sample(images: jax.Array, grid: jax.Array) -> jax.Array:
    """The one sampler of the project: bilinear, zero padding, clipped to [0, 1]."""
    out = sampling.sample(images, grid, kernel="bilinear", padding="zeros", align_corners=False)
    return jnp.clip(out, 0.0, 1.0)  # bilinear weights sum to <= 1; clip only float round-off


def _uniform(key: jax.Array, batch: int, low: float, high: float) -> jax.Array:
    return jax.random.uniform(key, (batch,), jnp.float32, low, high)


def rotation(angle_deg: jax.Array) -> jax.Array:
    """`[B]` angles -> `[B, 2, 2]` matrices rotating counter-clockwise on screen (y down)."""
    a = jnp.deg2rad(angle_deg)
    c, s = jnp.cos(a), jnp.sin(a)
    return jnp.stack([jnp.stack([c, s], -1), jnp.stack([-s, c], -1)], axis=1)


def placement_theta(angle_deg: jax.Array, scale: jax.Array, shift: jax.Array,
                    out_size: int, in_size: int = DIGIT_SIZE) -> jax.Array:
    """Affine `theta [B, 2, 3]` for `stn.transforms.affine_grid` (paper eq. 1) of a placement.

    The placement takes a source pixel `v` (pixels from the source centre) to the canvas pixel
    `u = scale * F(angle) v + shift` (pixels from the canvas centre). The grid needs its inverse,
    `v = F(-angle) (u - shift) / scale`, in normalised coordinates (`v = v_n * in/2`,
    `u = u_n * out/2`):

        v_n = k F(-angle) u_n - F(-angle) shift * 2 / (scale * in),   k = out / (scale * in).
    """
    inverse = jnp.swapaxes(rotation(angle_deg), 1, 2)  # F(-a) = F(a)^T
    k = (out_size / (scale * in_size))[:, None, None]
    linear = k * inverse
    offset = -jnp.einsum("bij,bj->bi", inverse, shift) * (2.0 / (scale * in_size))[:, None]
    return jnp.concatenate([linear, offset[:, :, None]], axis=2)


def _affine_warp(images: jax.Array, theta: jax.Array, out_size: int) -> jax.Array:
    grid = transforms.get("affine").grid(theta, out_size, out_size)
    return _sample(images, grid)


def ink_box(images: jax.Array, threshold: float = 0.1) -> jax.Array:
    """`[B, 4]` = (left, top, right, bottom) outer pixel edges of the ink (pixels > threshold),
    in pixels from the image centre. A blank image gets the empty box (0, 0, 0, 0)."""
    half = images.shape[1] / 2.0
    ink = images[..., 0] > threshold
    rows, cols = jnp.any(ink, axis=2), jnp.any(ink, axis=1)  # [B, H], [B, W]

    def extent(mask):
        size = mask.shape[1]
        first = jnp.argmax(mask, axis=1)
        last = size - 1 - jnp.argmax(mask[:, ::-1], axis=1)
        low, high = first - half, last + 1.0 - half
        any_ink = jnp.any(mask, axis=1)
        return jnp.where(any_ink, low, 0.0), jnp.where(any_ink, high, 0.0)

    left, right = extent(cols)
    top, bottom = extent(rows)
    return jnp.stack([left, top, right, bottom], axis=-1).astype(jnp.float32)


def placed_extent(box: jax.Array, angle_deg: jax.Array, scale: jax.Array) -> jax.Array:
    """`[B, 4]` bounding box (min_x, min_y, max_x, max_y) of `box` after `scale * F(angle)`."""
    left, top, right, bottom = (box[:, i] for i in range(4))
    corners = jnp.stack([jnp.stack([left, top], -1), jnp.stack([right, top], -1),
                         jnp.stack([left, bottom], -1), jnp.stack([right, bottom], -1)], 1)
    moved = jnp.einsum("bij,bkj->bki", rotation(angle_deg), corners) * scale[:, None, None]
    return jnp.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=-1)


# ----------------------------------------------------------------------------- none
def _none_params(key: jax.Array, images: jax.Array) -> Params:
    return {}


def _none_warp(images: jax.Array, params: Params) -> jax.Array:
    return _check_images(images).astype(jnp.float32)


# ----------------------------------------------------------------------------- R
R_ANGLE = (-90.0, 90.0)


def r_params(key: jax.Array, images: jax.Array) -> Params:
    """R: `angle` uniform in [-90, 90] degrees (paper appendix A.1)."""
    return {"angle": _uniform(key, images.shape[0], *R_ANGLE)}


def r_warp(images: jax.Array, params: Params) -> jax.Array:
    """Rotates each digit by `params["angle"]` degrees about its centre on a 28x28 canvas."""
    images = _check_images(images)
    angle = params["angle"]
    theta = placement_theta(angle, jnp.ones_like(angle), jnp.zeros((angle.shape[0], 2)),
                            DIGIT_SIZE)
    return _affine_warp(images, theta, DIGIT_SIZE)


# ----------------------------------------------------------------------------- RTS
RTS_CANVAS = 42
RTS_ANGLE = (-45.0, 45.0)
RTS_SCALE = (0.7, 1.2)


def rts_params(key: jax.Array, images: jax.Array) -> Params:
    """RTS: `angle` U[-45, 45] deg, `scale` U[0.7, 1.2], `shift` [B, 2] (pixels from the canvas
    centre) uniform over the positions that keep the rotated, scaled ink box on the 42x42 canvas
    (the centre where the digit is wider than the canvas)."""
    images = _check_images(images)
    batch = images.shape[0]
    k_angle, k_scale, k_shift = jax.random.split(key, 3)
    angle = _uniform(k_angle, batch, *RTS_ANGLE)
    scale = _uniform(k_scale, batch, *RTS_SCALE)
    extent = placed_extent(ink_box(images), angle, scale)  # [B, 4] min_x, min_y, max_x, max_y
    half = RTS_CANVAS / 2.0
    low, high = -half - extent[:, :2], half - extent[:, 2:]  # [B, 2] allowed shift range
    u = jax.random.uniform(k_shift, (batch, 2), jnp.float32)
    shift = jnp.where(high >= low, low + u * (high - low), 0.5 * (low + high))
    return {"angle": angle, "scale": scale, "shift": shift}


def rts_warp(images: jax.Array, params: Params) -> jax.Array:
    """Rotates, scales and places each digit on a 42x42 canvas (`placement_theta`)."""
    images = _check_images(images)
    theta = placement_theta(params["angle"], params["scale"], params["shift"], RTS_CANVAS)
    return _affine_warp(images, theta, RTS_CANVAS)


# ----------------------------------------------------------------------------- P
P_SCALE = (0.75, 1.0)
P_CORNER_STD = 5.0  # pixels
_CORNERS = ((-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))  # normalised (x, y)


def p_params(key: jax.Array, images: jax.Array) -> Params:
    """P: `scale` U[0.75, 1.0]; `corner_noise` [B, 4, 2] ~ N(0, 5 px) per axis, moving the four
    image corners (order: top-left, top-right, bottom-left, bottom-right) after the scaling."""
    batch = images.shape[0]
    k_scale, k_noise = jax.random.split(key)
    return {"scale": _uniform(k_scale, batch, *P_SCALE),
            "corner_noise": P_CORNER_STD * jax.random.normal(k_noise, (batch, 4, 2), jnp.float32)}


def homography_from_points(target: jax.Array, source: jax.Array) -> jax.Array:
    """`[B, 8]` homography (H[2,2] = 1) taking 4 `target` points to 4 `source` points, [B, 4, 2].

    Each correspondence gives two linear equations in h0..h7:
    `h0 x + h1 y + h2 - h6 x x_s - h7 y x_s = x_s` and `h3 x + h4 y + h5 - h6 x y_s - h7 y y_s
    = y_s`; the 8x8 system is solved per example.
    """
    x, y = target[..., 0], target[..., 1]
    xs, ys = source[..., 0], source[..., 1]
    one, zero = jnp.ones_like(x), jnp.zeros_like(x)
    rows_x = jnp.stack([x, y, one, zero, zero, zero, -x * xs, -y * xs], -1)
    rows_y = jnp.stack([zero, zero, zero, x, y, one, -x * ys, -y * ys], -1)
    system = jnp.concatenate([rows_x, rows_y], axis=1)  # [B, 8, 8]
    rhs = jnp.concatenate([xs, ys], axis=1)  # [B, 8]
    return jnp.linalg.solve(system, rhs[..., None])[..., 0]


def p_warp(images: jax.Array, params: Params) -> jax.Array:
    """Projective warp: the corner `c` of the digit goes to `scale * c + noise` on the canvas.

    The grid is the homography the other way, canvas corners -> digit corners, so it is solved
    from the moved corners (target) to the regular corners (source)."""
    images = _check_images(images)
    scale = params["scale"]
    corners = jnp.broadcast_to(jnp.asarray(_CORNERS, jnp.float32), (scale.shape[0], 4, 2))
    moved = scale[:, None, None] * corners + params["corner_noise"] / (DIGIT_SIZE / 2.0)
    homography = homography_from_points(moved, corners)
    grid = transforms.get("projective").grid(homography, DIGIT_SIZE, DIGIT_SIZE)
    return _sample(images, grid)


# ----------------------------------------------------------------------------- E
E_SCALE = (0.75, 1.0)
E_POINT_STD = 1.5  # pixels
E_GRID = 4  # 4x4 = 16 control points


def e_params(key: jax.Array, images: jax.Array) -> Params:
    """E: `scale` U[0.75, 1.0]; `point_noise` [B, 16, 2] ~ N(0, 1.5 px) per axis, moving the 16
    control points of a regular 4x4 thin-plate spline grid."""
    batch = images.shape[0]
    k_scale, k_noise = jax.random.split(key)
    count = E_GRID * E_GRID
    return {"scale": _uniform(k_scale, batch, *E_SCALE),
            "point_noise": E_POINT_STD * jax.random.normal(k_noise, (batch, count, 2),
                                                           jnp.float32)}


def e_warp(images: jax.Array, params: Params) -> jax.Array:
    """Elastic warp with the layer-1 16-point TPS (its control points are regular on the canvas).

    The digit is scaled by `scale` and then displaced by `noise` at the control points, written
    as the inverse map the TPS grid needs: the canvas control point `c` samples the digit at
    `(c - noise) / scale` (noise in pixels, normalised by 14). As the noise is symmetric this
    has the same law as moving the scaled digit's points by +noise."""
    images = _check_images(images)
    scale = params["scale"][:, None, None]
    control = jnp.asarray(transforms.tps_control_points(E_GRID), jnp.float32)[None]
    source = (control - params["point_noise"] / (DIGIT_SIZE / 2.0)) / scale
    grid = transforms.get("tps").grid(source, DIGIT_SIZE, DIGIT_SIZE)
    return _sample(images, grid)


# ----------------------------------------------------------------------------- TC
TC_CANVAS = 60
TC_PATCHES = 6
TC_PATCH_SIZE = 6


def tc_params(key: jax.Array, images: jax.Array) -> Params:
    """TC: integer positions, all uniform:

    - `digit_offset` [B, 2]: top-left (x, y) of the 28x28 digit on the canvas, in [0, 32], so
      the whole digit is inside;
    - `patch_source` [B, 6, 2]: top-left (x, y) of each 6x6 patch in its source digit, in
      [0, 22]; patch `j` (0-based) is cut from the digit `j + 1` places further in the batch
      (`jnp.roll`), i.e. from other digits whenever the batch has more than 6;
    - `patch_offset` [B, 6, 2]: top-left (x, y) of each patch on the canvas, in [0, 54].
    """
    batch = images.shape[0]
    k_digit, k_src, k_dst = jax.random.split(key, 3)
    top_digit = TC_CANVAS - DIGIT_SIZE
    top_src, top_dst = DIGIT_SIZE - TC_PATCH_SIZE, TC_CANVAS - TC_PATCH_SIZE
    shape = (batch, TC_PATCHES, 2)
    return {
        "digit_offset": jax.random.randint(k_digit, (batch, 2), 0, top_digit + 1, jnp.int32),
        "patch_source": jax.random.randint(k_src, shape, 0, top_src + 1, jnp.int32),
        "patch_offset": jax.random.randint(k_dst, shape, 0, top_dst + 1, jnp.int32),
    }


def _translation_theta(canvas_minus_source: jax.Array) -> jax.Array:
    """Affine theta for a pure translation: canvas pixel `(X, Y)` samples the digit pixel
    `(X, Y) - d`, where `d` [B, 2] is the digit's top-left corner on the canvas."""
    batch = canvas_minus_source.shape[0]
    center_shift = (canvas_minus_source.astype(jnp.float32)
                    + (DIGIT_SIZE - TC_CANVAS) / 2.0)  # digit centre from canvas centre
    return placement_theta(jnp.zeros((batch,)), jnp.ones((batch,)), center_shift, TC_CANVAS)


def _window(offset: jax.Array, size: int) -> jax.Array:
    """`[B, 60, 60, 1]` float mask of the `size`x`size` window with top-left `offset` [B, 2]."""
    pixels = jnp.arange(TC_CANVAS)
    inside_x = (pixels[None, :] >= offset[:, :1]) & (pixels[None, :] < offset[:, :1] + size)
    inside_y = (pixels[None, :] >= offset[:, 1:]) & (pixels[None, :] < offset[:, 1:] + size)
    return (inside_y[:, :, None] & inside_x[:, None, :]).astype(jnp.float32)[..., None]


def tc_digit_layer(images: jax.Array, params: Params) -> jax.Array:
    """The digit alone on the 60x60 canvas (integer translation, so pixels are copied exactly)."""
    return _affine_warp(images, _translation_theta(params["digit_offset"]), TC_CANVAS)


def tc_clutter_layer(images: jax.Array, params: Params) -> jax.Array:
    """The 6 clutter patches alone on the 60x60 canvas, max-combined."""
    clutter = jnp.zeros((images.shape[0], TC_CANVAS, TC_CANVAS, 1), jnp.float32)
    for j in range(TC_PATCHES):
        other = jnp.roll(images, -(j + 1), axis=0)
        source, offset = params["patch_source"][:, j], params["patch_offset"][:, j]
        shifted = _affine_warp(other, _translation_theta(offset - source), TC_CANVAS)
        clutter = jnp.maximum(clutter, shifted * _window(offset, TC_PATCH_SIZE))
    return clutter


def tc_warp(images: jax.Array, params: Params) -> jax.Array:
    """Translated digit and clutter, max-combined on a black 60x60 canvas."""
    images = _check_images(images)
    return jnp.maximum(tc_digit_layer(images, params), tc_clutter_layer(images, params))


# ----------------------------------------------------------------------------- registry
_RECIPES = {
    "none": Recipe("none", DIGIT_SIZE, _none_params, _none_warp),
    "r": Recipe("r", DIGIT_SIZE, r_params, r_warp),
    "rts": Recipe("rts", RTS_CANVAS, rts_params, rts_warp),
    "p": Recipe("p", DIGIT_SIZE, p_params, p_warp),
    "e": Recipe("e", DIGIT_SIZE, e_params, e_warp),
    "tc": Recipe("tc", TC_CANVAS, tc_params, tc_warp),
}
NAMES = tuple(_RECIPES)


def recipe(name: str) -> Recipe:
    """The `Recipe` (random draw and warp) of distortion `name` (case-insensitive)."""
    key = str(name).lower()
    if key not in _RECIPES:
        raise ValueError(f"unknown distortion {name!r}; expected one of {', '.join(NAMES)}")
    return _RECIPES[key]


def _make_apply(r: Recipe) -> Callable[[jax.Array, jax.Array], jax.Array]:
    def apply(images: jax.Array, key: jax.Array) -> jax.Array:
        images = _check_images(images).astype(jnp.float32)
        return r.warp(images, r.sample_params(key, images))

    apply.__name__ = f"apply_{r.name}"
    apply.__doc__ = r.warp.__doc__
    return apply


_DISTORTIONS = {name: Distortion(name, r.canvas_size, _make_apply(r))
                for name, r in _RECIPES.items()}


def get(name: str | Distortion) -> Distortion:
    """The `Distortion` named `name`: one of `none`, `r`, `rts`, `p`, `e`, `tc` (a `Distortion`
    is returned as it is)."""
    if isinstance(name, Distortion):
        return name
    return _DISTORTIONS[recipe(name).name]
