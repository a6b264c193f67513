"""XLA:CPU fast paths for plain (stride-1, VALID) 2-D convolutions; same values and gradients.

XLA:CPU runs some convolution shapes far slower than equivalent forms: a VALID convolution is
faster computed padded-and-cropped, and for few input channels or small maps its input gradient
is faster as one matmul plus an overlap-add. `conv_general_dilated` picks the fast form on the
CPU backend and calls `jax.lax.conv_general_dilated` unchanged everywhere else. The measurements
behind each threshold are in docs/reports/performance.md ("Train step, second pass").
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

NHWC = ("NHWC", "HWIO", "NHWC")
# From this many input channels up the padded-and-cropped forward is the faster one.
FEW_INPUT_CHANNELS = 4
# Up to this many tap-tensor elements per example the input gradient is a matmul plus an
# overlap-add: XLA:CPU's transposed convolution runs as matrix-vector products for few input
# channels or tiny maps, but beats the overlap-add on big tap tensors.
OVERLAP_ADD_MAX_TAPS = 2**17


def _valid_conv_padded(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-1 VALID NHWC convolution computed padded by one pixel at the high ends, cropped.

    The first `H - kh + 1` outputs of a stride-1 convolution do not depend on high-end padding,
    so this equals the VALID convolution in value and gradients; XLA:CPU runs the padded
    convolution on a much faster path.
    """
    kh, kw = w.shape[:2]
    out = jax.lax.conv_general_dilated(x, w, (1, 1), [(0, 1), (0, 1)], dimension_numbers=NHWC)
    return out[:, :x.shape[1] - kh + 1, :x.shape[2] - kw + 1]


def _valid_conv_forward(x: jax.Array, w: jax.Array) -> jax.Array:
    """The faster forward on XLA:CPU: plain VALID below `FEW_INPUT_CHANNELS`, else padded."""
    if x.shape[-1] < FEW_INPUT_CHANNELS:
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=NHWC)
    return _valid_conv_padded(x, w)


def _overlap_add(dy: jax.Array, w: jax.Array) -> jax.Array:
    """Input gradient of a stride-1 VALID convolution (the adjoint of im2col):
    `dx[b, i + a, j + c, ci] = sum_co dy[b, i, j, co] w[a, c, ci, co]`, one matmul, then each
    kernel tap's slice added at its offset."""
    kh, kw, cin, cout = w.shape
    batch, out_h, out_w, _ = dy.shape
    taps = (dy.reshape(-1, cout) @ w.reshape(-1, cout).T).reshape(
        batch, out_h, out_w, kh, kw, cin)
    in_h, in_w = out_h + kh - 1, out_w + kw - 1
    return sum(jnp.pad(taps[:, :, :, a, c], ((0, 0), (a, in_h - out_h - a),
                                             (c, in_w - out_w - c), (0, 0)))
               for a in range(kh) for c in range(kw))


def _taps_per_example(x_shape: Sequence[int], w_shape: Sequence[int]) -> int:
    """Elements of `_overlap_add`'s tap tensor per example: `out_h * out_w * kh * kw * C_in`."""
    kh, kw, cin, _ = w_shape
    return (x_shape[1] - kh + 1) * (x_shape[2] - kw + 1) * kh * kw * cin


@jax.custom_vjp
def _overlap_add_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """`_valid_conv_forward` whose input gradient is `_overlap_add` (reverse mode only)."""
    return _valid_conv_forward(x, w)


def _overlap_add_conv_fwd(x, w):
    return _valid_conv_forward(x, w), (x, w)


def _overlap_add_conv_bwd(residuals, dy):
    x, w = residuals
    # The kernel gradient of the padded form is the faster one for every shape measured.
    _, kernel_vjp = jax.vjp(lambda w_: _valid_conv_padded(x, w_), w)
    return _overlap_add(dy, w), kernel_vjp(dy)[0]


_overlap_add_conv.defvjp(_overlap_add_conv_fwd, _overlap_add_conv_bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding, **kwargs) -> jax.Array:
    """`jax.lax.conv_general_dilated`, with plain VALID 2-D convolutions made fast on XLA:CPU.

    On the CPU backend, a stride-1, undilated, ungrouped VALID NHWC convolution runs as
    `_valid_conv_padded`, or as `_overlap_add_conv` when its input gradient's tap tensor is
    small (at most `OVERLAP_ADD_MAX_TAPS` per example; that path's gradient is reverse-mode
    only). Same values and gradients up to float rounding. Every other convolution, and every
    other backend, goes straight to `lax.conv_general_dilated`.
    """
    plain = (jax.default_backend() == "cpu" and lhs.ndim == 4
             and (padding == "VALID" if isinstance(padding, str)
                  else all(tuple(pair) == (0, 0) for pair in padding))
             and all(s == 1 for s in window_strides)
             and kwargs.get("dimension_numbers") in (NHWC, jax.lax.conv_dimension_numbers(
                 lhs.shape, rhs.shape, NHWC))
             and all(kwargs.get(k) in (None, 1, (1, 1)) for k in (
                 "lhs_dilation", "rhs_dilation", "feature_group_count", "batch_group_count"))
             and kwargs.get("preferred_element_type") is None
             and kwargs.get("precision") is None)
    if not plain:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    if _taps_per_example(lhs.shape, rhs.shape) <= OVERLAP_ADD_MAX_TAPS:
        return _overlap_add_conv(lhs, rhs)
    return _valid_conv_padded(lhs, rhs)
