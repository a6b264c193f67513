"""Image samplers of the spatial transformer (Jaderberg et al. 2015, section 3.3).

Given an input feature map ``U`` and, for every output pixel ``i``, a source point ``(x_s, y_s)``
in pixel units, the sampler computes (paper eq. 3)

    V_i^c = sum_n sum_m U_nm^c k(x_s - m) k(y_s - n).

Two kernels are implemented:

* ``"nearest"`` (paper eq. 4): the integer kernel, ``V_i = U[floor(y_s + 0.5), floor(x_s + 0.5)]``.
* ``"bilinear"`` (paper eq. 5): ``k(d) = max(0, 1 - |d|)``, so only the four pixels around the
  source point contribute.

Conventions (same as ``torch.nn.functional.grid_sample``, but NHWC): the grid's last axis is
``(x, y)`` normalised to [-1, 1], x along the width. With ``align_corners=False`` -1 and 1 are the
outer edges of the corner pixels, with ``align_corners=True`` their centres. Padding (``"zeros"``,
``"border"``, ``"reflection"``) acts on the continuous source coordinate before the kernel
weights are computed, as in torch.

Gradients (paper eqs. 6-7) come from ``jax`` autodiff of the interpolation written between
``x0 = floor(x_s)`` and ``x0 + 1``:

    dV/dU_nm = max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|)
    dV/dx_s  = sum_n sum_m U_nm max(0, 1 - |y_s - n|) * g(m - x_s),
               g = 0 if |m - x_s| >= 1, +1 if m >= x_s, -1 if m < x_s.

At integer ``x_s`` the kernel has a kink. The paper's formula read literally then gives ``U_m``
(only the ``m = x_s`` term survives with +1), so a constant image would get a non-zero gradient.
We take the one-sided derivative of the interpolation between ``floor(x_s)`` and
``floor(x_s) + 1``, i.e. ``U_{m+1} - U_m`` (as torch and ``jax.scipy.ndimage.map_coordinates``
do); a constant image then has zero gradient everywhere. The nearest kernel has zero gradient with
respect to the grid, and its image gradient goes to the chosen pixel.

Neighbours outside the image are masked with ``jnp.where`` (never by multiplying by a mask), so
no NaN or inf from an out-of-range value leaks into a gradient.

Implementation: bilinear sampling of floating images gathers each point's 2x2 neighbourhood in one
gather and differentiates through a custom JVP that states the closed forms above (reverse mode is
its transpose: one windowed scatter-add to the image). The plain four-gather autodiff version
(``method="gather"`` of the internal ``_sample``) is the reference path; both give the same values
and gradients (tests/test_sampling_paths.py). Speed and memory: docs/performance.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KERNELS = ("nearest", "bilinear")
PADDINGS = ("zeros", "border", "reflection")


def unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
    """Maps a normalised coordinate in [-1, 1] to pixel units (pixel centres at 0 .. size-1).

    align_corners=True:  -1 -> 0, 1 -> size - 1       (corner pixel centres)
    align_corners=False: -1 -> -0.5, 1 -> size - 0.5  (corner pixel outer edges)
    """
    if align_corners:
        return (coord + 1.0) * 0.5 * (size - 1)
    return ((coord + 1.0) * size - 1.0) * 0.5


def _clip_coordinates(coord: jax.Array, size: int) -> jax.Array:
    """Clamps to [0, size - 1] with zero gradient at and beyond the ends (torch's convention)."""
    upper = jnp.asarray(size - 1, coord.dtype)
    inside = (coord > 0) & (coord < upper)
    return jnp.where(inside, coord, jnp.where(coord <= 0, jnp.zeros_like(coord), upper))


def _reflect_coordinates(coord: jax.Array, low: float, high: float) -> jax.Array:
    """Reflects ``coord`` into [low, high] by repeated mirroring at the two ends."""
    span = high - low
    if span <= 0:
        return jnp.zeros_like(coord)
    distance = jnp.abs(coord - low)
    flips = jnp.floor(distance / span)
    extra = distance - flips * span
    even = jnp.remainder(flips, 2) == 0
    return jnp.where(even, low + extra, high - extra)


def apply_padding(coord: jax.Array, size: int, padding: str, align_corners: bool) -> jax.Array:
    """Applies border or reflection padding to a pixel-unit coordinate (identity for zeros).

    Reflection mirrors about the pixel centres of the ends (align_corners=True) or about their
    outer edges (align_corners=False) and then clamps, exactly as torch's grid_sample.
    """
    if padding == "border":
        return _clip_coordinates(coord, size)
    if padding == "reflection":
        if align_corners:
            reflected = _reflect_coordinates(coord, 0.0, float(size - 1))
        else:
            reflected = _reflect_coordinates(coord, -0.5, size - 0.5)
        return _clip_coordinates(reflected, size)
    return coord


def _gather(image: jax.Array, xs: jax.Array, ys: jax.Array) -> jax.Array:
    """``image[b, ys, xs, :]`` for integer ``xs, ys`` [B, Ho, Wo]; zero where out of range."""
    batch, height, width, channels = image.shape
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    flat_index = jnp.clip(ys, 0, height - 1) * width + jnp.clip(xs, 0, width - 1)
    flat_image = image.reshape(batch, height * width, channels)
    values = jnp.take_along_axis(
        flat_image, flat_index.reshape(batch, -1, 1), axis=1, mode="promise_in_bounds"
    ).reshape(*xs.shape, channels)
    return jnp.where(inside[..., None], values, jnp.zeros((), image.dtype))


def _sample_nearest(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Paper eq. 4: the pixel at ``(floor(y + 0.5), floor(x + 0.5))``; no gradient to the grid."""
    xi = jnp.floor(jax.lax.stop_gradient(x) + 0.5).astype(jnp.int32)
    yi = jnp.floor(jax.lax.stop_gradient(y) + 0.5).astype(jnp.int32)
    return _gather(image, xi, yi)


def _sample_bilinear(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Paper eq. 5 over the four neighbours ``floor(.)`` and ``floor(.) + 1`` of each point.

    The reference path ("gather"): four batched gathers, autodiff backward (four scatter-adds).
    """
    x0f = jnp.floor(x)
    y0f = jnp.floor(y)
    # The fractional parts carry the gradient: d(wx1)/dx = 1 even at integer x (one-sided).
    wx1 = (x - x0f)[..., None]
    wy1 = (y - y0f)[..., None]
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    x0 = x0f.astype(jnp.int32)
    y0 = y0f.astype(jnp.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    top = wx0 * _gather(image, x0, y0) + wx1 * _gather(image, x1, y0)
    bottom = wx0 * _gather(image, x0, y1) + wx1 * _gather(image, x1, y1)
    return wy0 * top + wy1 * bottom


# ---------------------------------------------------------------- the "window" bilinear path
#
# One gather of each point's 2x2 neighbourhood from the image padded by one zero pixel (instead
# of four gathers), and a custom JVP that uses the closed-form grid derivatives of paper eqs. 6-7.
# Reverse mode transposes that JVP: the image cotangent becomes ONE windowed scatter-add (2x2
# windows) and the grid cotangent a few element-wise products. On XLA CPU this backward is several
# times faster than autodiff of the reference path and needs half its temporary memory (see
# docs/performance.md); XLA's CPU scatter runs sequentially, so the result is deterministic.


def _window_gather(image: jax.Array, x0: jax.Array, y0: jax.Array) -> tuple[jax.Array, ...]:
    """Pixels ``(y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1)``, each ``[B, Ho, Wo, C]``.

    Zero outside the image: the image gets a one-pixel zero border, so a window that overlaps the
    image (``-1 <= x0 <= W-1``) reads zeros for its outside half, and a window that lies wholly
    outside is masked with ``where`` (its clipped start would read real pixels).
    """
    batch, height, width, channels = image.shape
    padded = jnp.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = jnp.arange(batch, dtype=jnp.int32)[:, None, None] * (height + 2)
    rows = rows + jnp.clip(y0, -1, height - 1) + 1
    cols = jnp.clip(x0, -1, width - 1) + 1
    starts = jnp.stack([rows, cols], axis=-1).reshape(-1, 2)
    windows = jax.lax.gather(
        padded.reshape(batch * (height + 2), width + 2, channels),
        starts,
        jax.lax.GatherDimensionNumbers(
            offset_dims=(1, 2, 3), collapsed_slice_dims=(), start_index_map=(0, 1)
        ),
        slice_sizes=(2, 2, channels),
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    ).reshape(*x0.shape, 2, 2, channels)
    outside = (x0 < -1) | (x0 > width - 1) | (y0 < -1) | (y0 > height - 1)
    windows = jnp.where(outside[..., None, None, None], jnp.zeros((), image.dtype), windows)
    return windows[..., 0, 0, :], windows[..., 0, 1, :], windows[..., 1, 0, :], windows[..., 1, 1, :]


def _four_gathers(image: jax.Array, x0: jax.Array, y0: jax.Array) -> tuple[jax.Array, ...]:
    """The same four neighbours as ``_window_gather`` by four gathers (faster without a backward)."""
    x1, y1 = x0 + 1, y0 + 1
    return _gather(image, x0, y0), _gather(image, x1, y0), _gather(image, x0, y1), _gather(image, x1, y1)


def _window_interpolate(image: jax.Array, x: jax.Array, y: jax.Array, gather=_window_gather):
    """Eq. 5 from the four neighbours; also returns them and the fractional parts.

    ``gather`` only changes how the (identical) neighbour values are fetched, so the result is
    bit-identical for ``_window_gather`` and ``_four_gathers``.
    """
    x0f = jax.lax.stop_gradient(jnp.floor(x))
    y0f = jax.lax.stop_gradient(jnp.floor(y))
    fx = (x - x0f)[..., None]
    fy = (y - y0f)[..., None]
    v00, v01, v10, v11 = gather(image, x0f.astype(jnp.int32), y0f.astype(jnp.int32))
    top = v00 + fx * (v01 - v00)
    bottom = v10 + fx * (v11 - v10)
    return top + fy * (bottom - top), (v00, v01, v10, v11, fx, fy)


@jax.custom_jvp
def _bilinear_window(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Bilinear sample of ``image`` at pixel coordinates ``x, y`` (custom JVP below).

    Evaluated without differentiation it uses four gathers (the faster forward on XLA CPU);
    under differentiation the JVP rule fetches the same values with one window gather, whose
    transpose is a single windowed scatter-add.
    """
    return _window_interpolate(image, x, y, gather=_four_gathers)[0]


@_bilinear_window.defjvp
def _bilinear_window_jvp(primals, tangents):
    """Linear in the tangents, so reverse mode is its transpose (paper eqs. 6-7).

    dV = sample(dU) + dV/dx dx + dV/dy dy with the one-sided derivatives of the interpolation
    between floor and floor + 1: dV/dx = (1 - fy)(U01 - U00) + fy (U11 - U10), and likewise y.
    """
    image, x, y = primals
    d_image, d_x, d_y = tangents
    output, (v00, v01, v10, v11, fx, fy) = _window_interpolate(image, x, y)
    d_out_dx = (v01 - v00) + fy * ((v11 - v10) - (v01 - v00))
    d_out_dy = (v10 - v00) + fx * ((v11 - v01) - (v10 - v00))
    x_const, y_const = jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)
    tangent = _window_interpolate(d_image, x_const, y_const)[0]
    tangent = tangent + d_out_dx * d_x[..., None] + d_out_dy * d_y[..., None]
    return output, tangent


BILINEAR_METHODS = ("gather", "window")


def _bilinear(image: jax.Array, x: jax.Array, y: jax.Array, method: str) -> jax.Array:
    """Dispatches the bilinear kernel to an internal method ("auto" picks by shape and dtype)."""
    if method == "auto":
        method = "window" if jnp.issubdtype(image.dtype, jnp.floating) else "gather"
    if method == "window":
        if not jnp.issubdtype(image.dtype, jnp.floating):
            raise ValueError(f"method 'window' needs a floating image, got dtype {image.dtype}")
        return _bilinear_window(image, x, y)
    if method == "gather":
        return _sample_bilinear(image, x, y)
    raise ValueError(f"bilinear method must be 'auto' or one of {BILINEAR_METHODS}, got {method!r}")


def _check_inputs(image: jax.Array, grid: jax.Array, kernel: str, padding: str) -> None:
    """Raises ValueError naming what was expected and what came."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if image.ndim != 4:
        raise ValueError(
            f"image must be [B, H, W, C] (or unbatched [H, W, C]), got shape {image.shape}"
        )
    if grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError(
            "grid must be [B, H_out, W_out, 2] (or unbatched [H_out, W_out, 2]) with last axis "
            f"(x, y), got shape {grid.shape} for image shape {image.shape}"
        )
    if image.shape[0] != grid.shape[0]:
        raise ValueError(
            f"image and grid batch sizes differ: image {image.shape}, grid {grid.shape}"
        )
    if not jnp.issubdtype(grid.dtype, jnp.floating):
        raise ValueError(f"grid must be floating point, got dtype {grid.dtype}")


def sample(
    image: jax.Array,
    grid: jax.Array,
    *,
    kernel: str = "bilinear",
    padding: str = "zeros",
    align_corners: bool = False,
) -> jax.Array:
    """Samples ``image`` at ``grid`` (paper eq. 3): ``V_i = sum_nm U_nm k(x_s - m) k(y_s - n)``.

    Args:
      image: ``[B, H, W, C]`` input feature map ``U`` (or unbatched ``[H, W, C]``).
      grid: ``[B, H_out, W_out, 2]`` source points, last axis ``(x, y)`` in [-1, 1] (or
        unbatched ``[H_out, W_out, 2]`` with an unbatched image). The output takes the grid's
        size, so down- and over-sampling need nothing special.
      kernel: ``"bilinear"`` (eq. 5) or ``"nearest"`` (eq. 4, ``floor(x + 0.5)``; torch rounds
        half to even instead, which differs only at exact half-pixel points).
      padding: value for points outside the image: ``"zeros"``, ``"border"`` (clamp the
        coordinate) or ``"reflection"`` (mirror it), applied to the continuous coordinate.
      align_corners: whether -1 and 1 are the centres (True) or outer edges (False) of the corner
        pixels, as in ``torch.nn.functional.grid_sample``.

    Returns:
      ``[B, H_out, W_out, C]`` (or ``[H_out, W_out, C]`` for unbatched input), image dtype.

    Gradients flow to the image and to the grid. See the module docstring for the bilinear
    gradient at integer coordinates (one-sided: ``U_{m+1} - U_m``).
    """
    return _sample(image, grid, kernel=kernel, padding=padding, align_corners=align_corners,
                   method="auto")


def _sample(image, grid, *, kernel: str, padding: str, align_corners: bool, method: str):
    """``sample`` with an explicit internal bilinear ``method`` (tests and benchmarks use it)."""
    image = jnp.asarray(image)
    grid = jnp.asarray(grid)
    unbatched = image.ndim == 3 and grid.ndim == 3
    if unbatched:
        image, grid = image[None], grid[None]
    _check_inputs(image, grid, kernel, padding)
    _, height, width, _ = image.shape
    x = apply_padding(unnormalize(grid[..., 0], width, align_corners), width, padding, align_corners)
    y = apply_padding(
        unnormalize(grid[..., 1], height, align_corners), height, padding, align_corners
    )
    x = x.astype(image.dtype) if jnp.issubdtype(image.dtype, jnp.floating) else x
    y = y.astype(x.dtype)
    if kernel == "nearest":
        output = _sample_nearest(image, x, y)
    else:
        output = _bilinear(image, x, y, method).astype(image.dtype)
    return output[0] if unbatched else output
