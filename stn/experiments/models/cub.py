"""Fine-grained birds (paper section 4.3, Table 3): a CNN and N x ST-CNN on Inception backbones.

- `BackboneCNN` ("CNN" row): an Inception-v3 on the image -> its pooled descriptor -> one
  linear layer (the softmax classifier; the loss applies the softmax).
- `ParallelAttentionCNN` ("2xST-CNN", "4xST-CNN"): a localisation net (`AttentionLocNet`: an
  Inception on the image down-sampled to `loc_size`, its descriptor regressing N attention
  transforms `(s, t_x, t_y)`, paper eq. 2, one linear layer per transformer, held as one
  `RegressionLayer` of 3N outputs); N crops of `crop_size x crop_size` sampled from the
  full-resolution image by `stn.sampling` (bilinear) on the attention grids; each crop through
  its own Inception ("part description sub-nets", each initialised from the same pretrained
  weights) or, with `share_backbones`, one Inception for all; the N descriptors concatenated;
  one linear layer.

Images come in as float32 `[B, H, W, 3]` in [0, 1]; the backbones see them normalised
(`inception_v3.normalise`). Pretrained weights: `load_backbone_weights` (timm's safetensors).
The initial boxes are a choice of ours (the paper does not give them): `initial_boxes`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stn import layers, sampling, transforms, _xla_cpu
from stn.backbones import inception_v3, timm_import

MODEL_NAMES = ("cnn", "st")


def make_backbone(width: float, last_block: str, rngs: nnx.Rngs) -> inception_v3.InceptionV3:
    """A headless Inception-v3 (descriptor output) of the given width and depth."""
    return inception_v3.InceptionV3(num_classes=0, width=width, last_block=last_block, rngs=rngs,
                                    conv_general_dilated=_xla_cpu.conv_general_dilated)


def initial_boxes(count: int, scale: float, offset: float) -> np.ndarray:
    """`[count, 3]` attention parameters `(s, t_x, t_y)` the transformers start from: scale
    `scale`, centres evenly on a circle of radius `offset` (starting left, clockwise), so the
    crops begin apart; one transformer starts centred."""
    if count == 1:
        return np.asarray([[scale, 0.0, 0.0]], np.float32)
    angles = np.pi + 2 * np.pi * np.arange(count) / count
    return np.stack([np.full(count, scale), offset * np.cos(angles),
                     offset * np.sin(angles)], axis=1).astype(np.float32)


def bound_boxes(raw: jax.Array, max_scale: float = 1.0) -> jax.Array:
    """`[..., 3]` unbounded outputs `(a, b, c)` -> attention parameters inside the image:
    `s = max_scale sigmoid(a)` in (0, max_scale), `t = (1 - s) tanh((b, c))`, so the box
    `[t - s, t + s]` stays within `[-1, 1]` on both axes and spans at most `max_scale` of the
    image's side (a choice of ours: paper eq. 2 leaves `(s, t)` free)."""
    s = bounded_scale(raw[..., :1], max_scale)
    return jnp.concatenate([s, (1 - s) * jnp.tanh(raw[..., 1:])], axis=-1)


def bounded_scale(raw: jax.Array, max_scale: float) -> jax.Array:
    """An unbounded output -> a box scale `max_scale sigmoid(raw)` in (0, max_scale)."""
    return max_scale * jax.nn.sigmoid(raw)


def unbound_boxes(boxes: np.ndarray, max_scale: float = 1.0) -> np.ndarray:
    """The inverse of `bound_boxes` (numpy), for the regression's initial bias; scales must be
    in (0, max_scale) and each box inside the image."""
    boxes = np.asarray(boxes, np.float64)
    s, t = boxes[..., :1], boxes[..., 1:]
    if not (np.all((s > 0) & (s < max_scale) & (s < 1)) and np.all(np.abs(t) < 1 - s)):
        raise ValueError(f"bounded boxes need 0 < init_scale < max_scale <= 1 and boxes inside "
                         f"the image (|offset| < 1 - scale); got {boxes.tolist()}")
    u = s / max_scale
    raw = np.concatenate([np.log(u / (1 - u)), np.arctanh(t / (1 - s))], axis=-1)
    return raw.astype(np.float32)


def view(images: jax.Array, size: int, enlarged: int = 0) -> jax.Array:
    """The image as a network sees it: resized to `size` (the view's resolution), then, when
    `enlarged` > 0, resized again to `enlarged` (no new detail: the same view, processed at a
    larger scale, so a backbone's last feature map has more cells and sees small things at the
    scale it was trained on)."""
    seen = resize_to(images, size)
    return resize_to(seen, enlarged) if enlarged else seen


def resize_to(images: jax.Array, size: int) -> jax.Array:
    """`[B, H, W, C]` -> `[B, size, size, C]` by antialiased linear resizing (`jax.image`)."""
    if images.shape[1:3] == (size, size):
        return images
    shape = (images.shape[0], size, size, images.shape[3])
    return jax.image.resize(images, shape, "linear", antialias=True)


LOC_HEADS = ("pooled", "flattened", "soft_argmax")


def soft_argmax(logits: jax.Array) -> jax.Array:
    """`[B, h, w, K]` logits -> `[B, K, 2]` expected cell centre `(x, y)` under each channel's
    softmax over the `h x w` cells, `sum_p softmax(l)_p c_p`, with the cell centres `c_p` in
    the sampler's normalised coordinates (`(j + 0.5) / w * 2 - 1`): a position that moves
    smoothly with the map, inside the outermost cells' centres."""
    b, h, w, k = logits.shape
    weights = jax.nn.softmax(logits.reshape(b, h * w, k), axis=1).reshape(b, h, w, k)
    xs = (jnp.arange(w, dtype=logits.dtype) + 0.5) / w * 2 - 1
    ys = (jnp.arange(h, dtype=logits.dtype) + 0.5) / h * 2 - 1
    x = jnp.einsum("bhwk,w->bk", weights, xs)
    y = jnp.einsum("bhwk,h->bk", weights, ys)
    return jnp.stack([x, y], axis=-1)


class AttentionLocNet(layers.LocalisationNet):
    """The image down-sampled to `loc_size` (and, with `enlarged`, resized again to that size:
    `view`) -> Inception -> `[B, 3N]` attention parameters (N transformers' `(s, t_x, t_y)` in
    order), starting at `boxes`. The head (`head`):

    - "pooled": one regression from the pooled descriptor (zero kernel, bias = the boxes);
    - "flattened": the same from the whole last feature map, flattened (global pooling keeps
      little of where things are);
    - "soft_argmax": each transformer's centre is the `soft_argmax` of its own saliency map (a
      1x1 regression of the feature map, zero at the start: a uniform map, so every box starts
      centred and `boxes` must have t = 0), its scale a regression from the pooled
      descriptor. The centre is a weighted mean of places in the image, so it can follow an
      object from the start of training, where a linear regression must first learn to turn
      "which cells are active" into a coordinate.

    With `bounded`, scales are `max_scale sigmoid(.)` (`bound_boxes`) and, for the regression
    heads, centres keep the box inside the image; soft-argmax centres are always inside the
    outermost cells' centres.
    """

    def __init__(self, backbone: inception_v3.InceptionV3, boxes: np.ndarray, loc_size: int, *,
                 rngs: nnx.Rngs, bounded: bool = False, max_scale: float = 1.0,
                 head: str = "pooled", enlarged: int = 0):
        if head not in LOC_HEADS:
            raise ValueError(f"loc net head {head!r} is unknown; use one of {', '.join(LOC_HEADS)}")
        self.backbone = backbone
        self.loc_size, self.enlarged = int(loc_size), int(enlarged)
        self.bounded, self.max_scale, self.head = bool(bounded), float(max_scale), head
        start = unbound_boxes(boxes, self.max_scale) if self.bounded else np.asarray(boxes)
        if head == "soft_argmax":
            if np.any(np.asarray(boxes)[:, 1:]):
                raise ValueError("the soft_argmax head starts every box at the centre; set "
                                 "init_offset to 0")
            self.saliency = layers.regression_layer(backbone.num_features, np.zeros(len(boxes)),
                                                    rngs=rngs)
            self.scales = layers.regression_layer(backbone.num_features, start[:, 0], rngs=rngs)
        elif head == "flattened":
            side = self.enlarged or self.loc_size
            probe = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
            map_shape = jax.eval_shape(backbone.feature_map, probe).shape[1:]
            self.regression = layers.regression_layer(int(np.prod(map_shape)), np.ravel(start),
                                                      rngs=rngs)
        else:
            self.regression = layers.regression_layer(backbone.num_features, np.ravel(start),
                                                      rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = inception_v3.normalise(view(images, self.loc_size, self.enlarged))
        feature_map = self.backbone.feature_map(x)
        batch = x.shape[0]
        if self.head == "soft_argmax":
            scale = self.scales(feature_map.mean(axis=(1, 2)))
            if self.bounded:
                scale = bounded_scale(scale, self.max_scale)
            centre = soft_argmax(self.saliency(feature_map))
            return jnp.concatenate([scale[..., None], centre], axis=-1).reshape(batch, -1)
        if self.head == "flattened":
            raw = self.regression(feature_map.reshape(batch, -1))
        else:
            raw = self.regression(feature_map.mean(axis=(1, 2)))
        if not self.bounded:
            return raw
        return bound_boxes(raw.reshape(batch, -1, 3), self.max_scale).reshape(raw.shape)


class BackboneCNN(nnx.Module):
    """Inception descriptor of the whole image -> linear classifier (Table 3's "CNN"). With
    `enlarged` > 0 the image is resized to that size first (`view`: the same view processed
    at a larger scale)."""

    def __init__(self, backbone: inception_v3.InceptionV3, num_classes: int, *, rngs: nnx.Rngs,
                 enlarged: int = 0):
        self.backbone = backbone
        self.enlarged = int(enlarged)
        self.classifier = nnx.Linear(backbone.num_features, num_classes, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        """float `[B, H, W, 3]` in [0, 1] -> logits `[B, num_classes]`."""
        if self.enlarged:
            images = resize_to(images, self.enlarged)
        return self.classifier(self.backbone.features(inception_v3.normalise(images)))

    def transformer_grids(self, images: jax.Array) -> list[jax.Array]:
        """No transformer (the model contract, `stn.experiments.models`)."""
        return []


class ParallelAttentionCNN(nnx.Module):
    """N attention transformers in parallel on the image, a backbone per crop, one classifier."""

    def __init__(self, loc_net: AttentionLocNet, parts: Sequence[inception_v3.InceptionV3],
                 count: int, crop_size: int, num_classes: int, *, rngs: nnx.Rngs):
        self.loc_net = loc_net
        self.parts = nnx.List(list(parts))  # one per crop, or a single shared one
        self.count, self.crop_size = int(count), int(crop_size)
        features = sum(self._part(k).num_features for k in range(self.count))
        self.classifier = nnx.Linear(features, num_classes, rngs=rngs)

    def _part(self, k: int) -> inception_v3.InceptionV3:
        return self.parts[k if len(self.parts) > 1 else 0]

    def attention(self, images: jax.Array) -> jax.Array:
        """The N transformers' parameters `[B, N, 3]` = `(s, t_x, t_y)` (paper eq. 2)."""
        return self.loc_net(images).reshape(images.shape[0], self.count, 3)

    def grids(self, images: jax.Array) -> list[jax.Array]:
        """Each transformer's `[B, crop, crop, 2]` sampling grid on the image."""
        attention = transforms.get("attention")
        theta = self.attention(images)
        return [attention.grid(theta[:, k], self.crop_size, self.crop_size)
                for k in range(self.count)]

    def __call__(self, images: jax.Array) -> jax.Array:
        """float `[B, H, W, 3]` in [0, 1] -> logits `[B, num_classes]`."""
        descriptors = []
        for k, grid in enumerate(self.grids(images)):
            crop = sampling.sample(images, grid, kernel="bilinear", padding="zeros")
            descriptors.append(self._part(k).features(inception_v3.normalise(crop)))
        return self.classifier(jnp.concatenate(descriptors, axis=-1))

    def transformer_grids(self, images: jax.Array) -> list[jax.Array]:
        """The N grids (already in the input's frame), for the pictures of the boxes."""
        return self.grids(images)


class PretrainingNet(inception_v3.InceptionV3):
    """The CUB stand-in's "ImageNet" network: an Inception with a classifier (timm's names at
    its root, so `stn.backbones.timm_import.export_arrays` gives the checkpoint every backbone
    loads), on grey `[B, H, W, 1]` (or RGB) images in [0, 1], repeated as RGB and normalised.
    Its batch-norm layers learn their statistics in training (`inception_v3.learn_statistics`,
    switched on by the pretraining task's training forward) and use them in evaluation."""

    def __call__(self, images: jax.Array) -> jax.Array:
        """float `[B, H, W, 1 or 3]` in [0, 1] -> logits `[B, num_classes]`."""
        rgb = jnp.broadcast_to(images, images.shape[:-1] + (3,))
        return super().__call__(inception_v3.normalise(rgb))

    def transformer_grids(self, images: jax.Array) -> list[jax.Array]:
        """No transformer (the model contract, `stn.experiments.models`)."""
        return []


def pretraining_net(width: float, last_block: str, num_classes: int,
                    rngs: nnx.Rngs) -> PretrainingNet:
    """A `PretrainingNet` of the backbones' width and depth with a `num_classes` classifier."""
    return PretrainingNet(num_classes=num_classes, width=width, last_block=last_block, rngs=rngs,
                          conv_general_dilated=_xla_cpu.conv_general_dilated)


def get_model(model_config, num_classes: int, rngs: nnx.Rngs) -> nnx.Module:
    """The configured model: `model.name` "cnn" or "st" (`model.num_transformers` crops)."""
    get = model_config.get
    width, last_block = float(get("width", 1.0)), get("last_block", "Mixed_7c")
    enlarged = int(get("view_enlarged", 0))
    if model_config.name == "cnn":
        return BackboneCNN(make_backbone(width, last_block, rngs), num_classes, rngs=rngs,
                           enlarged=enlarged)
    count = int(model_config.num_transformers)
    boxes = initial_boxes(count, float(model_config.init_scale), float(model_config.init_offset))
    loc_net = AttentionLocNet(make_backbone(width, last_block, rngs), boxes,
                              int(model_config.loc_size), rngs=rngs,
                              bounded=bool(get("bounded_boxes", False)),
                              max_scale=float(get("max_scale", 1.0)),
                              head=str(get("loc_head", "pooled")), enlarged=enlarged)
    parts = [make_backbone(width, last_block, rngs)
             for _ in range(1 if get("share_backbones", False) else count)]
    return ParallelAttentionCNN(loc_net, parts, count, int(model_config.crop_size), num_classes,
                                rngs=rngs)


def backbones(model: nnx.Module) -> list[inception_v3.InceptionV3]:
    """Every Inception of `model` (the loc net's and the parts')."""
    return [node for _, node in nnx.iter_graph(model)
            if isinstance(node, inception_v3.InceptionV3)]


def load_backbone_weights(model: nnx.Module, arrays: Mapping[str, np.ndarray],
                          *, what: str) -> nnx.Module:
    """Copies one checkpoint (timm names) into every backbone of `model`, in place."""
    for backbone in backbones(model):
        timm_import.load_arrays(backbone, arrays, timm_import.INCEPTION_V3, what=what)
    return model

