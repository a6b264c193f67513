"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016) in Flax NNX.

The layer names follow timm's `inception_v3` (itself torchvision's), so the published weights
(`inception_v3.tv_in1k`) load by name (`stn.backbones.timm_import`). Images are NHWC float32,
normalised as those weights expect: `(x - 0.5) / 0.5` for x in [0, 1] (`normalise`; timm's
pretrained config: mean = std = 0.5). The full network wants at least 75x75 inputs (299x299 in
ImageNet training); a network truncated at an earlier block (`last_block`) takes smaller ones.

Batch normalisation: **frozen running statistics**. Every BN layer normalises with its running
mean and variance (the imported ImageNet ones, or 0 and 1 for a fresh network), in training and
in evaluation alike; the statistics never change (read through `stop_gradient`, and they are not
`nnx.Param`s, so optimisers and `stn.experiments.models.num_params` leave them out), while the BN scale and
shift are trained like every other parameter. This is the usual choice when fine-tuning with
small batches (batch statistics of a few large crops are noisy), and it keeps a train step a pure
function of the parameters. The statistics are part of the module's state, so they are
checkpointed with the parameters; evaluation uses the same running statistics.
Pretraining a network from scratch (`learn_statistics(model, True)`) switches every BN layer to
the training behaviour instead: it normalises with the batch's statistics and updates the
running ones (momentum 0.1, torch's); switched back, the layers use what they learnt.

`width` multiplies every layer's channel count (rounded, at least 1): 1.0 is the published
network; a narrow one (e.g. 0.125) runs on a CPU. `num_classes=0` drops the classifier:
the module then returns the pooled `[B, num_features]` descriptor.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "INPUT_MEAN", "INPUT_STD", "BN_EPS", "BLOCKS", "TRUNCATIONS", "ConvFn", "normalise",
    "RunningStat", "FrozenBatchNorm", "learn_statistics", "he_normal", "ConvBN",
    "max_pool_3x3_s2", "avg_pool_3x3_same", "InceptionA", "InceptionB", "InceptionC",
    "InceptionD", "InceptionE", "InceptionV3",
]

#: timm's pretrained-config normalisation for inception_v3.tv_in1k: x -> (x - 0.5) / 0.5.
INPUT_MEAN = 0.5
INPUT_STD = 0.5
#: BN epsilon of the published network (timm's norm_eps, TensorFlow's original 0.001).
BN_EPS = 1e-3
#: The blocks in forward order; `last_block` truncates after one of them.
BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Pool1", "Conv2d_3b_1x1",
          "Conv2d_4a_3x3", "Pool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
          "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
TRUNCATIONS = ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")

ConvFn = Callable[..., jax.Array]


def normalise(images: jax.Array) -> jax.Array:
    """Images in [0, 1] -> the published weights' input range: `(x - INPUT_MEAN) / INPUT_STD`."""
    return (images - INPUT_MEAN) / INPUT_STD


class RunningStat(nnx.Variable):
    """A frozen batch-norm statistic (running mean or variance): state, not a parameter."""


class FrozenBatchNorm(nnx.Module):
    """`y = (x - mean) / sqrt(var + eps) * scale + bias` with fixed `mean`, `var` (Ioffe and
    Szegedy 2015, eq. in Alg. 1 with the population statistics); `scale`, `bias` train.

    With `learning` set (`learn_statistics`), the batch's own mean and variance over every axis
    but the last normalise instead (Alg. 1 in training), and the running statistics move towards
    them: `r <- (1 - momentum) r + momentum b` (unbiased variance, as torch and timm keep it).
    """

    def __init__(self, features: int, *, eps: float = BN_EPS, momentum: float = 0.1):
        self.scale = nnx.Param(_filled(features, 1.0))
        self.bias = nnx.Param(_filled(features, 0.0))
        self.mean = RunningStat(_filled(features, 0.0))
        self.var = RunningStat(_filled(features, 1.0))
        self.eps, self.momentum = eps, momentum
        self.learning = False

    def _batch_statistics(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The batch's mean and (biased) variance per channel; the running ones updated."""
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        count = x.size // x.shape[-1]
        unbiased = jax.lax.stop_gradient(var) * count / max(count - 1, 1)
        m = self.momentum
        self.mean.value = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
        self.var.value = (1 - m) * self.var[...] + m * unbiased
        return mean, var

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.learning:
            mean, var = self._batch_statistics(x)
        else:
            mean = jax.lax.stop_gradient(self.mean[...])
            var = jax.lax.stop_gradient(self.var[...])
        multiplier = self.scale[...] * jax.lax.rsqrt(var + self.eps)
        shift = self.bias[...] - mean * multiplier
        channels = (1,) * (x.ndim - 1) + (-1,)  # explicit broadcast over the leading axes
        return x * multiplier.reshape(channels) + shift.reshape(channels)


def learn_statistics(model: nnx.Module, learning: bool) -> nnx.Module:
    """Every `FrozenBatchNorm` of `model` (in place) normalises with batch statistics and
    updates its running ones (`learning=True`: pretraining from scratch) or uses the running
    ones, fixed (`False`: the default, fine-tuning and evaluation); returns `model`."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, FrozenBatchNorm):
            node.learning = bool(learning)
    return model


def he_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """N(0, 2 / fan_in) for an HWIO kernel (He et al. 2015), drawn by numpy from the bits of the
    jax `key` (deterministic in the config seed): the network has dozens of kernel shapes, and
    a jax draw compiles once per shape (minutes on a loaded CPU). Under tracing (`jit`,
    `eval_shape`) it is a jax draw of the same distribution."""
    fan_in = int(np.prod(shape[:-1]))
    if isinstance(key, jax.core.Tracer):  # traced (jit, eval_shape): the jax draw
        return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / fan_in).astype(dtype)
    bits = np.asarray(jax.random.key_data(key), np.uint32).ravel()
    rng = np.random.default_rng(bits)
    values = rng.standard_normal(tuple(shape), np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    return jnp.asarray(values, dtype)


def _filled(features: int, value: float) -> jax.Array:
    """A `[features]` float32 array of `value`, made by numpy (no compile per shape)."""
    return jnp.asarray(np.full((features,), value, np.float32))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class ConvBN(nnx.Module):
    """timm's `ConvNormAct`: convolution (no bias) -> frozen BN -> ReLU, named `conv`, `bn`."""

    def __init__(self, in_features: int, out_features: int, kernel: int | Sequence[int], *,
                 stride: int = 1, padding: int | Sequence[int] = 0, rngs: nnx.Rngs,
                 conv_general_dilated: ConvFn = jax.lax.conv_general_dilated):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(in_features, out_features, _pair(kernel), strides=_pair(stride),
                             padding=((ph, ph), (pw, pw)), use_bias=False,
                             kernel_init=he_normal,
                             conv_general_dilated=conv_general_dilated, rngs=rngs)
        self.bn = FrozenBatchNorm(out_features)
        self.out_features = out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """3x3 max pool, stride 2, no padding (torch's MaxPool2d(3, 2))."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    """3x3 average pool, stride 1, zero padding 1, divided by 9 at the borders too (torch's
    `avg_pool2d(x, 3, 1, 1)`, whose count_include_pad defaults to True)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad) / 9.0


class _Block(nnx.Module):
    """A block of parallel branches concatenated on channels; `branches` lists, in output
    order, sequences of layer names (a pool function first for a pooled branch)."""

    branches: tuple = ()

    def __call__(self, x: jax.Array) -> jax.Array:
        outputs = []
        for branch in self.branches:
            h = x
            for step in branch:
                if callable(step):
                    h = step(h)
                elif isinstance(step, tuple):  # a split: the same input to each, concatenated
                    h = jnp.concatenate([getattr(self, name)(h) for name in step], axis=-1)
                else:
                    h = getattr(self, step)(h)
            outputs.append(h)
        return jnp.concatenate(outputs, axis=-1)


class InceptionA(_Block):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (`pool_features`)."""

    branches = (("branch1x1",), ("branch5x5_1", "branch5x5_2"),
                ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                (avg_pool_3x3_same, "branch_pool"))

    def __init__(self, cin: int, pool_features: int, c: Callable[[int], int], conv):
        self.branch1x1 = conv(cin, c(64), 1)
        self.branch5x5_1 = conv(cin, c(48), 1)
        self.branch5x5_2 = conv(c(48), c(64), 5, padding=2)
        self.branch3x3dbl_1 = conv(cin, c(64), 1)
        self.branch3x3dbl_2 = conv(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = conv(c(96), c(96), 3, padding=1)
        self.branch_pool = conv(cin, c(pool_features), 1)
        self.out_features = c(64) + c(64) + c(96) + c(pool_features)


class InceptionB(_Block):
    """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    branches = (("branch3x3",), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                (max_pool_3x3_s2,))

    def __init__(self, cin: int, c: Callable[[int], int], conv):
        self.branch3x3 = conv(cin, c(384), 3, stride=2)
        self.branch3x3dbl_1 = conv(cin, c(64), 1)
        self.branch3x3dbl_2 = conv(c(64), c(96), 3, padding=1)
        self.branch3x3dbl_3 = conv(c(96), c(96), 3, stride=2)
        self.out_features = c(384) + c(96) + cin


class InceptionC(_Block):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1), `c7` inner channels."""

    branches = (("branch1x1",), ("branch7x7_1", "branch7x7_2", "branch7x7_3"),
                ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4",
                 "branch7x7dbl_5"),
                (avg_pool_3x3_same, "branch_pool"))

    def __init__(self, cin: int, c7: int, c: Callable[[int], int], conv):
        m = c(c7)
        self.branch1x1 = conv(cin, c(192), 1)
        self.branch7x7_1 = conv(cin, m, 1)
        self.branch7x7_2 = conv(m, m, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(m, c(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(cin, m, 1)
        self.branch7x7dbl_2 = conv(m, m, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(m, m, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(m, m, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(m, c(192), (1, 7), padding=(0, 3))
        self.branch_pool = conv(cin, c(192), 1)
        self.out_features = 4 * c(192)


class InceptionD(_Block):
    """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    branches = (("branch3x3_1", "branch3x3_2"),
                ("branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"),
                (max_pool_3x3_s2,))

    def __init__(self, cin: int, c: Callable[[int], int], conv):
        self.branch3x3_1 = conv(cin, c(192), 1)
        self.branch3x3_2 = conv(c(192), c(320), 3, stride=2)
        self.branch7x7x3_1 = conv(cin, c(192), 1)
        self.branch7x7x3_2 = conv(c(192), c(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(c(192), c(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(c(192), c(192), 3, stride=2)
        self.out_features = c(320) + c(192) + cin


class InceptionE(_Block):
    """8x8 block with split 1x3 / 3x1 branches (expanded filter banks)."""

    branches = (("branch1x1",), ("branch3x3_1", ("branch3x3_2a", "branch3x3_2b")),
                ("branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")),
                (avg_pool_3x3_same, "branch_pool"))

    def __init__(self, cin: int, c: Callable[[int], int], conv):
        self.branch1x1 = conv(cin, c(320), 1)
        self.branch3x3_1 = conv(cin, c(384), 1)
        self.branch3x3_2a = conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(cin, c(448), 1)
        self.branch3x3dbl_2 = conv(c(448), c(384), 3, padding=1)
        self.branch3x3dbl_3a = conv(c(384), c(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(c(384), c(384), (3, 1), padding=(1, 0))
        self.branch_pool = conv(cin, c(192), 1)
        self.out_features = c(320) + 2 * c(384) + 2 * c(384) + c(192)


class InceptionV3(nnx.Module):
    """Inception-v3: the stem, blocks Mixed_5b .. Mixed_7c, global average pool, linear layer.

    Args:
      num_classes: outputs of the final linear layer `fc`; 0: no classifier, `__call__` returns
        the pooled `[B, num_features]` descriptor.
      width: channel multiplier (1.0: the published network).
      last_block: the last block built (one of `TRUNCATIONS`; "Mixed_7c" is the full network).
      rngs: initialisation keys (He-normal convolutions, BN scale 1 and shift 0, statistics 0
        and 1: a fresh network trains from scratch; imported weights replace all of it).
      conv_general_dilated: the convolution primitive (e.g. a backend's faster path).
    """

    def __init__(self, *, num_classes: int = 1000, width: float = 1.0,
                 last_block: str = "Mixed_7c", in_features: int = 3, rngs: nnx.Rngs,
                 conv_general_dilated: ConvFn = jax.lax.conv_general_dilated):
        if last_block not in TRUNCATIONS:
            raise ValueError(f"last_block={last_block!r} is not one of {', '.join(TRUNCATIONS)}")
        if not width > 0:
            raise ValueError(f"width={width} must be > 0")

        def c(channels: int) -> int:
            return max(1, int(round(channels * width)))

        def conv(cin, cout, kernel, **kw):
            return ConvBN(cin, cout, kernel, rngs=rngs, conv_general_dilated=conv_general_dilated,
                          **kw)

        self.width, self.last_block = width, last_block
        self.blocks = BLOCKS[:BLOCKS.index(last_block) + 1]
        self.Conv2d_1a_3x3 = conv(in_features, c(32), 3, stride=2)
        self.Conv2d_2a_3x3 = conv(c(32), c(32), 3)
        self.Conv2d_2b_3x3 = conv(c(32), c(64), 3, padding=1)
        self.Conv2d_3b_1x1 = conv(c(64), c(80), 1)
        self.Conv2d_4a_3x3 = conv(c(80), c(192), 3)
        features = c(192)
        later = {"Mixed_5b": lambda n: InceptionA(n, 32, c, conv),
                 "Mixed_5c": lambda n: InceptionA(n, 64, c, conv),
                 "Mixed_5d": lambda n: InceptionA(n, 64, c, conv),
                 "Mixed_6a": lambda n: InceptionB(n, c, conv),
                 "Mixed_6b": lambda n: InceptionC(n, 128, c, conv),
                 "Mixed_6c": lambda n: InceptionC(n, 160, c, conv),
                 "Mixed_6d": lambda n: InceptionC(n, 160, c, conv),
                 "Mixed_6e": lambda n: InceptionC(n, 192, c, conv),
                 "Mixed_7a": lambda n: InceptionD(n, c, conv),
                 "Mixed_7b": lambda n: InceptionE(n, c, conv),
                 "Mixed_7c": lambda n: InceptionE(n, c, conv)}
        for name in self.blocks:
            if name in later:
                block = later[name](features)
                setattr(self, name, block)
                features = block.out_features
        self.num_features = features
        self.num_classes = num_classes
        if num_classes:
            self.fc = nnx.Linear(features, num_classes, rngs=rngs)

    def feature_map(self, x: jax.Array) -> jax.Array:
        """Normalised images `[B, H, W, in_features]` -> the last block's map `[B, h, w, D]`."""
        if x.ndim != 4:
            raise ValueError(f"InceptionV3 takes NHWC images [B, H, W, C], got shape {x.shape}")
        size = x.shape[1:3]
        for name in self.blocks:
            x = max_pool_3x3_s2(x) if name.startswith("Pool") else getattr(self, name)(x)
            if min(x.shape[1:3]) < 1:
                raise ValueError(f"InceptionV3 up to {self.last_block}: a {size[0]}x{size[1]} "
                                 f"input is too small ({name} leaves nothing)")
        return x

    def features(self, x: jax.Array) -> jax.Array:
        """The global-average-pooled descriptor `[B, num_features]`."""
        return self.feature_map(x).mean(axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits `[B, num_classes]` (or the descriptor when `num_classes` is 0)."""
        h = self.features(x)
        return self.fc(h) if self.num_classes else h
