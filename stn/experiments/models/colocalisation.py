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

from stn import boxes, layers
from stn.experiments.models import mnist

LOC_CONV = dict(features=8, kernel_size=9, stride=4)
LOC_HIDDEN = (8, 8)
CROP_SIZE = 28
MARGIN = 1.0


TRANSLATIONS = ("inside", "free")


def _check_translation(translation: str) -> None:
    if translation not in TRANSLATIONS:
        raise ValueError(f"translation={translation!r} is unknown; expected one of "
                         f"{', '.join(TRANSLATIONS)}")


def inside_attention(raw: jax.Array, min_scale: float, max_scale: float = 1.0,
                     translation: str = "inside") -> jax.Array:
    """`[B, 3]` unconstrained `(z_s, z_x, z_y)` -> attention `(s, t_x, t_y)` with half-side
    `s = m + (M - m) sigmoid(z_s)` in (m, M) and translation

        "inside":  t = (1 - s) tanh(z_t)   (the box lies in the image: |t| < 1 - s)
        "free":    t = tanh(z_t)           (the box's centre lies in the image: |t| < 1)

    At s = 0.9 "inside" moves the box at most 0.1 (about 4 px of 84) from the centre; "free"
    lets it reach any centre, the part outside the image sampled as the padding."""
    _check_translation(translation)
    scale = min_scale + (max_scale - min_scale) * jax.nn.sigmoid(raw[:, :1])
    reach = (1.0 - scale) if translation == "inside" else 1.0
    return jnp.concatenate([scale, reach * jnp.tanh(raw[:, 1:])], axis=-1)


def inside_attention_inverse(theta: jax.Array, min_scale: float, max_scale: float = 1.0,
                             translation: str = "inside") -> jax.Array:
    """The raw `(z_s, z_x, z_y)` that `inside_attention(..., translation)` maps to `theta`
    (`m < s < M`; `|t| < 1 - s` for "inside", `|t| < 1` for "free"):
    `z_s = logit((s - m) / (M - m))`, `z_t = artanh(t / (1 - s))` or `artanh(t)`."""
    _check_translation(translation)
    theta = jnp.asarray(theta, jnp.float32)
    fraction = (theta[..., :1] - min_scale) / (max_scale - min_scale)
    z_s = jnp.log(fraction) - jnp.log1p(-fraction)
    reach = (1.0 - theta[..., :1]) if translation == "inside" else 1.0
    return jnp.concatenate([z_s, jnp.arctanh(theta[..., 1:] / reach)], axis=-1)


class AttentionLocNet(layers.LocalisationNet):
    """conv 8 9x9 stride 4 (VALID) -> ReLU -> 2x2 max-pool -> fc 8 -> ReLU -> fc 8 -> ReLU ->
    regression of `(s, t_x, t_y)` (appendix A.2), initialised to `initial`.

    With `min_scale > 0` the regression gives unconstrained values that `inside_attention` maps
    to a box with half-side in (min_scale, max_scale) and, by `translation`, the whole box
    inside the image (`"inside"`: `t = (1 - s) tanh(z_t)`) or only its centre (`"free"`:
    `t = tanh(z_t)`); the regression's bias starts at `inside_attention_inverse(initial)`.
    Else (`min_scale` 0) it gives `(s, t_x, t_y)` unbounded and `translation` is unused.
    """

    def __init__(self, input_shape: Sequence[int], initial: jax.Array, *,
                 features: int = LOC_CONV["features"], kernel_size: int = LOC_CONV["kernel_size"],
                 stride: int = LOC_CONV["stride"], hidden: Sequence[int] = LOC_HIDDEN,
                 min_scale: float = 0.0, max_scale: float = 1.0, translation: str = "inside",
                 rngs: nnx.Rngs):
        _check_translation(translation)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.translation = translation
        if self.min_scale > 0:
            initial = inside_attention_inverse(initial, self.min_scale, self.max_scale,
                                               translation)
        height, width, channels = (int(d) for d in input_shape)
        self.conv = nnx.Conv(channels, features, (kernel_size, kernel_size),
                             strides=(stride, stride), padding="VALID", rngs=rngs)
        height = ((height - kernel_size) // stride + 1) // 2
        width = ((width - kernel_size) // stride + 1) // 2
        if height < 1 or width < 1:
            raise ValueError(f"AttentionLocNet: input {tuple(input_shape)} is too small for a "
                             f"{kernel_size}x{kernel_size} stride-{stride} conv and a 2x2 pool")
        self.hidden = layers.ReluStack((height, width, features), hidden, rngs=rngs)
        self.regression = layers.regression_layer(self.hidden.out_features, initial, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`[B, H, W, C]` -> `[B, 3]` attention parameters."""
        h = layers.max_pool(jax.nn.relu(self.conv(x)))
        raw = self.regression(self.hidden(h))
        if self.min_scale > 0:
            return inside_attention(raw, self.min_scale, self.max_scale, self.translation)
        return raw


DESCRIPTORS = ("raw", "unit")


def embed(embedding: mnist.CNN, crops: jax.Array, descriptor: str = "raw",
          canvas: int | None = None) -> jax.Array:
    """`[B, h, w, C]` crops -> `[B, D]` descriptors: the CNN's three layer outputs, flattened
    and concatenated (appendix A.2). With `canvas` larger than the crop, the crop is first
    centred on a black `canvas`-sized image (as a digit sits on a distorted-MNIST canvas).
    `descriptor="unit"` scales each layer's output to unit L2 norm (so squared distances lie
    in [0, 12] whatever the widths)."""
    if canvas and canvas > crops.shape[1]:
        top, left = (canvas - crops.shape[1]) // 2, (canvas - crops.shape[2]) // 2
        crops = jnp.pad(crops, ((0, 0), (top, canvas - crops.shape[1] - top),
                                (left, canvas - crops.shape[2] - left), (0, 0)))
    outputs = [o.reshape(o.shape[0], -1) for o in embedding.layer_outputs(crops)]
    if descriptor == "unit":
        outputs = [o / jnp.sqrt(jnp.sum(jnp.square(o), axis=-1, keepdims=True) + 1e-12)
                   for o in outputs]
    return jnp.concatenate(outputs, axis=-1)


def random_patch_params(theta: jax.Array, position: jax.Array, scale: float) -> jax.Array:
    """`[B, 3]` attention parameters of the random patches `I_n^rand`: half-side `scale`, or
    with `scale=0` the crop's own `|s|` (at most 1; no gradient flows through it: the patch is
    a sample, not a decision), centred at `position * (1 - s)` for `position` `[B, 2]` in
    [-1, 1]^2, so the patch lies inside the image."""
    if scale > 0:
        side = jnp.full(theta.shape[:1], scale, jnp.float32)
    else:
        side = jnp.minimum(jnp.abs(jax.lax.stop_gradient(theta[:, 0])), 1.0)
    return jnp.concatenate([side[:, None], position * (1.0 - side[:, None])], axis=-1)


class CoLocaliser(nnx.Module):
    """Attention transformer + fixed embedding; `model(images, rand_pos)` -> dict of outputs."""

    def __init__(self, input_shape: Sequence[int], embedding: mnist.CNN, *,
                 crop_size: int = CROP_SIZE, kernel: str = "bilinear", antialias: bool = False,
                 margin: float = MARGIN,
                 initial_scale: float = 1.0, descriptor: str = "raw", patch_scale: float = 0.0,
                 min_scale: float = 0.0, max_scale: float = 1.0, translation: str = "inside",
                 loc_hidden: Sequence[int] = LOC_HIDDEN, embedding_size: int | None = None,
                 rngs: nnx.Rngs):
        """`embedding` is a trained classification CNN on `embedding_size` inputs (default
        `crop_size`; a smaller crop is centred on a black canvas that size); it is frozen here.
        `margin` is the triplet loss's alpha, passed on in the outputs. The crop starts as the
        centred box of half-side `initial_scale` (1: the identity, the whole image).
        `patch_scale` is the random patches' half-side (0: the crop's own, `random_patch_params`).
        With `min_scale > 0` the half-side is kept in (min_scale, max_scale) and `translation`
        bounds the box's centre (`inside_attention`): "inside", `t = (1 - s) tanh(z_t)` (the box
        stays in the image), or "free", `t = tanh(z_t)` (its centre does).
        """
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"descriptor {descriptor!r} is unknown; expected one of "
                             f"{', '.join(DESCRIPTORS)}")
        self.margin = float(margin)
        self.descriptor = descriptor
        self.patch_scale = float(patch_scale)
        self.canvas = int(embedding_size or crop_size)
        initial = jnp.asarray([initial_scale, 0.0, 0.0], jnp.float32)
        loc_net = AttentionLocNet(input_shape, initial, min_scale=min_scale,
                                  max_scale=max_scale, translation=translation,
                                  hidden=loc_hidden, rngs=rngs)
        self.transformer = layers.SpatialTransformer(loc_net, "attention", crop_size,
                                                     kernel=kernel, antialias=antialias)
        self.embedding = layers.freeze(embedding)

    def __call__(self, images: jax.Array, rand_pos: jax.Array | None = None) -> dict:
        """`images [B, H, W, C]`, optional `rand_pos [B, 2]` (where each random patch lies,
        `random_patch_params`) -> `{"theta": [B, 3], "box": [B, 4], "embedding": [B, D],
        "margin": float}` and, with `rand_pos`, `"random_embedding": [B, D]` (the random
        patch's descriptor)."""
        return self.outputs_at(images, self.transformer.loc_net(images), rand_pos)

    def outputs_at(self, images: jax.Array, theta: jax.Array,
                   rand_pos: jax.Array | None = None) -> dict:
        """`__call__`'s outputs for the boxes `theta [B, 3]` given rather than localised (for
        probing which boxes the loss prefers, tools/analyses/coloc_loss_landscape.py)."""
        outputs = {"theta": theta, "box": boxes.attention_box(theta),
                   "embedding": self._descriptors(images, theta), "margin": self.margin}
        if rand_pos is not None:
            patch = random_patch_params(theta, rand_pos, self.patch_scale)
            outputs["random_embedding"] = self._descriptors(images, patch)
        return outputs

    def _descriptors(self, images: jax.Array, theta: jax.Array) -> jax.Array:
        """The embedding's descriptors of the attention crops `theta` of `images`."""
        crops = self.transformer.warp(images, theta)
        return embed(self.embedding, crops, self.descriptor, self.canvas)

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
