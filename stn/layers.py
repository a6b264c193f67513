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

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stn import sampling, transforms, _xla_cpu

__all__ = [
    "valid_conv", "max_pool", "flatten", "RegressionLayer", "regression_layer", "Frozen",
    "freeze", "LocalisationNet", "localisation_paths", "regression_paths", "ReluStack",
    "FullyConnectedLocNet", "ConvLocNet", "ConvLocNet3D", "FlowNet", "SamplingKernel",
    "SpatialTransformer", "FlowTransformer", "ParallelTransformers", "SerialTransformers",
]


def valid_conv(in_features: int, out_features: int, kernel_size: int, *,
               rngs: nnx.Rngs) -> nnx.Conv:
    """An `nnx.Conv` (stride 1, VALID) through `_xla_cpu.conv_general_dilated`: the same
    convolution, on XLA:CPU's faster paths when running on the CPU."""
    return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), padding="VALID",
                    conv_general_dilated=_xla_cpu.conv_general_dilated, rngs=rngs)


def max_pool(x: jax.Array, size: int = 2, padding: str = "VALID") -> jax.Array:
    """Max over non-overlapping `size x size` windows of an NHWC map (stride = `size`).

    Same values as `nnx.max_pool(x, (size, size), strides=(size, size), padding=padding)`,
    computed as a reshape and a max: its gradient is elementwise, where `max_pool`'s
    select-and-scatter runs element by element on XLA:CPU (docs/reports/performance.md). Ties share the gradient equally (a valid subgradient;
    after a ReLU the usual ties are zeros, whose gradient the ReLU drops anyway).
    """
    if padding not in ("VALID", "SAME"):
        raise ValueError(f"max_pool padding must be 'VALID' or 'SAME', got {padding!r}")
    batch, height, width, channels = x.shape
    if padding == "SAME":  # pad the high ends to a multiple of `size` with -inf, as XLA does
        pad_h, pad_w = -height % size, -width % size
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=-jnp.inf)
        height, width = height + pad_h, width + pad_w
    out_h, out_w = height // size, width // size
    windows = x[:, :out_h * size, :out_w * size].reshape(batch, out_h, size, out_w, size,
                                                           channels)
    return windows.max(axis=(2, 4))


def flatten(x: jax.Array) -> jax.Array:
    """`[B, ...]` -> `[B, F]`; unlike `reshape(B, -1)` it also holds for an empty batch."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


class RegressionLayer(nnx.Linear):
    """The loc net's last layer: zero kernel, bias = the transform's identity parameters.

    With a zero kernel the output is the bias whatever the input, so the transformer starts at
    the identity warp, and the kernel's gradient (the layer's input) is still non-zero. Its own
    type lets the optimizer exempt the bias from weight decay (it encodes the identity, and
    decaying it would pull the transform towards the degenerate theta = 0).
    """

    def __init__(self, in_features: int, identity: jax.Array, *, rngs: nnx.Rngs):
        identity = jnp.asarray(identity, jnp.float32).reshape(-1)

        def bias_init(key, shape, dtype=jnp.float32):
            del key  # a fresh copy: layers built from one identity must not share a buffer
            return jnp.array(identity.reshape(shape), dtype=dtype, copy=True)

        super().__init__(in_features, identity.shape[0], kernel_init=nnx.initializers.zeros,
                         bias_init=bias_init, rngs=rngs)


def regression_layer(in_features: int, identity: jax.Array, *, rngs: nnx.Rngs) -> RegressionLayer:
    """A `RegressionLayer` regressing `identity.size` parameters from `in_features`."""
    return RegressionLayer(in_features, identity, rngs=rngs)


class Frozen(nnx.Variable):
    """A fixed weight: read through `jax.lax.stop_gradient`, and not an `nnx.Param`.

    Gradients flow through the layer to its input but never reach the weight, and optimisers
    and `stn.experiments.models.num_params` (which count `nnx.Param` variables) leave it out: e.g. the pretrained
    embedding of co-localisation (appendix A.2), which the triplet loss must not train.
    """

    def get_value(self, *args, **kwargs):
        return jax.lax.stop_gradient(super().get_value(*args, **kwargs))


def freeze(module: nnx.Module) -> nnx.Module:
    """Turns every `nnx.Param` of `module` (in place) into a `Frozen` weight; returns it."""
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Module):
            for name, value in list(vars(node).items()):
                if isinstance(value, nnx.Param):
                    setattr(node, name, Frozen(value.get_value()))
    return module


class LocalisationNet(nnx.Module):
    """Base type of every localisation net `f_loc(U) -> theta` (paper section 3.1).

    The trainer finds the loc nets' parameters by this type (`localisation_paths`), e.g. to give
    them their own learning rate; a subclass maps `[B, ...]` inputs to flat `[B, P]` parameters
    and ends in a `RegressionLayer`. A subclass built for one input size names it in
    `input_shape` (one example's shape, e.g. `(H, W, C)`) and calls `check_input` first: another
    size is then a one-line error, and `SpatialTransformer` checks the net's output size against
    its transform when it is built. `None`: the net takes any size (it is not checked).
    """

    input_shape: tuple[int, ...] | None = None

    def check_input(self, x: jax.Array) -> None:
        """One-line ValueError unless `x` is `[B, *input_shape]`."""
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            expected = ", ".join(map(str, self.input_shape))
            raise ValueError(f"{type(self).__name__} was built for inputs [B, {expected}] "
                             f"(its input_shape), got shape {tuple(x.shape)}")


def _paths_of_type(model: nnx.Module, kind: type) -> list[str]:
    """The dotted graph path of every `kind` module in `model`, e.g. `transformer.loc_net`
    (`jax.tree_util.keystr`'s simple form, as the harness names state paths)."""
    return [jax.tree_util.keystr(tuple(path), simple=True, separator=".")
            for path, node in nnx.iter_graph(model) if isinstance(node, kind)]


def localisation_paths(model: nnx.Module) -> list[str]:
    """Dotted graph paths (attribute names and indices) of every `LocalisationNet` in model."""
    return _paths_of_type(model, LocalisationNet)


def regression_paths(model: nnx.Module) -> list[str]:
    """Graph paths of every `RegressionLayer` in `model`."""
    return _paths_of_type(model, RegressionLayer)


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
        h = flatten(x)
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
        return h


class FullyConnectedLocNet(LocalisationNet):
    """Localisation net of fully connected ReLU layers, then the identity-initialised regression.

    The paper's ST-FCN uses 32-unit layers (appendix A.1).
    """

    def __init__(self, input_shape: Sequence[int], identity: jax.Array, *,
                 hidden: Sequence[int] = (32, 32, 32), rngs: nnx.Rngs):
        """`input_shape` is `(H, W, C)` of one example; `identity` the transform's identity."""
        self.input_shape = tuple(int(d) for d in input_shape)
        self.hidden = ReluStack(input_shape, hidden, rngs=rngs)
        self.regression = regression_layer(self.hidden.out_features, identity, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> flat transform parameters `[B, P]`."""
        self.check_input(x)
        return self.regression(self.hidden(x))


class ConvLocNet(LocalisationNet):
    """Convolutional localisation net (the paper's ST-CNN loc net, appendix A.1).

    2x down-sampling (2x2 average pool) -> conv 5x5 (VALID) -> ReLU -> 2x2 max-pool ->
    conv 5x5 (VALID) -> ReLU -> fully connected -> ReLU -> identity-initialised regression.
    """

    def __init__(self, input_shape: Sequence[int], identity: jax.Array, *,
                 features: Sequence[int] = (20, 20), kernel_size: int = 5, fc: int = 20,
                 downsample: int = 2, rngs: nnx.Rngs):
        """`input_shape` is `(H, W, C)` of one example."""
        self.input_shape = tuple(int(d) for d in input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(f"ConvLocNet: input_shape must be (H, W, C), got {self.input_shape}")
        height, width, channels = self.input_shape
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
        self.check_input(x)
        h = x
        if self.downsample > 1:
            d = self.downsample
            h = nnx.avg_pool(h, (d, d), strides=(d, d))
        for i, conv in enumerate(self.convs):
            h = jax.nn.relu(conv(h))
            if i < len(self.convs) - 1:
                h = max_pool(h)
        h = jax.nn.relu(self.fc(flatten(h)))
        return self.regression(h)


def _size(size: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """`28` -> `(28, 28)` (or `(28, 28, 28)` for `ndim` 3); a sequence must have `ndim` sizes."""
    if isinstance(size, int):
        return (size,) * ndim
    size = tuple(int(s) for s in size)
    if len(size) != ndim:
        expected = "(height, width)" if ndim == 2 else "(depth, height, width)"
        raise ValueError(f"output size must be an int or {expected}, got {size}")
    return size


class SamplingKernel(nnx.Module):
    """The sampler's kernel `k(d; Phi)` (`stn.kernels`), its `Phi` learnt if `learn` is set.

    `kernel` is a name, a `stn.kernels.Kernel` or one per axis (x, y[, z]). With `learn=True`
    every parameter of the kernel(s) (Keys' `a`, a Gaussian's `sigma`) is an `nnx.Param`,
    initialised to the given value and trained with the rest of the model.
    """

    def __init__(self, kernel, ndim: int, *, learn: bool = False):
        per_axis = sampling.axis_kernels(kernel, ndim)  # raises ValueError for a bad spec
        # Python floats: the kernel objects are static (hashable); learnt values live in `phi`.
        self.template = jax.tree_util.tree_map(float, per_axis)
        self.learn = learn
        if learn:
            leaves = jax.tree_util.tree_leaves(self.template)
            if not leaves:
                raise ValueError(f"kernel {kernel!r} has no parameters to learn")
            self.phi = nnx.Param(jnp.asarray(leaves, jnp.float32))

    def __call__(self):
        """The per-axis kernels for `stn.sampling.sample`, with the current `Phi`."""
        if not self.learn:
            return self.template
        values = [self.phi[...][i] for i in range(self.phi[...].shape[0])]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self.template), values)


def _check_loc_net_output(loc_net: nnx.Module, transform: transforms.Transform) -> None:
    """One-line ValueError unless `loc_net` regresses `transform`'s parameters, `[B, P]` or
    `[B, *param_shape]`: its output shape for one example of its `input_shape`, found by
    `jax.eval_shape` (no computation). A net that names no `input_shape` is not probed."""
    input_shape = getattr(loc_net, "input_shape", None)
    if input_shape is None:
        return
    graph, state = nnx.split(loc_net)
    probe = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    theta = jax.eval_shape(lambda s, x: nnx.merge(graph, s)(x), state, probe)
    if tuple(theta.shape[1:]) not in ((transform.num_params,), transform.param_shape):
        given = ", ".join(map(str, theta.shape[1:]))
        raise ValueError(
            f"SpatialTransformer: the loc net {type(loc_net).__name__} gives [B, {given}], "
            f"transform {transform.name!r} needs [B, {transform.num_params}] (its num_params; "
            f"the loc net's identity: transforms.get({transform.name!r}).identity())")


class SpatialTransformer(nnx.Module):
    """Localisation net -> transform parameters -> sampling grid -> sampled output.

    Works on images `[B, H, W, C]` with a 2-D transform and on volumes `[B, D, H, W, C]` with a
    3-D one (`affine3d`, `attention3d`). `output_size` sets the output's `(H_out, W_out)` (or
    `(D_out, H_out, W_out)`): the grid's size, so the transformer can down- or over-sample
    (section 3.4). The output has as many channels as the input. `kernel` is a name, a
    `stn.kernels.Kernel` or one per axis; `learn_kernel` makes its `Phi` trainable.
    `antialias` stretches the kernel by the grid's footprint where the transformer zooms out
    (`stn.sampling.sample(..., antialias=True)`, its default `max_scale`); not with nearest.
    """

    def __init__(self, loc_net: nnx.Module, transform: str, output_size: int | Sequence[int], *,
                 kernel="bilinear", padding: str = "zeros", align_corners: bool = False,
                 learn_kernel: bool = False, antialias: bool = False):
        self.loc_net = loc_net
        self.transform_name = transforms.get(transform).name
        ndim = self.transform.ndim
        self.output_size = _size(output_size, ndim)
        _check_loc_net_output(loc_net, self.transform)
        if padding not in sampling.PADDINGS:
            raise ValueError(f"padding must be one of {sampling.PADDINGS}, got {padding!r}")
        self.sampling_kernel = SamplingKernel(kernel, ndim, learn=learn_kernel)
        if antialias:
            sampling.check_antialias(sampling.axis_kernels(kernel, ndim))
        self.padding = padding
        self.align_corners = align_corners
        self.antialias = bool(antialias)

    @property
    def transform(self):
        """The `stn.transforms.Transform` this module uses."""
        return transforms.get(self.transform_name)

    def params_and_grid(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Flat transform parameters `[B, P]` and the sampling grid `[B, *output_size, ndim]`."""
        if x.ndim != self.transform.ndim + 2:
            expected = "[B, H, W, C]" if self.transform.ndim == 2 else "[B, D, H, W, C]"
            raise ValueError(f"{self.transform_name} transforms {expected} inputs, got shape "
                             f"{x.shape}")
        theta = self.loc_net(x)
        return theta, self._grid(theta)

    def _grid(self, theta: jax.Array) -> jax.Array:
        return self.transform.grid(theta, *self.output_size, align_corners=self.align_corners)

    def _sample(self, x: jax.Array, grid: jax.Array) -> jax.Array:
        return sampling.sample(x, grid, kernel=self.sampling_kernel(), padding=self.padding,
                               align_corners=self.align_corners, antialias=self.antialias)

    def warp(self, x: jax.Array, theta: jax.Array) -> jax.Array:
        """`x` sampled at the grid of given parameters `theta` (the loc net is not called): a
        region other than the one localised, with this transformer's kernel and padding."""
        return self._sample(x, self._grid(theta))

    def __call__(self, x: jax.Array, *, return_params: bool = False):
        """`[B, (D,) H, W, C]` -> `[B, *output_size, C]` (and `[B, P]` params if
        `return_params`)."""
        theta, grid = self.params_and_grid(x)
        out = self._sample(x, grid)
        if return_params:
            return out, theta
        return out


class ConvLocNet3D(LocalisationNet):
    """Convolutional localisation net for volumes `[B, D, H, W, C]` (a 3-D ST-CNN loc net).

    Per stage: conv `k x k x k` (SAME) -> ReLU -> 2x2x2 max-pool; then fully connected -> ReLU ->
    the identity-initialised regression (`RegressionLayer`), so a fresh transformer is the
    identity warp.
    """

    def __init__(self, input_shape: Sequence[int], identity: jax.Array, *,
                 features: Sequence[int] = (8, 16), kernel_size: int = 3, fc: int = 32,
                 rngs: nnx.Rngs):
        """`input_shape` is `(D, H, W, C)` of one example."""
        self.input_shape = tuple(int(d) for d in input_shape)
        *spatial, channels = self.input_shape
        if len(spatial) != 3:
            raise ValueError(f"ConvLocNet3D: input_shape must be (D, H, W, C), got "
                             f"{tuple(input_shape)}")
        convs = []
        for feat in features:
            convs.append(nnx.Conv(channels, feat, (kernel_size,) * 3, padding="SAME", rngs=rngs))
            channels = feat
            spatial = [s // 2 for s in spatial]
            if min(spatial) < 1:
                raise ValueError(f"ConvLocNet3D: input {tuple(input_shape)} is too small for "
                                 f"{len(features)} 2x2x2 poolings")
        self.convs = nnx.List(convs)
        self.fc = nnx.Linear(spatial[0] * spatial[1] * spatial[2] * channels, fc, rngs=rngs)
        self.regression = regression_layer(fc, identity, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, D, H, W, C]` -> flat transform parameters `[B, P]`."""
        self.check_input(x)
        h = x
        for conv in self.convs:
            h = nnx.max_pool(jax.nn.relu(conv(h)), (2, 2, 2), strides=(2, 2, 2))
        h = jax.nn.relu(self.fc(flatten(h)))
        return self.regression(h)


class FlowNet(LocalisationNet):
    """A small dense localisation net: a displacement per output pixel (or voxel).

    SAME `k x k (x k)` convs with ReLU keep the input's size; a `RegressionLayer` applied at
    every pixel (a 1x1 convolution with zero weights and zero bias) then regresses `(u_x, u_y[,
    u_z])`, so a fresh flow is zero: the identity warp. Input `[B, (D,) H, W, C]`, output
    `[B, (D,) H, W, ndim]`.
    """

    def __init__(self, input_shape: Sequence[int], *, features: Sequence[int] = (16, 16),
                 kernel_size: int = 3, rngs: nnx.Rngs):
        """`input_shape` is `(H, W, C)` or `(D, H, W, C)` of one example."""
        *spatial, channels = (int(d) for d in input_shape)
        if len(spatial) not in (2, 3):
            raise ValueError(f"FlowNet: input_shape must be (H, W, C) or (D, H, W, C), got "
                             f"{tuple(input_shape)}")
        self.in_channels = channels  # any spatial size: the net is fully convolutional
        convs = []
        for feat in features:
            convs.append(nnx.Conv(channels, feat, (kernel_size,) * len(spatial), padding="SAME",
                                  rngs=rngs))
            channels = feat
        self.convs = nnx.List(convs)
        self.regression = regression_layer(channels, jnp.zeros(len(spatial)), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, (D,) H, W, C]` -> displacement `[B, (D,) H, W, ndim]`."""
        ndim = self.regression.out_features
        if x.ndim != ndim + 2 or x.shape[-1] != self.in_channels:
            axes = "H, W" if ndim == 2 else "D, H, W"
            raise ValueError(f"FlowNet was built for inputs [B, {axes}, {self.in_channels}] (any "
                             f"{axes}), got shape {tuple(x.shape)}")
        h = x
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return self.regression(h)


class FlowTransformer(nnx.Module):
    """A spatial transformer driven by a dense displacement field instead of a parameter vector.

    `flow_net` maps the input `[B, (D,) H, W, C]` to a displacement field `[B, *size, ndim]`
    (`stn.transforms` conventions: last axis `(u_x, u_y[, u_z])`, in pixels unless
    `units="normalized"`); with `integrate_steps > 0` the field is a stationary velocity and is
    integrated by scaling and squaring (a diffeomorphic warp, VoxelMorph-style). The output takes
    the field's size. `FlowNet` is a small default `flow_net`; any module with that output works
    (it should start at zero so that the fresh transformer is the identity).
    """

    def __init__(self, flow_net: nnx.Module, *, integrate_steps: int = 0, units: str = "pixels",
                 kernel="bilinear", padding: str = "zeros", align_corners: bool = False,
                 learn_kernel: bool = False, ndim: int = 2):
        if units not in transforms.UNITS:
            raise ValueError(f"units must be one of {transforms.UNITS}, got {units!r}")
        if padding not in sampling.PADDINGS:
            raise ValueError(f"padding must be one of {sampling.PADDINGS}, got {padding!r}")
        if not isinstance(integrate_steps, int) or integrate_steps < 0:
            raise ValueError(f"integrate_steps must be a non-negative integer, got "
                             f"{integrate_steps!r}")
        self.flow_net = flow_net
        self.integrate_steps = integrate_steps
        self.units = units
        self.sampling_kernel = SamplingKernel(kernel, ndim, learn=learn_kernel)
        self.padding = padding
        self.align_corners = align_corners

    def displacement(self, x: jax.Array) -> jax.Array:
        """The displacement field `[B, *size, ndim]` for input `x` (integrated if asked)."""
        field = self.flow_net(x)
        if self.integrate_steps:
            field = transforms.integrate_velocity(field, steps=self.integrate_steps,
                                                  units=self.units,
                                                  align_corners=self.align_corners)
        return field

    def grid(self, x: jax.Array) -> jax.Array:
        """The sampling grid `[B, *size, ndim]`: the identity grid plus the displacement."""
        return transforms.displacement_grid(self.displacement(x), units=self.units,
                                            align_corners=self.align_corners)

    def __call__(self, x: jax.Array, source: jax.Array | None = None) -> jax.Array:
        """Warps `source` (default: `x` itself) by the field `flow_net(x)`: `[B, *size, C]`.

        A registration net passes the moving and fixed images together as `x` and the moving
        image alone as `source`.
        """
        source = x if source is None else source
        return sampling.sample(source, self.grid(x), kernel=self.sampling_kernel(),
                               padding=self.padding, align_corners=self.align_corners)


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
