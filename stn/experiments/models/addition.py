"""MNIST addition networks (paper appendix A.1): FCN, CNN, ST-FCN, ST-CNN, 2xST-FCN, 2xST-CNN.

The input is a 2-channel canvas (one distorted digit per channel) and the output 19 logits (the
sum, 0..18). The classifiers are the section-4.1 networks of `stn.experiments.models.mnist` with 19 classes.
`N`xST models put `N` spatial transformers in parallel on the input (`stn.layers.
ParallelTransformers`): each has its own localisation net, sees both channels and warps both,
and their outputs are concatenated on channels (2 * N) before the classifier, so each
transformer is free to attend to one digit. ST-FCN models use the fully connected loc net of
section 4.1 (three 32-unit layers), ST-CNN models its convolutional one; every loc net ends in
an identity-initialised `stn.layers.RegressionLayer`.
"""
from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from stn import layers, transforms
from stn.experiments.models import mnist

NUM_CLASSES = 19
MODEL_NAMES = ("fcn", "cnn", "st_fcn", "st_cnn", "2xst_fcn", "2xst_cnn")


class ParallelSTClassifier(nnx.Module):
    """Spatial transformers in parallel on the input, then a classification network."""

    def __init__(self, transformers: Sequence[layers.SpatialTransformer], classifier: nnx.Module):
        self.transformers = layers.ParallelTransformers(transformers)
        self.classifier = classifier

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> logits `[B, num_classes]`."""
        return self.classifier(self.transformers(x))

    def transformer_grids(self, x: jax.Array) -> list[jax.Array]:
        """Each transformer's sampling grid `[B, h, w, 2]` (all sit on the input), in order."""
        return [t.params_and_grid(x)[1] for t in self.transformers.transformers]


def transformer_count(name: str) -> int:
    """0 for `fcn`/`cnn`, 1 for `st_*`, N for `Nxst_*`."""
    if name.startswith("st_"):
        return 1
    return int(name.split("xst_")[0]) if "xst_" in name else 0


def equal_area_output_size(input_size: int, count: int) -> int:
    """Side of each of `count` transformer outputs whose channels together have the input's
    area, so an ST-FCN's classifier has as many weights as the plain FCN's (the paper keeps
    the networks' parameter counts about equal): round(input_size / sqrt(count))."""
    return int(round(input_size / max(count, 1) ** 0.5))


def create(name: str, input_shape: Sequence[int], *, transform: str = "affine",
           st_output_size: int = 0, kernel: str = "bilinear", padding: str = "zeros",
           antialias: bool = False, num_classes: int = NUM_CLASSES, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the model `name` (one of `MODEL_NAMES`) for one example of shape `(H, W, C)`.

    `st_output_size` is the side of each transformer's output (0: the input's size).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown addition model {name!r}; expected one of "
                         f"{', '.join(MODEL_NAMES)}")
    height, width, channels = (int(d) for d in input_shape)
    fully_connected = name.endswith("fcn")
    classifier = mnist.FCN if fully_connected else mnist.CNN
    count = transformer_count(name)
    if count == 0:
        return classifier(input_shape, num_classes=num_classes, rngs=rngs)
    identity = transforms.get(transform).identity()
    out_hw = (height, width) if not st_output_size else (int(st_output_size),) * 2
    transformers = []
    for _ in range(count):  # one loc net each: independent parameters from the same Rngs
        if fully_connected:
            loc_net = layers.FullyConnectedLocNet(input_shape, identity,
                                                  hidden=mnist.ST_FCN_LOC_HIDDEN, rngs=rngs)
        else:
            loc_net = layers.ConvLocNet(input_shape, identity, **mnist.ST_CNN_LOC, rngs=rngs)
        transformers.append(layers.SpatialTransformer(loc_net, transform, out_hw, kernel=kernel,
                                                      padding=padding, antialias=antialias))
    return ParallelSTClassifier(
        transformers, classifier((*out_hw, channels * count), num_classes=num_classes, rngs=rngs))
