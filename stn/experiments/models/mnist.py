"""The paper's distorted-MNIST networks (section 4.1, appendix A.1): FCN, CNN, ST-FCN, ST-CNN.

All use ReLU and a softmax classifier (the logits are returned; the loss applies the softmax):
- FCN: two hidden fully connected layers, then the classification layer.
- CNN: 9x9 conv (VALID) -> 2x2 max-pool -> 7x7 conv (VALID) -> 2x2 max-pool -> classifier.
- ST-FCN / ST-CNN: a spatial transformer at the very start (output at the input's resolution),
  then the FCN / CNN. ST-FCN's loc net: three 32-unit fully connected layers; ST-CNN's: two
  20-filter 5x5 convs on a 2x down-sampled input with a 2x2 max-pool between, then a 20-unit
  fully connected layer. Each loc net ends with the identity-initialised regression layer.

Widths of the classification networks (FCN 256-200, CNN 64-64 filters) follow the Finnveden,
Jansson & Lindeberg reimplementation of the paper's MNIST models; the paper only says all
networks have about the same number of parameters.
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from stn import layers, transforms

FCN_HIDDEN = (256, 200)
CNN_FEATURES = (64, 64)
ST_FCN_LOC_HIDDEN = (32, 32, 32)
ST_CNN_LOC = dict(features=(20, 20), kernel_size=5, fc=20, downsample=2)
NUM_CLASSES = 10


class FCN(nnx.Module):
    """Two hidden ReLU layers and a linear classifier on the flattened image."""

    def __init__(self, input_shape: Sequence[int], *, hidden: Sequence[int] = FCN_HIDDEN,
                 num_classes: int = NUM_CLASSES, rngs: nnx.Rngs):
        self.hidden = layers.ReluStack(input_shape, hidden, rngs=rngs)
        self.classifier = nnx.Linear(self.hidden.out_features, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> logits `[B, num_classes]`."""
        return self.classifier(self.hidden(x))

    def transformer_grids(self, x: jax.Array) -> list[jax.Array]:
        """No transformer: an empty list (the model contract, `stn.experiments.models`)."""
        return []


class CNN(nnx.Module):
    """9x9 conv -> max-pool -> 7x7 conv -> max-pool -> linear classifier (appendix A.1)."""

    def __init__(self, input_shape: Sequence[int], *, features: Sequence[int] = CNN_FEATURES,
                 num_classes: int = NUM_CLASSES, rngs: nnx.Rngs):
        height, width, channels = (int(d) for d in input_shape)
        self.conv1 = layers.valid_conv(channels, features[0], 9, rngs=rngs)
        height, width = (height - 8) // 2, (width - 8) // 2
        self.conv2 = layers.valid_conv(features[0], features[1], 7, rngs=rngs)
        height, width = (height - 6) // 2, (width - 6) // 2
        if height < 1 or width < 1:
            raise ValueError(f"CNN: input {tuple(input_shape)} is too small (needs at least 24x24)")
        self.classifier = nnx.Linear(height * width * features[1], num_classes, rngs=rngs)

    def layer_outputs(self, x: jax.Array) -> list[jax.Array]:
        """The three weight layers' outputs: both pooled ReLU conv maps and the logits."""
        h1 = layers.max_pool(jax.nn.relu(self.conv1(x)))
        h2 = layers.max_pool(jax.nn.relu(self.conv2(h1)))
        return [h1, h2, self.classifier(h2.reshape(h2.shape[0], -1))]

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> logits `[B, num_classes]`."""
        return self.layer_outputs(x)[-1]

    def transformer_grids(self, x: jax.Array) -> list[jax.Array]:
        """No transformer: an empty list (the model contract, `stn.experiments.models`)."""
        return []


class STClassifier(nnx.Module):
    """A spatial transformer at the input, then a classification network (ST-FCN, ST-CNN).

    With `pool > 1` the transformer's output is average-pooled `pool x pool` before the
    classifier (the paper's RTS and TC models: the classifier sees a down-sampled crop).
    """

    def __init__(self, transformer: layers.SpatialTransformer, classifier: nnx.Module,
                 pool: int = 1):
        self.transformer = transformer
        self.classifier = classifier
        self.pool = int(pool)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> logits `[B, num_classes]`."""
        h = self.transformer(x)
        if self.pool > 1:
            h = nnx.avg_pool(h, (self.pool, self.pool), strides=(self.pool, self.pool))
        return self.classifier(h)

    def transformer_grids(self, x: jax.Array) -> list[jax.Array]:
        """The transformer's sampling grid `[B, H_out, W_out, 2]` (it sits on the input)."""
        return [self.transformer.params_and_grid(x)[1]]


MODEL_NAMES = ("fcn", "cnn", "st_fcn", "st_cnn")


def _get(config, key, default):
    """`config.key` for an ml_collections ConfigDict or a plain dict, else `default`."""
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default) if key in config else default


def create(name: str, input_shape: Sequence[int], *, transform: str = "affine",
           st_output_size: int | None = None, st_pool: int = 1, kernel: str = "bilinear",
           padding: str = "zeros", antialias: bool = False, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the model `name` (one of `MODEL_NAMES`) for one example of shape `(H, W, C)`.

    ST models: the transformer outputs `st_output_size` squared (default the input's size),
    average-pooled by `st_pool` before the classifier.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown MNIST model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    height, width, channels = (int(d) for d in input_shape)
    if name == "fcn":
        return FCN(input_shape, rngs=rngs)
    if name == "cnn":
        return CNN(input_shape, rngs=rngs)
    identity = transforms.get(transform).identity()
    out_hw = (height, width) if not st_output_size else (int(st_output_size),) * 2
    if st_pool < 1:
        raise ValueError(f"st_pool must be >= 1, got {st_pool}")
    out_shape = (out_hw[0] // st_pool, out_hw[1] // st_pool, channels)
    if name == "st_fcn":
        loc_net = layers.FullyConnectedLocNet(input_shape, identity, hidden=ST_FCN_LOC_HIDDEN,
                                              rngs=rngs)
        classifier = FCN(out_shape, rngs=rngs)
    else:
        loc_net = layers.ConvLocNet(input_shape, identity, **ST_CNN_LOC, rngs=rngs)
        classifier = CNN(out_shape, rngs=rngs)
    transformer = layers.SpatialTransformer(loc_net, transform, out_hw, kernel=kernel,
                                            padding=padding, antialias=antialias)
    return STClassifier(transformer, classifier, pool=st_pool)


def get_model(model_config, input_size: int | Sequence[int], rngs: nnx.Rngs,
              channels: int = 1) -> nnx.Module:
    """The model named by `model_config.name` for square (or `(H, W)`) inputs of `input_size`.

    Reads `name`, and for ST models `transform`, optional `st_output_size`, `st_pool`, `kernel`,
    `padding`, `antialias`.
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    return create(
        _get(model_config, "name", None), (*input_size, channels),
        transform=_get(model_config, "transform", "affine"),
        st_output_size=_get(model_config, "st_output_size", None),
        st_pool=int(_get(model_config, "st_pool", 1)),
        kernel=_get(model_config, "kernel", "bilinear"),
        padding=_get(model_config, "padding", "zeros"),
        antialias=bool(_get(model_config, "antialias", False)),
        rngs=rngs,
    )

