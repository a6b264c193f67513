"""Co-localisation (paper appendix A.2): an attention transformer trained by a triplet loss.

`CoLocaliser` crops one patch of each image with an attention transformer (eq. 2: scale and
translation, `theta = (s, t_x, t_y)`, read as the box `stn.boxes.attention_box(theta)`) and
embeds it with a fixed, pretrained digit-classification CNN (`embedding`, frozen with
`stn.layers.freeze`): the descriptor is the concatenation of its three layers' outputs (both
pooled hidden maps and the logits, no softmax). The loc net is the appendix's small CNN
(`AttentionLocNet`). Training needs no label and no box: `triplet_hinge_loss` asks the crops of
two images to be closer than a crop and a random patch of the same image.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stn import boxes, layers, sampling, transforms
from stn.models import mnist

LOC_CONV = dict(features=8, kernel_size=9, stride=4)
LOC_HIDDEN = (8, 8)
CROP_SIZE = 28
MARGIN = 1.0


class AttentionLocNet(layers.LocalisationNet):
    """conv 8 9x9 stride 4 (VALID) -> ReLU -> 2x2 max-pool -> fc 8 -> ReLU -> fc 8 -> ReLU ->
    identity-initialised regression of `(s, t_x, t_y)` (appendix A.2)."""

    def __init__(self, input_shape: Sequence[int], identity: jax.Array, *,
                 features: int = LOC_CONV["features"], kernel_size: int = LOC_CONV["kernel_size"],
                 stride: int = LOC_CONV["stride"], hidden: Sequence[int] = LOC_HIDDEN,
                 rngs: nnx.Rngs):
        height, width, channels = (int(d) for d in input_shape)
        self.conv = nnx.Conv(channels, features, (kernel_size, kernel_size),
                             strides=(stride, stride), padding="VALID", rngs=rngs)
        height = ((height - kernel_size) // stride + 1) // 2
        width = ((width - kernel_size) // stride + 1) // 2
        if height < 1 or width < 1:
            raise ValueError(f"AttentionLocNet: input {tuple(input_shape)} is too small for a "
                             f"{kernel_size}x{kernel_size} stride-{stride} conv and a 2x2 pool")
        self.hidden = layers.ReluStack((height, width, features), hidden, rngs=rngs)
        self.regression = layers.regression_layer(self.hidden.out_features, identity, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> `[B, 3]` attention parameters."""
        h = layers.max_pool(jax.nn.relu(self.conv(x)))
        return self.regression(self.hidden(h))


def embed(embedding: mnist.CNN, crops: jax.Array) -> jax.Array:
    """`[B, h, w, C]` crops -> `[B, D]` descriptors: the CNN's three layer outputs, flattened
    and concatenated (appendix A.2)."""
    outputs = embedding.layer_outputs(crops)
    return jnp.concatenate([o.reshape(o.shape[0], -1) for o in outputs], axis=-1)


class CoLocaliser(nnx.Module):
    """Attention transformer + fixed embedding; `model(images, rand_box)` -> dict of outputs."""

    def __init__(self, input_shape: Sequence[int], embedding: mnist.CNN, *,
                 crop_size: int = CROP_SIZE, kernel: str = "bilinear", margin: float = MARGIN,
                 rngs: nnx.Rngs):
        """`embedding` is a trained classification CNN on `crop_size` crops; it is frozen here.
        `margin` is the triplet loss's alpha, passed on in the outputs."""
        self.margin = float(margin)
        identity = transforms.get("attention").identity()
        loc_net = AttentionLocNet(input_shape, identity, rngs=rngs)
        self.transformer = layers.SpatialTransformer(loc_net, "attention", crop_size,
                                                     kernel=kernel)
        self.embedding = layers.freeze(embedding)

    def __call__(self, images: jax.Array, rand_box: jax.Array | None = None) -> dict:
        """`images [B, H, W, C]`, optional `rand_box [B, 3]` (attention parameters of a random
        patch per image) -> `{"theta": [B, 3], "box": [B, 4], "embedding": [B, D], "margin":
        float}` and, with `rand_box`, `"random_embedding": [B, D]` (the random patch's
        descriptor)."""
        crops, theta = self.transformer(images, return_params=True)
        outputs = {"theta": theta, "box": boxes.attention_box(theta),
                   "embedding": embed(self.embedding, crops), "margin": self.margin}
        if rand_box is not None:
            height, width = self.transformer.output_size
            grid = transforms.get("attention").grid(rand_box, height, width)
            patches = sampling.sample(images, grid, kernel=self.transformer.kernel)
            outputs["random_embedding"] = embed(self.embedding, patches)
        return outputs

    def transformer_grids(self, images: jax.Array) -> list[jax.Array]:
        """The attention transformer's sampling grid `[B, h, w, 2]` (it sits on the input)."""
        return [self.transformer.params_and_grid(images)[1]]


def triplet_hinge_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
                       margin: float = MARGIN) -> jax.Array:
    """`max(0, ||a - p||^2 - ||a - n||^2 + margin)` per example, `[B, D]` each -> `[B]`
    (appendix A.2: a = e(I_n^T), p = e(I_m^T), n = e(I_n^rand))."""
    close = jnp.sum(jnp.square(anchor - positive), axis=-1)
    far = jnp.sum(jnp.square(anchor - negative), axis=-1)
    return jnp.maximum(0.0, close - far + margin)


def colocalisation_loss(outputs: dict, margin: float | None = None) -> jax.Array:
    """`[B]`: for each image n of the batch, the mean over the other images m of
    `triplet_hinge_loss(e(I_n^T), e(I_m^T), e(I_n^rand))`, the paper's double sum over pairs
    (normalised by the B - 1 partners). Needs a batch of at least two images. `margin`
    defaults to the outputs' own (the model's), else `MARGIN`."""
    if margin is None:
        margin = outputs.get("margin", MARGIN)
    crops, negatives = outputs["embedding"], outputs["random_embedding"]
    count = crops.shape[0]
    if count < 2:
        raise ValueError(f"the co-localisation loss needs at least 2 images a batch, got {count}")
    pairs = triplet_hinge_loss(crops[:, None, :], crops[None, :, :], negatives[:, None, :],
                               margin)  # [B (n), B (m)]
    off_diagonal = 1.0 - jnp.eye(count, dtype=pairs.dtype)
    return jnp.sum(pairs * off_diagonal, axis=1) / (count - 1)
