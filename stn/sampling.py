"""Image and volume samplers of the spatial transformer (Jaderberg et al. 2015, section 3.3).

Given an input feature map ``U`` and, for every output point ``i``, a source point in pixel units,
the sampler computes (paper eq. 3, with its third factor for volumes)

    V_i^c = sum_n sum_m U_nm^c k(x_s - m; Phi_x) k(y_s - n; Phi_y)
    V_i^c = sum_l sum_n sum_m U_lnm^c k(x_s - m; Phi_x) k(y_s - n; Phi_y) k(z_s - l; Phi_z)

for a separable kernel ``k(d; Phi)`` from ``stn.kernels``: ``"nearest"`` (paper eq. 4),
``"bilinear"`` (eq. 5; trilinear on volumes, as torch names it), ``"bicubic"`` (Keys, a = -0.75,
torch's ``bicubic``; tricubic on volumes), or any kernel object (``kernels.Keys(a)``,
``kernels.Gaussian(sigma)``, one per axis if wanted) whose parameters ``Phi`` are differentiable.

Conventions (same as ``torch.nn.functional.grid_sample``, but channels last): the grid's last axis
is ``(x, y)`` or ``(x, y, z)`` normalised to [-1, 1], x along the width, y the height, z the depth.
With ``align_corners=False`` -1 and 1 are the outer edges of the corner pixels, with ``True`` their
centres. Padding (``"zeros"``, ``"border"``, ``"reflection"``) acts on the continuous coordinate for
the nearest and linear kernels and on each tap's integer index for wider kernels, as torch does
for ``bilinear`` and ``bicubic`` (``stn.kernels``). Two more have no torch counterpart:
``"wrap"`` tiles the image (tap index ``m`` reads pixel ``m mod size``, for every kernel: the
pixel after the last is the first), and ``"fill"`` reads ``fill_value`` (a number or one per
channel) for every tap outside the image, computed as kornia's ``padding_mode="fill"`` is:

    V_fill = fill + S_zeros(U - fill),

exact for kernels whose weights sum to one (all but the plain Gaussian).

Gradients (paper eqs. 6-7) flow to the image, to the grid and to ``Phi``:

    dV/dU_nm = k(x_s - m) k(y_s - n),   dV/dx_s = sum_n sum_m U_nm k'(x_s - m) k(y_s - n).

At a kink of ``k`` (the linear kernel at integer ``x_s``) the derivative is the one-sided one of the
interpolation as ``x_s`` grows: ``U_{m+1} - U_m`` for the linear kernel (torch and
``jax.scipy.ndimage.map_coordinates`` agree), so a constant image has zero grid gradient. The
nearest kernel has zero gradient with respect to the grid.

Grid points that are not finite, and huge ones (one rule for every kernel and padding):

* a point with a NaN or infinite coordinate samples 0 in every channel (with every padding,
  ``"fill"`` included) and passes no gradient to the image, the grid or ``Phi``;
* a finite point is placed in pixel units computed in float32 or wider, whatever the image dtype
  (a bfloat16 image does not move its sampling points), and clamped to at most
  ``COORDINATE_BOUND`` = 2^22 pixels from the origin, with no gradient through the clamp; beyond
  that float32 cannot place a point within a pixel anyway. So a huge point is outside the image:
  zeros padding gives 0, border padding the edge pixel, reflection the mirror of the clamped point.

Antialiasing (``antialias=True``): each point's kernel is stretched along each input
axis by the grid's footprint, the norm of that axis's row of the grid's Jacobian (finite
differences), at least 1 and at most a static ``max_scale``, and its weights normalised; the
section "antialiasing" below derives the estimate and gives its cost in taps.

Neighbours outside the image are masked with ``where`` (never by multiplying by a mask), so no
NaN or inf from an out-of-range value leaks into a gradient.

On the CPU, ``sample(method="auto")`` runs the nearest and linear kernels through a native C++
kernel instead (``stn.native``: same rules, same numbers to float32 rounding, one-pass backward;
docs/guides/sampling.md); ``method="jnp"`` keeps the paths below.

Implementation (all pure jnp; docs/reports/performance.md has speed and memory): the reference path
(``method="gather"`` of the internal ``_sample``) gathers every tap once and differentiates by
autodiff. The default floating-point path gathers each point's window of taps from the image
extended by the padding and differentiates through a custom JVP with the closed forms above, so
that reverse mode is one windowed scatter-add to the image. The 2-D bilinear kernel keeps its own
closed-form path (``"bilinear2d"``). All give the same values and gradients
(tests/test_sampling_paths.py); XLA's CPU scatter runs sequentially, so backward passes are
deterministic on the CPU.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from stn import kernels as kernel_lib
from stn import native

__all__ = [
    "sample", "axis_kernels", "check_antialias", "default_max_scale", "unnormalize",
    "apply_padding", "pad_index", "KERNELS", "PADDINGS", "SAMPLE_METHODS", "COORDINATE_BOUND",
    "KernelSpec",
]

KERNELS = kernel_lib.NAMES
PADDINGS = ("zeros", "border", "reflection", "wrap", "fill")
METHODS = ("gather", "window", "bilinear2d")
SAMPLE_METHODS = ("auto", "native", "jnp")  # sample(method=...): see _use_native
COORDINATE_BOUND = 2.0 ** 22

KernelSpec = str | kernel_lib.Kernel | Sequence[str | kernel_lib.Kernel]


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


def pad_index(index: jax.Array, size: int, padding: str, align_corners: bool) -> jax.Array:
    """The pixel an integer tap ``index`` reads under ``padding`` (torch's bicubic taps).

    Border clamps to [0, size - 1]; reflection mirrors about the end pixels' centres
    (align_corners=True, period 2 (size - 1)) or outer edges (False, period 2 size); wrap takes
    ``index mod size`` (period size, whatever ``align_corners``); zeros leaves the index as it is
    (the gather reads 0 outside).
    """
    if padding == "wrap":
        return jnp.remainder(index, size)
    if padding == "border":
        return jnp.clip(index, 0, size - 1)
    if padding == "reflection":
        period = 2 * (size - 1) if align_corners else 2 * size
        if period == 0:
            return jnp.zeros_like(index)
        folded = jnp.remainder(index, period)
        mirrored = period - folded - (0 if align_corners else 1)
        return jnp.where(folded < size, folded, mirrored)
    return index


# ---------------------------------------------------------------- taps along one axis


def _axis_coordinate(kernel: kernel_lib.Kernel, coord: jax.Array, size: int, padding: str,
                     align_corners: bool) -> tuple[jax.Array, jax.Array, str]:
    """``(coordinate, first tap, tap padding)`` of one axis at pixel coordinates ``coord``.

    The nearest and linear kernels pad the continuous coordinate (their taps then read zeros
    outside); wider kernels leave it and pad each tap's index, and so does every kernel under
    wrap padding (linear taps at ``size - 1`` and ``size`` read the last and the first pixel,
    which no padded coordinate can express). ``first`` is int32.
    """
    if kernel.pads_coordinate and padding != "wrap":
        coord = apply_padding(coord, size, padding, align_corners)
        padding = "zeros"
    first = jax.lax.stop_gradient(kernel.first_tap(coord)).astype(jnp.int32)
    return coord, first, padding


def _tap_weights(kernels, coords, firsts) -> list[jax.Array]:
    """``[B, *out, T]`` weights ``k(x_s - m; Phi)`` of each axis's taps ``m = first + t``."""
    return [k.tap_weights(c, f.astype(c.dtype)) for k, c, f in zip(kernels, coords, firsts)]


# ---------------------------------------------------------------- the reference path


def _gather(image: jax.Array, indices: Sequence[jax.Array], masked: bool = True) -> jax.Array:
    """``image[b, i_0, .., i_{n-1}, :]`` for integer index arrays ``[B, *out]`` (one per spatial
    axis, in the image's axis order); zero where any index is out of range (``masked``; without
    it the indices must be in range)."""
    batch, *spatial, channels = image.shape
    inside, flat_index = None, None
    for index, size in zip(indices, spatial):
        if masked:
            in_range = (index >= 0) & (index < size)
            inside = in_range if inside is None else inside & in_range
            index = jnp.clip(index, 0, size - 1)
        flat_index = index if flat_index is None else flat_index * size + index
    flat_image = image.reshape(batch, -1, channels)
    values = jnp.take_along_axis(
        flat_image, flat_index.reshape(batch, -1, 1), axis=1, mode="promise_in_bounds"
    ).reshape(*indices[0].shape, channels)
    if not masked:
        return values
    return jnp.where(inside[..., None], values, jnp.zeros((), image.dtype))


def _interpolate(value: Callable[[tuple[int, ...]], jax.Array],
                 weights: Sequence[jax.Array]) -> jax.Array:
    """``sum_t prod_a w_a[t_a] value(t)`` over every tap tuple ``t``, nested axis by axis.

    ``value(t)`` gives the ``[B, *out, C]`` pixels of tap tuple ``t``; the sums run in the same
    order whatever fetches the pixels, so every path adds in the same order.
    """

    def over_axis(prefix: tuple[int, ...]) -> jax.Array:
        if len(prefix) == len(weights):
            return value(prefix)
        axis_weights = weights[len(prefix)]
        total = None
        for tap in range(axis_weights.shape[-1]):
            term = axis_weights[..., tap, None] * over_axis(prefix + (tap,))
            total = term if total is None else total + term
        return total

    return over_axis(())


def _sample_gather(image: jax.Array, kernels, coords, firsts, paddings,
                   align_corners: bool) -> jax.Array:
    """Paper eq. 3 by one gather per tap tuple (T^n gathers), autodiff backward: the reference."""
    weights = _tap_weights(kernels, coords, firsts)
    indices = [
        [pad_index(first + tap, size, padding, align_corners) for tap in range(w.shape[-1])]
        for first, w, padding, size in zip(firsts, weights, paddings, image.shape[1:-1])
    ]
    return _interpolate(
        lambda t: _gather(image, [indices[a][tap] for a, tap in enumerate(t)]), weights)


# ---------------------------------------------------------------- the window path (any kernel)
#
# The image is first extended along each axis by what the padding puts there (zeros, edge pixels
# or mirrored periods), so that every point's T x T (x T) window of taps is one in-bounds slice.
# A custom JVP states the tangent map in closed form: the image tangent sampled with the same
# weights, plus per axis ``dV/dx_a dx_a`` with ``dV/dx_a`` the interpolation with that axis's
# weights replaced by their derivatives ``k'`` (paper eqs. 6-7), plus the kernels' ``Phi`` terms.
# Reverse mode transposes it: ONE windowed scatter-add to the extended image (whose padding
# autodiff folds back) and element-wise products for the grid. Without differentiation each tap
# is its own gather (the faster forward on XLA:CPU).


def _extend(image: jax.Array, axis: int, first: jax.Array, num_taps: int, padding: str,
            align_corners: bool) -> tuple[jax.Array, jax.Array]:
    """``image`` extended along ``axis`` and the window starts into it, per point.

    Zeros and border: ``num_taps`` zero (edge) pixels on each side, starts clamped to
    [-num_taps, size] (a window beyond reads only padding, like every window further out).
    Reflection: one period of the mirrored image plus ``num_taps - 1`` pixels, start taken modulo
    the period. A size-1 axis with align_corners=True reflects to its only pixel: edge mode.
    Wrap: the image and its first ``num_taps - 1`` pixels again, start taken modulo ``size``.
    """
    size = image.shape[axis]
    widths = [(0, 0)] * image.ndim
    if padding == "wrap":
        widths[axis] = (0, num_taps - 1)
        return jnp.pad(image, widths, mode="wrap"), jnp.remainder(first, size)
    period = 2 * (size - 1) if align_corners else 2 * size
    if padding == "reflection" and period > 0:
        widths[axis] = (0, period + num_taps - 1 - size)
        mode = "reflect" if align_corners else "symmetric"
        return jnp.pad(image, widths, mode=mode), jnp.remainder(first, period)
    widths[axis] = (num_taps, num_taps)
    mode = "constant" if padding == "zeros" else "edge"
    return jnp.pad(image, widths, mode=mode), jnp.clip(first, -num_taps, size) + num_taps


def _gather_windows(extended: jax.Array, starts: Sequence[jax.Array],
                    sizes: Sequence[int]) -> jax.Array:
    """``[B, *out, T_0, .., T_{n-1}, C]`` windows of ``extended`` at in-bounds ``starts``."""
    batch, *spatial, channels = extended.shape
    rows = jnp.arange(batch, dtype=jnp.int32).reshape((batch,) + (1,) * (starts[0].ndim - 1))
    rows = rows * spatial[0] + starts[0]
    index = jnp.stack([rows, *starts[1:]], axis=-1).reshape(-1, len(starts))
    windows = jax.lax.gather(
        extended.reshape(batch * spatial[0], *spatial[1:], channels),
        index,
        jax.lax.GatherDimensionNumbers(
            offset_dims=tuple(range(1, len(starts) + 2)), collapsed_slice_dims=(),
            start_index_map=tuple(range(len(starts)))),
        slice_sizes=(*sizes, channels),
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )
    return windows.reshape(*starts[0].shape, *sizes, channels)


def _outer(weights: Sequence[jax.Array]) -> jax.Array:
    """``[B, *out, T_0, .., T_{n-1}]`` products ``prod_a w_a[t_a]`` of per-axis weights."""
    product = weights[0]
    for count, axis_weights in enumerate(weights[1:], start=1):
        shape = axis_weights.shape[:-1] + (1,) * count + axis_weights.shape[-1:]
        product = product[..., None] * axis_weights.reshape(shape)
    return product


def _contract_axes(windows: jax.Array, weights: Sequence[jax.Array]) -> jax.Array:
    """``sum_t prod_a w_a[t_a] windows[..., t, :]`` one axis at a time, from the last (x).

    Each step adds ``T`` slices of the window over its last tap axis (vectorised over the
    others), so the work and the program grow as ``n T`` terms, not ``T^n``.
    """
    out = windows
    for axis_weights in reversed(weights):
        rest = out.ndim - axis_weights.ndim - 1  # tap axes left before this one (and no channel)
        total = None
        for tap in range(axis_weights.shape[-1]):
            weight = axis_weights[..., tap].reshape(axis_weights.shape[:-1] + (1,) * (rest + 1))
            term = weight * out[..., tap, :]
            total = term if total is None else total + term
        out = total
    return out


def _contract(windows: jax.Array, outer: jax.Array, num_axes: int) -> jax.Array:
    """``sum_t outer[..., t] windows[..., t, :]``: ``[B, *out, *T, C]`` -> ``[B, *out, C]``."""
    return jnp.sum(windows * outer[..., None], axis=tuple(range(-num_axes - 1, -1)))


def _scale_channels(values: jax.Array, scale: jax.Array) -> jax.Array:
    """``values * scale[..., None]`` (``[B, *out, C]`` by ``[B, *out]``).

    Its transpose sums ``ct * values`` over the channels. XLA:CPU runs that reduction up to 100x
    slower when the batch axis is 1 (a [1, 96, 96, 96, 3] sum: 56 ms against 0.5 ms as three
    slices added), so up to 8 channels the product is written channel by channel and the
    transpose becomes slices and adds.
    """
    if values.shape[-1] > 8:
        return values * scale[..., None]
    return jnp.stack([values[..., c] * scale for c in range(values.shape[-1])], axis=-1)


def _is_zero(tangent) -> bool:
    """Whether a tangent (or every leaf of a pytree of them) is a symbolic zero."""
    return all(isinstance(leaf, SymbolicZero) for leaf in jax.tree_util.tree_leaves(
        tangent, is_leaf=lambda x: isinstance(x, SymbolicZero)))


def _weights_and_slopes(kernels, coords, firsts):
    """Per axis the tap weights ``k(x - m)`` and their derivatives ``k'(x - m)`` in ``x``."""
    weights, slopes = [], []
    for kernel, coord, first in zip(kernels, coords, firsts):
        weight, slope = jax.jvp(lambda c, k=kernel, f=first: k.tap_weights(c, f.astype(c.dtype)),
                                (coord,), (jnp.ones_like(coord),))
        weights.append(weight)
        slopes.append(slope)
    return weights, slopes


def _tap_value(extended: jax.Array, starts: Sequence[jax.Array]):
    """``t -> extended[b, s_0 + t_0, .., :]`` by one gather per tap (all in bounds).

    The batch is folded into the flat index: a 1-D index per tap, no [B, P, 2] index arrays.
    """
    batch, *spatial, channels = extended.shape
    flat_image = extended.reshape(-1, channels)
    flat_start = jnp.arange(batch, dtype=jnp.int32).reshape((batch,) + (1,) * (starts[0].ndim - 1))
    for start, size in zip(starts, spatial):
        flat_start = flat_start * size + start
    strides = [math.prod(spatial[axis + 1:]) for axis in range(len(spatial))]

    def value(t: tuple[int, ...]) -> jax.Array:
        offset = sum(o * stride for o, stride in zip(t, strides))
        return flat_image.at[flat_start + offset].get(mode="promise_in_bounds")

    return value


# Up to this many taps per point (trilinear 8, bicubic 16) the plain forward gathers each tap on
# its own, which XLA:CPU fuses with the sums instead of materialising the windows (bicubic
# 64 x 32 x 28 x 28: 2.1 ms against 48 ms); wider kernels (tricubic: 64) gather windows, which
# keeps the program small.
_MAX_SEPARATE_GATHERS = 16


@jax.custom_jvp
def _windowed(extended: jax.Array, starts: tuple, coords: tuple, firsts: tuple,
              kernels: tuple) -> jax.Array:
    """``sum_t prod_a k_a(x_a - first_a - t_a) E[start + t]``: paper eq. 3 on the extended image."""
    weights = _tap_weights(kernels, coords, firsts)
    sizes = [w.shape[-1] for w in weights]
    if math.prod(sizes) <= _MAX_SEPARATE_GATHERS:
        return _interpolate(_tap_value(extended, starts), weights)
    return _contract_axes(_gather_windows(extended, starts, sizes), weights)


def _windowed_jvp(primals, tangents):
    """Linear in the tangents, so reverse mode is its transpose (paper eqs. 6-7):

    dV = sum_t W[t] dE[s + t] + sum_a (sum_t W_a'[t] E[s + t]) dx_a + sum_a sum_t dW_a[t] E[s + t]

    with ``W = prod_a w_a`` the tap weights, ``W_a'`` the same with axis ``a``'s weights replaced
    by their derivatives ``k'``, and ``dW_a`` the same with them replaced by their tangent in the
    kernel's ``Phi``. Every term is a broadcast product and a sum over the window, so the
    transpose of the first is one outer product ``ct W`` scattered once.
    """
    extended, starts, coords, firsts, kernels = primals
    d_extended, _, d_coords, _, d_kernels = tangents
    weights, slopes = _weights_and_slopes(kernels, coords, firsts)
    sizes = [w.shape[-1] for w in weights]
    windows = _gather_windows(extended, starts, sizes)
    output = _contract_axes(windows, weights)
    tangent = jnp.zeros_like(output)
    if not _is_zero(d_extended):
        # A broadcast product and a sum over the window, so that its transpose is one outer
        # product ``ct W`` (materialised once, not recomputed per window element) scattered once.
        outer = jax.lax.optimization_barrier(_outer(weights))
        tangent = _contract(_gather_windows(d_extended, starts, sizes), outer, len(sizes))
    for axis in range(len(weights)):
        before, after = weights[:axis], weights[axis + 1:]
        if not _is_zero(d_coords[axis]):
            derivative = _contract_axes(windows, [*before, slopes[axis], *after])
            tangent = tangent + _scale_channels(derivative, d_coords[axis])
        if not _is_zero(d_kernels[axis]):
            for partial, d_leaf in _kernel_partials(kernels[axis], d_kernels[axis],
                                                    coords[axis], firsts[axis]):
                derivative = _contract_axes(windows, [*before, partial, *after])
                d_leaf = jnp.asarray(d_leaf, derivative.dtype)
                tangent = tangent + (derivative * d_leaf if d_leaf.ndim == 0
                                     else _scale_channels(derivative, d_leaf))
    return output, tangent


def _kernel_partials(kernel, d_kernel, coord, first):
    """``(dW/dphi, dphi)`` for each leaf ``phi`` of ``kernel`` with a non-zero tangent.

    Every leaf is a scalar (``a``, ``sigma``) or one value per point (``Stretched``'s scale), so
    ``dW/dphi`` (a JVP with tangent one) is a primal array and the tangent enters last, as a
    product: its transpose is a product and a sum, not the transpose of the window contraction
    (which XLA:CPU builds from one padded window array per tap).
    """
    leaves, treedef = jax.tree_util.tree_flatten(kernel)
    d_leaves = jax.tree_util.tree_leaves(d_kernel, is_leaf=lambda x: isinstance(x, SymbolicZero))
    first = first.astype(coord.dtype)
    for index, (leaf, d_leaf) in enumerate(zip(leaves, d_leaves)):
        if isinstance(d_leaf, SymbolicZero):
            continue

        def weights_of(value, index=index):
            changed = list(leaves)
            changed[index] = value
            return jax.tree_util.tree_unflatten(treedef, changed).tap_weights(coord, first)

        leaf = jnp.asarray(leaf)
        yield jax.jvp(weights_of, (leaf,), (jnp.ones_like(leaf),))[1], d_leaf


_windowed.defjvp(_windowed_jvp, symbolic_zeros=True)


def _sample_window(image: jax.Array, kernels, coords, firsts, paddings,
                   align_corners: bool) -> jax.Array:
    """Paper eq. 3 by window gathers from the padding-extended image, closed-form JVP."""
    extended, starts = image, []
    for axis, (kernel, first, padding) in enumerate(zip(kernels, firsts, paddings)):
        extended, start = _extend(extended, axis + 1, first, kernel.num_taps, padding,
                                  align_corners)
        starts.append(start)
    return _windowed(extended, tuple(starts), tuple(coords), tuple(firsts), tuple(kernels))


# ------------------------------------------------------- the 2-D bilinear path ("bilinear2d")
#
# One gather of each point's 2x2 neighbourhood from the image padded by one zero pixel (instead
# of four gathers), and a custom JVP that uses the closed-form grid derivatives of paper eqs. 6-7.
# Reverse mode transposes that JVP: the image cotangent becomes ONE windowed scatter-add (2x2
# windows) and the grid cotangent a few element-wise products. On XLA CPU this backward is several
# times faster than autodiff of the reference path and needs half its temporary memory (see
# docs/reports/performance.md); XLA's CPU scatter runs sequentially, so the result is deterministic.


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
    return (_gather(image, (y0, x0)), _gather(image, (y0, x1)), _gather(image, (y1, x0)),
            _gather(image, (y1, x1)))


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
    # x and y keep their derivatives here: a second derivative needs d(S(dU; x))/dx.
    tangent = _window_interpolate(d_image, x, y)[0]
    tangent = tangent + d_out_dx * d_x[..., None] + d_out_dy * d_y[..., None]
    return output, tangent


# ------------------------------------------------------------ antialiasing
#
# A grid that reads the input more sparsely than its pixels (zooming out) aliases with any
# fixed-width kernel. With ``antialias=True`` each point's kernel is stretched along each input
# axis by the grid's local footprint there (``kernels.Stretched``), never narrowed:
#
#     s_a = clip(||row_a(J)||_2, 1, max_scale),   J_ak = d x_a / d u_k   (input px per output px)
#
# with J the Jacobian of the source point (input pixels) with respect to the output index,
# estimated by central differences of the grid. Why the row norms: the output cell at a point
# covers, to first order, the parallelogram spanned by J's columns; Heckbert's elliptical
# weighted average filters it with the Gaussian of covariance J J^T, whose marginal along input
# axis a has variance (J J^T)_aa = ||row_a(J)||^2. A separable kernel cannot tilt, so it takes
# those marginal widths. Column norms (the step between neighbouring outputs) name output axes,
# which match input axes only without rotation: a 45 degree turn with zoom (4, 1) has column
# norms 4 and 1, but its footprint is a tilted ellipse 2.9 pixels wide along both x and y. On an
# axis-aligned grid J is diagonal and s_a is the resize factor in/out: torch's and PIL's
# antialiased resize filters. The price of separability: on a rotated anisotropic footprint it
# blurs more than EWA across the ellipse's long axis.


def default_max_scale(image_sizes: Sequence[int], grid_sizes: Sequence[int]) -> float:
    """The static bound on the footprint when ``max_scale`` is None: ``max(2, max in / min out)``.

    A grid that spans the whole input needs the ratio of input to output size; the floor of 2
    leaves room for an equal-size transformer that zooms out by up to 2.
    """
    return max(2.0, max(image_sizes) / min(grid_sizes))


def _output_slope(coord: jax.Array, valid: jax.Array, axis: int) -> jax.Array:
    """``d coord / d u`` along output ``axis`` of ``[B, *out]`` coordinates: central differences,
    one-sided at the ends and beside a non-finite point, 0 where no neighbour is valid (and on a
    size-1 axis)."""
    size = coord.shape[axis]
    if size == 1:
        return jnp.zeros_like(coord)

    def part(x, start, stop):
        return jax.lax.slice_in_dim(x, start, stop, axis=axis)

    def pad(x, before):  # one zero (False) before or after along `axis`
        widths = [(0, 0)] * x.ndim
        widths[axis] = (1, 0) if before else (0, 1)
        return jnp.pad(x, widths)

    step = part(coord, 1, size) - part(coord, 0, size - 1)
    step_ok = part(valid, 1, size) & part(valid, 0, size - 1)
    ahead, ahead_ok = pad(step, False), pad(step_ok, False)
    behind, behind_ok = pad(step, True), pad(step_ok, True)
    zero = jnp.zeros((), coord.dtype)
    total = jnp.where(ahead_ok, ahead, zero) + jnp.where(behind_ok, behind, zero)
    count = ahead_ok.astype(coord.dtype) + behind_ok.astype(coord.dtype)
    return total / jnp.maximum(count, 1.0)


def _antialias_scales(coords: Sequence[jax.Array], valid: jax.Array,
                      max_scale: float) -> list[jax.Array]:
    """Per input axis ``a`` the stretch ``s_a = clip(||row_a(J)||_2, 1, max_scale)`` of every
    point (section comment above); gradient only where ``1 < s_a < max_scale``."""
    num_out = valid.ndim - 1
    scales = []
    for coord in coords:
        square = sum(jnp.square(_output_slope(coord, valid, axis)) for axis in range(1, num_out + 1))
        wide = square > 1.0
        norm = jnp.sqrt(jnp.where(wide, square, 1.0))  # no sqrt'(0) = inf in the backward
        scale = jnp.where(wide, norm, 1.0)
        scales.append(jnp.where(scale < max_scale, scale, jnp.asarray(max_scale, scale.dtype)))
    return scales


def check_antialias(kernels: Sequence[kernel_lib.Kernel], max_scale: float | None = None) -> None:
    """One-line errors: nearest has no width to stretch; ``max_scale`` must be a number >= 1."""
    if any(isinstance(k, kernel_lib.Nearest) for k in kernels):
        raise ValueError("antialias=True needs a kernel with a width (bilinear, bicubic, Keys, "
                         "Gaussian) on every axis; nearest has none to stretch")
    # Any real number (numpy's too), but not a bool: True would read as 1.
    if max_scale is not None and not (isinstance(max_scale, numbers.Real)
                                      and not isinstance(max_scale, bool)
                                      and math.isfinite(max_scale) and max_scale >= 1):
        raise ValueError(f"max_scale must be a number >= 1 (or None), got {max_scale!r}")


def _sample_antialiased(image: jax.Array, kernels, coords, valid: jax.Array, padding: str,
                        align_corners: bool, max_scale: float | None, method: str) -> jax.Array:
    """Paper eq. 3 with each axis's kernel ``kernels.Stretched`` by the footprint ``s_a``.

    Taps are padded by index (as for every wide kernel) and read by the window path (or the
    gather path for integer images); gradients reach the footprint through the kernel's
    ``scale`` leaf, i.e. the JVP's ``Phi`` term.
    """
    if max_scale is None:
        max_scale = default_max_scale(image.shape[1:-1], valid.shape[1:])
    max_scale = float(max_scale)
    scales = _antialias_scales(coords, valid, max_scale)
    stretched = [kernel_lib.Stretched(k, s, max_scale) for k, s in zip(kernels, scales)]
    axes = [_axis_coordinate(k, c, size, padding, align_corners)
            for k, c, size in zip(stretched, coords, image.shape[1:-1])]
    coords, firsts, paddings = (list(part) for part in zip(*axes))
    sampler = _sample_gather if method == "gather" else _sample_window
    return sampler(image, stretched, coords, firsts, paddings, align_corners)


def _check_inputs(image: jax.Array, grid: jax.Array, padding: str) -> bool:
    """Raises ValueError naming what was expected and what came; returns whether unbatched.

    The image's rank decides: ``[H, W, C]`` is an unbatched image, ``[B, H, W, C]`` a batch of
    images and ``[B, D, H, W, C]`` a batch of volumes, so a 4-D image with a 3-axis grid is an
    error, never silently an unbatched volume.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if image.ndim not in (3, 4, 5):
        raise ValueError("image must be [B, H, W, C], a volume [B, D, H, W, C] or an unbatched "
                         f"image [H, W, C], got shape {image.shape}")
    unbatched = image.ndim == 3
    num_axes = 3 if image.ndim == 5 else 2
    if grid.ndim != image.ndim or grid.shape[-1] != num_axes:
        expected = {3: "[H_out, W_out, 2] for an unbatched image [H, W, C]",
                    4: "[B, H_out, W_out, 2] for an image [B, H, W, C] (a volume needs a batch "
                       "axis: [B, D, H, W, C] with a grid [B, D_out, H_out, W_out, 3])",
                    5: "[B, D_out, H_out, W_out, 3] for a volume [B, D, H, W, C]"}[image.ndim]
        raise ValueError(f"grid must be {expected}, last axis (x, y[, z]); got grid "
                         f"{grid.shape} for image {image.shape}")
    if not unbatched and image.shape[0] != grid.shape[0]:
        raise ValueError(
            f"image and grid batch sizes differ: image {image.shape}, grid {grid.shape}")
    if not jnp.issubdtype(grid.dtype, jnp.floating):
        raise ValueError(f"grid must be floating point, got dtype {grid.dtype}")
    return unbatched


def axis_kernels(kernel: KernelSpec, num_axes: int) -> tuple[kernel_lib.Kernel, ...]:
    """One ``stn.kernels.Kernel`` per spatial axis, in grid order ``(x, y[, z])``.

    ``kernel`` is a name, a kernel (used along every axis) or a sequence of ``num_axes`` of them.
    """
    if isinstance(kernel, (str, kernel_lib.Kernel)):
        return (kernel_lib.get(kernel),) * num_axes
    if isinstance(kernel, (tuple, list)) and len(kernel) == num_axes:
        return tuple(kernel_lib.get(k) for k in kernel)
    raise ValueError(
        f"kernel must be one of {KERNELS}, a stn.kernels.Kernel, or a sequence of {num_axes} "
        f"of them (one per axis x, y{', z' if num_axes == 3 else ''}), got {kernel!r}")


def sample(
    image: jax.Array,
    grid: jax.Array,
    *,
    kernel: KernelSpec = "bilinear",
    padding: str = "zeros",
    align_corners: bool = False,
    antialias: bool = False,
    max_scale: float | None = None,
    method: str = "auto",
    fill_value: jax.Array | float | None = None,
) -> jax.Array:
    """Samples ``image`` at ``grid`` (paper eq. 3): ``V_i = sum_nm U_nm k(x_s - m) k(y_s - n)``.

    Args:
      image: ``[B, H, W, C]`` input feature map ``U``, a volume ``[B, D, H, W, C]``, or an
        unbatched image ``[H, W, C]`` (a volume always has its batch axis: a 4-D input is a
        batch of images).
      grid: ``[B, H_out, W_out, 2]`` source points, last axis ``(x, y)`` in [-1, 1], or for a
        volume ``[B, D_out, H_out, W_out, 3]``, last axis ``(x, y, z)`` (``[H_out, W_out, 2]``
        with an unbatched image). The output takes the grid's size, so down- and over-sampling
        need nothing special.
      kernel: ``"bilinear"`` (eq. 5; trilinear on volumes), ``"nearest"`` (eq. 4,
        ``floor(x + 0.5)``; torch rounds half to even, which differs only at exact half-pixel
        points), ``"bicubic"`` (Keys a = -0.75, as torch), a ``stn.kernels.Kernel`` such as
        ``Keys(a)`` or ``Gaussian(sigma)`` (its parameters get gradients), or one per axis
        ``(k_x, k_y[, k_z])``.
      padding: value for taps outside the image: ``"zeros"``, ``"border"`` (the edge pixel),
        ``"reflection"`` (the mirrored pixel), ``"wrap"`` (the image tiled) or ``"fill"``
        (``fill_value``); see the module docstring for where it applies.
      align_corners: whether -1 and 1 are the centres (True) or outer edges (False) of the corner
        pixels, as in ``torch.nn.functional.grid_sample``.
      antialias: stretch each point's kernel along each input axis by the grid's local footprint
        ``s_a = clip(||row_a(J)||, 1, max_scale)`` (J: the grid's Jacobian in input pixels per
        output pixel, by finite differences) and normalise its weights, so a zoomed-out grid
        low-passes instead of aliasing (see the antialiasing section). Identity and upscaling
        grids sample as without it. Not with ``"nearest"`` (ValueError: it has no width).
      max_scale: static bound on ``s_a``; sets the taps per axis, ``2 ceil(r max_scale)`` for a
        kernel of radius ``r``. Footprints beyond it are filtered at ``max_scale``. None:
        ``default_max_scale`` of the image and grid sizes.
      method: ``"auto"`` runs the native CPU sampler (``stn.native``: nearest and bilinear /
        trilinear, float32 or float64 coordinates) where it applies and is available, else the
        pure-jnp sampler; ``"jnp"`` always the pure-jnp one; ``"native"`` the native one or a
        ValueError saying why not. Both give the same values and gradients (docs/guides/sampling.md).
        Wrap padding runs on the pure-jnp sampler (``"auto"`` takes it there).
      fill_value: with ``padding="fill"``, what taps outside the image read: a number or one
        value per channel ``[C]`` (default 0); differentiable. Only with ``padding="fill"``.

    Derivatives of every order, on every path and method: ``jax.grad``, ``jax.jvp``,
    ``jax.hessian``, ``jax.jacfwd(jax.grad(f))``, reverse over reverse, with respect to the image,
    the grid and a kernel's parameters. The native sampler computes the first derivatives itself
    and takes the second and higher ones in the image and the grid through the pure-jnp sampler
    (the same numbers to float32 rounding). Away from the kinks of a kernel (the linear kernel at
    integer pixel coordinates, the padding's edges) they are the derivatives of paper eq. 3, for
    bilinear and bicubic, 2-D and 3-D (tests/library/test_sampling_second_order.py).

    Returns:
      ``[B, *grid_size, C]`` (without ``B`` for unbatched input), image dtype. Non-finite grid
      points give 0 (module docstring).
    """
    if method not in SAMPLE_METHODS:
        raise ValueError(f"method must be one of {SAMPLE_METHODS}, got {method!r}")
    if antialias and method == "native":
        raise ValueError("antialias=True runs on the pure-jnp sampler only; use method='auto' or "
                         "'jnp'")
    image, grid = jnp.asarray(image), jnp.asarray(grid)
    if image.size == 0 or grid.size == 0:  # an empty batch, channel axis or grid
        return _empty_output(image, grid, kernel, padding, fill_value)
    return _sample(image, grid, kernel=kernel, padding=padding, align_corners=align_corners,
                   method=method, antialias=antialias, max_scale=max_scale, fill_value=fill_value)


def _empty_output(image: jax.Array, grid: jax.Array, kernel: KernelSpec, padding: str,
                  fill_value=None) -> jax.Array:
    """``sample``'s result when there is nothing to sample (no examples, channels or points):
    zeros of the right shape ``[B, *grid_size, C]`` (checked as ``sample`` checks), since the
    samplers' index arithmetic divides by these sizes."""
    _check_inputs(image, grid, padding)  # the grid's leading axes hold the batch axis, if any
    axis_kernels(kernel, grid.shape[-1])
    _check_fill(fill_value, padding, image.shape[-1])
    return jnp.zeros((*grid.shape[:-1], image.shape[-1]), image.dtype)


def _native_kernel(kernels: Sequence[kernel_lib.Kernel]) -> str | None:
    """``"linear"`` or ``"nearest"`` when every axis uses that kernel (the native cases)."""
    for name, kind in (("linear", kernel_lib.Linear), ("nearest", kernel_lib.Nearest)):
        if all(type(k) is kind for k in kernels):
            return name
    return None


def _use_native(image: jax.Array, grid: jax.Array, kernels, method: str) -> bool:
    """Whether ``method`` ("auto", "native", or an internal jnp one) runs the native sampler.

    "auto" takes it on the CPU backend for the nearest and linear kernels in float32/float64
    (a bfloat16 or float16 image is computed in float32) unless ``STN_NATIVE=0`` or it could
    not be built; "native" insists, with a one-line ValueError where it cannot run.
    """
    if method not in ("auto", "native"):
        return False
    name = _native_kernel(kernels)
    fits = name is not None and native.supports(image.dtype, grid.dtype, name, len(kernels))
    if method == "auto":
        return fits and native.available()
    if not fits:
        raise ValueError("method='native' needs the nearest or bilinear kernel on every axis, a "
                         f"floating image and float32/float64 coordinates; got {kernels} for "
                         f"image {image.dtype}, grid {grid.dtype}")
    if not native.available():
        raise ValueError(f"method='native' is unavailable: {native.unavailable_reason()}")
    return True


def _pick_method(image: jax.Array, kernels: Sequence[kernel_lib.Kernel], method: str) -> str:
    """The internal path: "auto" takes the fastest one that handles the image and kernels."""
    floating = jnp.issubdtype(image.dtype, jnp.floating)
    if method == "auto":
        if not floating or all(k.num_taps == 1 for k in kernels):
            return "gather"
        if len(kernels) == 2 and all(isinstance(k, kernel_lib.Linear) for k in kernels):
            return "bilinear2d"
        return "window"
    if method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
    if method != "gather" and not floating:
        raise ValueError(f"method {method!r} needs a floating image, got dtype {image.dtype}")
    if method == "bilinear2d" and not (
            len(kernels) == 2 and all(isinstance(k, kernel_lib.Linear) for k in kernels)):
        raise ValueError("method 'bilinear2d' needs a 2-D grid and the bilinear kernel")
    return method


def _check_fill(fill_value, padding: str, channels: int) -> jax.Array | None:
    """``fill_value`` as an array (0 when None) for ``padding="fill"``; one-line errors."""
    if padding != "fill":
        if fill_value is not None:
            raise ValueError(f"fill_value needs padding='fill', got padding={padding!r}")
        return None
    if fill_value is None:
        return jnp.zeros(())
    fill = None if isinstance(fill_value, str) else jnp.asarray(fill_value)
    if (fill is None or not jnp.issubdtype(fill.dtype, jnp.number)
            or fill.shape not in ((), (channels,))):
        got = f"shape {fill.shape}" if fill is not None and fill.ndim else repr(fill_value)
        raise ValueError(f"fill_value must be a number or one value per channel [{channels}], "
                         f"got {got}")
    return fill


def _sample_filled(image: jax.Array, grid: jax.Array, fill: jax.Array, **options) -> jax.Array:
    """Padding "fill": ``fill + S_zeros(U - fill)``, so every tap outside the image reads
    ``fill`` for kernels whose weights sum to one (kornia samples a mask of ones instead: the same
    sum). One zeros-padded call, so every path (the native one too) and every derivative,
    ``d/d fill`` included, comes with it. Non-finite points still sample 0."""
    work = jnp.promote_types(image.dtype, jnp.float32)  # U - fill rounds no pixel to bfloat16
    fill = fill.astype(work)
    if fill.ndim:  # one per channel, against [B, *out, C] (or unbatched)
        fill = fill.reshape((1,) * (image.ndim - 1) + fill.shape)
    output = _sample(image.astype(work) - fill, grid, padding="zeros", **options) + fill
    valid = jnp.all(jnp.isfinite(grid), axis=-1, keepdims=True)
    return jnp.where(valid, output, jnp.zeros((), work)).astype(image.dtype)


def _native_padding(padding: str, method: str) -> bool:
    """Whether the native sampler has ``padding`` ("wrap" runs on the jnp path; "native" says so)."""
    if padding in native.PADDING_CODES:
        return True
    if method == "native":
        raise ValueError(f"method='native' has no padding {padding!r}; use method='auto' or 'jnp'")
    return False


def _sample(image, grid, *, kernel: KernelSpec, padding: str, align_corners: bool, method: str,
            antialias: bool = False, max_scale: float | None = None, fill_value=None):
    """``sample`` with an explicit internal ``method`` (tests and benchmarks use it)."""
    image = jnp.asarray(image)
    grid = jnp.asarray(grid)
    unbatched = _check_inputs(image, grid, padding)
    fill = _check_fill(fill_value, padding, image.shape[-1])
    if fill is not None:
        return _sample_filled(image, grid, fill, kernel=kernel, align_corners=align_corners,
                              method=method, antialias=antialias, max_scale=max_scale)
    if unbatched:
        image, grid = image[None], grid[None]
    num_axes = grid.shape[-1]
    kernels = axis_kernels(kernel, num_axes)
    if antialias:  # always the pure-jnp window (or gather) path
        check_antialias(kernels, max_scale)
        floating = jnp.issubdtype(image.dtype, jnp.floating)
        method = "window" if floating and method != "gather" else "gather"
    elif _native_padding(padding, method) and _use_native(image, grid, kernels, method):
        output = native.sample(image, grid, kernel=_native_kernel(kernels), padding=padding,
                               align_corners=align_corners).astype(image.dtype)
        return output[0] if unbatched else output
    method = _pick_method(image, kernels, "auto" if method in SAMPLE_METHODS else method)
    if padding == "wrap" and method == "bilinear2d":  # its one zero pixel of border cannot wrap
        method = "window"

    # Coordinates in float32 or wider whatever the image dtype; non-finite points are moved to
    # the origin here and masked below, huge ones clamped (module docstring).
    grid = grid.astype(jnp.promote_types(grid.dtype, jnp.float32))
    valid = jnp.all(jnp.isfinite(grid), axis=-1)
    grid = jnp.where(valid[..., None], grid, jnp.zeros((), grid.dtype))
    sizes = image.shape[1:-1]  # (D,) H, W: image axis order, the reverse of the grid's (x, y, z)
    coords = [jnp.clip(unnormalize(grid[..., num_axes - 1 - axis], size, align_corners),
                       -COORDINATE_BOUND, COORDINATE_BOUND)
              for axis, size in enumerate(sizes)]
    kernels = kernels[::-1]

    if antialias:
        output = _sample_antialiased(image, kernels, coords, valid, padding, align_corners,
                                     max_scale, method)
    elif method == "bilinear2d":
        y, x = (apply_padding(c, size, padding, align_corners) for c, size in zip(coords, sizes))
        output = _bilinear_window(image, x, y)
    else:
        axes = [_axis_coordinate(k, c, size, padding, align_corners)
                for k, c, size in zip(kernels, coords, sizes)]
        coords, firsts, paddings = (list(part) for part in zip(*axes))
        sampler = _sample_gather if method == "gather" else _sample_window
        output = sampler(image, kernels, coords, firsts, paddings, align_corners)
    output = jnp.where(valid[..., None], output, jnp.zeros((), output.dtype))
    output = output.astype(image.dtype)
    return output[0] if unbatched else output
