"""Flax NNX layers: localisation networks and the spatial transformer module.

A spatial transformer (paper section 3, Fig. 2) has three parts:
  1. a localisation net `theta = f_loc(U)` (section 3.1),
  2. a grid generator `T_theta(G)` (section 3.2, eq. 1 for affine), from `stn.transforms`,
  3. a sampler `V = sample(U, T_theta(G))` (section 3.3, eqs. 3-5), from `stn.sampling`.

The localisation net's last (regression) layer starts with zero weights and the transform's
identity parameters as bias, so every fresh transformer is the identity warp (the paper's
initialisation, appendix A). This layer imports only layer 1 (`stn.transforms`, `stn.sampling`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stn import sampling, transforms


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """`28` or `(28, 28)` -> `(28, 28)`."""
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


NHWC = ("NHWC", "HWIO", "NHWC")
# Below this many input channels the input gradient of a VALID convolution is computed as one
# matmul and an overlap-add (`_few_channel_conv`): XLA:CPU's transposed convolution with that
# few output channels runs as matrix-vector products (the MNIST CNN's 9x9 conv on 1 channel:
# 351 -> 92 ms).
FEW_INPUT_CHANNELS = 4


def _valid_conv_padded(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-1 VALID NHWC convolution computed padded by one pixel at the high ends, cropped.

    The first `H - kh + 1` outputs of a stride-1 convolution do not depend on high-end padding,
    so this equals the VALID convolution in value and gradients; XLA:CPU runs the padded
    convolution on a much faster path (the MNIST CNN's 7x7 conv: forward 313 -> 76 ms, forward
    + backward 822 -> 358 ms; `benchmarks/convolutions.py`, docs/performance.md).
    """
    kh, kw = w.shape[:2]
    out = jax.lax.conv_general_dilated(x, w, (1, 1), [(0, 1), (0, 1)], dimension_numbers=NHWC)
    return out[:, :x.shape[1] - kh + 1, :x.shape[2] - kw + 1]


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


@jax.custom_vjp
def _few_channel_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """`_valid_conv_padded` whose input gradient is `_overlap_add` (reverse mode only)."""
    return _valid_conv_padded(x, w)


def _few_channel_conv_fwd(x, w):
    return _valid_conv_padded(x, w), (x, w)


def _few_channel_conv_bwd(residuals, dy):
    x, w = residuals
    _, kernel_vjp = jax.vjp(lambda w_: _valid_conv_padded(x, w_), w)
    return _overlap_add(dy, w), kernel_vjp(dy)[0]


_few_channel_conv.defvjp(_few_channel_conv_fwd, _few_channel_conv_bwd)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding, **kwargs) -> jax.Array:
    """`jax.lax.conv_general_dilated`, with plain VALID 2-D convolutions made fast on XLA:CPU.

    On the CPU backend, a stride-1, undilated, ungrouped VALID NHWC convolution runs as
    `_valid_conv_padded` (or `_few_channel_conv` below `FEW_INPUT_CHANNELS` input channels,
    whose gradient is reverse-mode only). Same values and gradients up to float rounding. Every
    other convolution, and every other backend, goes straight to `lax.conv_general_dilated`.
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
    if lhs.shape[-1] < FEW_INPUT_CHANNELS:
        return _few_channel_conv(lhs, rhs)
    return _valid_conv_padded(lhs, rhs)


def valid_conv(in_features: int, out_features: int, kernel_size: int, *,
               rngs: nnx.Rngs) -> nnx.Conv:
    """An `nnx.Conv` (stride 1, VALID) that computes through `conv_general_dilated` above."""
    return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), padding="VALID",
                    conv_general_dilated=conv_general_dilated, rngs=rngs)


def regression_layer(in_features: int, identity: jax.Array, *, rngs: nnx.Rngs) -> nnx.Linear:
    """The loc net's last layer: zero kernel, bias = the transform's identity parameters.

    With a zero kernel the output is the bias whatever the input, so the transformer starts at
    the identity warp and its gradient w.r.t. the kernel is still non-zero (it is the input).
    """
    identity = jnp.asarray(identity, jnp.float32).reshape(-1)

    def bias_init(key, shape, dtype=jnp.float32):
        del key
        return identity.reshape(shape).astype(dtype)

    return nnx.Linear(in_features, identity.shape[0], kernel_init=nnx.initializers.zeros,
                      bias_init=bias_init, rngs=rngs)


class ReluStack(nnx.Module):
    """Flattens `[B, H, W, C]` and applies fully connected ReLU layers; `out_features` wide."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], *, rngs: nnx.Rngs):
        features = 1
        for dim in input_shape:
            features *= int(dim)
        layers = []
        for width in hidden:
            layers.append(nnx.Linear(features, width, rngs=rngs))
            features = width
        self.layers = nnx.List(layers)
        self.out_features = features

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        return h


class FullyConnectedLocNet(nnx.Module):
    """Localisation net of fully connected ReLU layers, then the identity-initialised regression.

    The paper's ST-FCN uses 32-unit layers (appendix A.1).
    """

    def __init__(self, input_shape: Sequence[int], identity: jax.Array, *,
                 hidden: Sequence[int] = (32, 32, 32), rngs: nnx.Rngs):
        """`input_shape` is `(H, W, C)` of one example; `identity` the transform's identity."""
        self.hidden = ReluStack(input_shape, hidden, rngs=rngs)
        self.regression = regression_layer(self.hidden.out_features, identity, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> flat transform parameters `[B, P]`."""
        return self.regression(self.hidden(x))


class ConvLocNet(nnx.Module):
    """Convolutional localisation net (the paper's ST-CNN loc net, appendix A.1).

    2x down-sampling (2x2 average pool) -> conv 5x5 (VALID) -> ReLU -> 2x2 max-pool ->
    conv 5x5 (VALID) -> ReLU -> fully connected -> ReLU -> identity-initialised regression.
    """

    def __init__(self, input_shape: Sequence[int], identity: jax.Array, *,
                 features: Sequence[int] = (20, 20), kernel_size: int = 5, fc: int = 20,
                 downsample: int = 2, rngs: nnx.Rngs):
        """`input_shape` is `(H, W, C)` of one example."""
        height, width, channels = (int(d) for d in input_shape)
        self.downsample = downsample
        height, width = height // downsample, width // downsample
        convs = []
        for i, feat in enumerate(features):
            convs.append(valid_conv(channels, feat, kernel_size, rngs=rngs))
            channels = feat
            height, width = height - kernel_size + 1, width - kernel_size + 1
            if i < len(features) - 1:
                height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise ValueError(f"ConvLocNet: input {tuple(input_shape)} is too small for "
                                 f"{len(features)} {kernel_size}x{kernel_size} convs after "
                                 f"{downsample}x down-sampling")
        self.convs = nnx.List(convs)
        self.fc = nnx.Linear(height * width * channels, fc, rngs=rngs)
        self.regression = regression_layer(fc, identity, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> flat transform parameters `[B, P]`."""
        h = x
        if self.downsample > 1:
            d = self.downsample
            h = nnx.avg_pool(h, (d, d), strides=(d, d))
        for i, conv in enumerate(self.convs):
            h = jax.nn.relu(conv(h))
            if i < len(self.convs) - 1:
                h = nnx.max_pool(h, (2, 2), strides=(2, 2))
        h = jax.nn.relu(self.fc(h.reshape(h.shape[0], -1)))
        return self.regression(h)


class SpatialTransformer(nnx.Module):
    """Localisation net -> transform parameters -> sampling grid -> sampled output.

    `output_size` sets the output's `(H_out, W_out)`: the grid's size, so the transformer can
    down- or over-sample (section 3.4). The output has as many channels as the input.
    """

    def __init__(self, loc_net: nnx.Module, transform: str, output_size: int | Sequence[int], *,
                 kernel: str = "bilinear", padding: str = "zeros", align_corners: bool = False):
        self.loc_net = loc_net
        self.transform_name = transforms.get(transform).name
        self.output_size = _pair(output_size)
        self.kernel = kernel
        self.padding = padding
        self.align_corners = align_corners

    @property
    def transform(self):
        """The `stn.transforms.Transform` this module uses."""
        return transforms.get(self.transform_name)

    def params_and_grid(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Flat transform parameters `[B, P]` and the sampling grid `[B, H_out, W_out, 2]`."""
        theta = self.loc_net(x)
        height, width = self.output_size
        grid = self.transform.grid(theta, height, width, align_corners=self.align_corners)
        return theta, grid

    def __call__(self, x: jax.Array, *, return_params: bool = False):
        """`[B, H, W, C]` -> `[B, H_out, W_out, C]` (and `[B, P]` params if `return_params`)."""
        theta, grid = self.params_and_grid(x)
        out = sampling.sample(x, grid, kernel=self.kernel, padding=self.padding,
                              align_corners=self.align_corners)
        if return_params:
            return out, theta
        return out


class ParallelTransformers(nnx.Module):
    """Several transformers acting on the same input, outputs concatenated on channels.

    As in the paper's fine-grained and MNIST-addition experiments (section 4.3, appendix A):
    each transformer can attend to a different part. All must share one `output_size`.
    """

    def __init__(self, transformers: Sequence[SpatialTransformer]):
        sizes = {t.output_size for t in transformers}
        if len(sizes) != 1:
            raise ValueError(f"ParallelTransformers: all output sizes must match, got {sizes}")
        self.transformers = nnx.List(list(transformers))

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> `[B, H_out, W_out, C * len(transformers)]`."""
        return jnp.concatenate([t(x) for t in self.transformers], axis=-1)


class SerialTransformers(nnx.Module):
    """Transformers applied one after another (each sees the previous one's output)."""

    def __init__(self, transformers: Sequence[SpatialTransformer]):
        self.transformers = nnx.List(list(transformers))

    def __call__(self, x: jax.Array) -> jax.Array:
        for t in self.transformers:
            x = t(x)
        return x
