"""The paper's SVHN sequence networks (section 4.2, appendix A): CNN, ST-CNN Single, ST-CNN Multi.

The classification network (after Goodfellow et al. 2014; widths as in the paper's appendix):

    conv[48]-max-conv[64]-conv[128]-max-conv[160]-conv[192]-max-conv[192]-conv[192]-max-conv[192]
    -fc[3072]-fc[3072]-fc[3072] -> a length softmax and one softmax per digit position

every conv 5x5, stride 1, zero padding 2 (SAME), ReLU; every max-pool 2x2 stride 2 (SAME).
The length head has `max_digits + 1` classes (0..5); each digit head has 11 (0..9 and the
blank class 10 of positions after the end), as in the paper's five fc[11] softmaxes.

- ST-CNN Single: one affine spatial transformer at the input; its localisation net is a
  4-layer CNN: conv[32, 5x5]-max[2]-conv[32, 5x5]-fc[32]-regression.
- ST-CNN Multi: an affine transformer before each of the first four conv layers (on the image,
  then on the feature maps), each localisation net two 32-unit fully connected layers and the
  regression. Every transformer keeps its input's size and starts as the identity.

The loss and the sequence error are the task's (`stn.experiments.tasks.sequences`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from stn import layers, transforms

MODEL_NAMES = ("cnn", "st_cnn_single", "st_cnn_multi")
CONV_FEATURES = (48, 64, 128, 160, 192, 192, 192, 192)
POOL_AFTER = (0, 2, 4, 6)  # max-pool after these conv layers (0-based)
FC_WIDTHS = (3072, 3072, 3072)
KERNEL_SIZE = 5
MAX_DIGITS = 5
NUM_DIGIT_CLASSES = 11  # 0..9 and BLANK
BLANK = 10
SINGLE_LOC = dict(features=(32, 32), kernel_size=5, fc=32, downsample=1)
MULTI_LOC_HIDDEN = (32, 32)
NUM_MULTI_TRANSFORMERS = 4


def _pool_same(x: jax.Array) -> jax.Array:
    return layers.max_pool(x, 2, padding="SAME")


def _feature_shapes(input_shape: Sequence[int], features: Sequence[int],
                    pool_after: Sequence[int]) -> list[tuple[int, int, int]]:
    """`(H, W, C)` seen by each conv layer, then the final map's shape (last entry)."""
    height, width, channels = (int(d) for d in input_shape)
    shapes = []
    for i, feat in enumerate(features):
        shapes.append((height, width, channels))
        channels = feat
        if i in pool_after:
            height, width = -(-height // 2), -(-width // 2)
    shapes.append((height, width, channels))
    return shapes


class SequenceHead(nnx.Module):
    """A length softmax and one softmax per digit position on a shared feature vector."""

    def __init__(self, in_features: int, *, max_digits: int = MAX_DIGITS, rngs: nnx.Rngs):
        self.length = nnx.Linear(in_features, max_digits + 1, rngs=rngs)
        self.digits = nnx.List([nnx.Linear(in_features, NUM_DIGIT_CLASSES, rngs=rngs)
                                for _ in range(max_digits)])

    def __call__(self, h: jax.Array) -> dict[str, jax.Array]:
        """`[B, F]` -> `{"length": [B, L + 1], "digits": [B, L, 11]}` logits."""
        return {"length": self.length(h),
                "digits": jnp.stack([head(h) for head in self.digits], axis=1)}


class SequenceCNN(nnx.Module):
    """The SVHN CNN with optional affine transformers before its first conv layers.

    `transformer_at` lists the conv layers (0-based) preceded by a transformer; `loc` is
    "conv" (the Single loc net) or "fc" (the Multi loc net).
    """

    def __init__(self, input_shape: Sequence[int], *, features: Sequence[int] = CONV_FEATURES,
                 pool_after: Sequence[int] = POOL_AFTER, fc_widths: Sequence[int] = FC_WIDTHS,
                 max_digits: int = MAX_DIGITS, transformer_at: Sequence[int] = (),
                 loc: str = "conv", transform: str = "affine", kernel: str = "bilinear",
                 padding: str = "zeros", antialias: bool = False, rngs: nnx.Rngs):
        shapes = _feature_shapes(input_shape, features, pool_after)
        self.pool_after = tuple(int(i) for i in pool_after)
        self.transformer_at = tuple(int(i) for i in transformer_at)
        identity = transforms.get(transform).identity()
        stns = []
        for i in self.transformer_at:
            if not 0 <= i < len(features):
                raise ValueError(f"SequenceCNN: transformer position {i} is not a conv layer "
                                 f"(0..{len(features) - 1})")
            shape = shapes[i]
            # a fresh bias buffer per transformer: shared buffers cannot be donated to jit
            identity = jnp.array(identity, copy=True)
            if loc == "conv":
                loc_net = layers.ConvLocNet(shape, identity, **SINGLE_LOC, rngs=rngs)
            elif loc == "fc":
                loc_net = layers.FullyConnectedLocNet(shape, identity, hidden=MULTI_LOC_HIDDEN,
                                                      rngs=rngs)
            else:
                raise ValueError(f"SequenceCNN: loc must be 'conv' or 'fc', got {loc!r}")
            stns.append(layers.SpatialTransformer(loc_net, transform, shape[:2], kernel=kernel,
                                                  padding=padding, antialias=antialias))
        self.transformers = nnx.List(stns)
        # He initialisation: this deep plain ReLU stack (no normalisation layers) barely moves
        # from the default LeCun scale, whose activations shrink by ~2x per layer.
        he = nnx.initializers.he_normal()
        self.convs = nnx.List([
            nnx.Conv(shapes[i][2], feat, (KERNEL_SIZE, KERNEL_SIZE), padding="SAME",
                     kernel_init=he, rngs=rngs)
            for i, feat in enumerate(features)])
        height, width, channels = shapes[-1]
        in_features = height * width * channels
        fcs = []
        for w in fc_widths:
            fcs.append(nnx.Linear(in_features, w, kernel_init=he, rngs=rngs))
            in_features = w
        self.fcs = nnx.List(fcs)
        self.head = SequenceHead(in_features, max_digits=max_digits, rngs=rngs)

    @property
    def transformer(self) -> layers.SpatialTransformer | None:
        """The transformer at the input (for pictures), if the first conv has one."""
        if self.transformer_at and self.transformer_at[0] == 0:
            return self.transformers[0]
        return None

    def _conv_features(self, x: jax.Array, thetas: list | None = None) -> jax.Array:
        """The conv stack (with its transformers); appends their parameters to `thetas`."""
        stn_of = dict(zip(self.transformer_at, self.transformers))
        h = x
        for i, conv in enumerate(self.convs):
            if i in stn_of:
                h, theta = stn_of[i](h, return_params=True)
                if thetas is not None:
                    thetas.append(theta)
            h = jax.nn.relu(conv(h))
            if i in self.pool_after:
                h = _pool_same(h)
        return h

    def transformer_grids(self, x: jax.Array) -> list[jax.Array]:
        """Each transformer's sampling grid in the input image's frame, `[B, h_k, w_k, 2]`.

        The transformer before conv k samples feature maps in the frame of the previous
        transformer's output (SAME convolutions and 2x2 pools keep the normalised frame), so in
        image coordinates its grid is its affine map composed with every earlier one
        (`transforms.compose_affine`). Only affine and attention maps compose in closed form;
        for other transforms just the first transformer's grid is returned.
        """
        if not self.transformers:
            return []
        thetas: list[jax.Array] = []
        self._conv_features(x, thetas)
        first = self.transformers[0]
        name = first.transform.name
        if len(thetas) == 1 or name not in ("affine", "attention"):
            return [first.transform.grid(thetas[0], *first.output_size,
                                         align_corners=first.align_corners)]
        grids, composed = [], None
        for transformer, theta in zip(self.transformers, thetas):
            theta = (transforms.attention_to_affine(theta) if name == "attention"
                     else theta.reshape(theta.shape[0], 2, 3))
            composed = theta if composed is None else transforms.compose_affine(composed, theta)
            height, width = transformer.output_size
            grids.append(transforms.affine_grid(composed, height, width,
                                                align_corners=transformer.align_corners))
        return grids

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """`[B, H, W, C]` -> `{"length": [B, L + 1], "digits": [B, L, 11]}` logits."""
        h = self._conv_features(x)
        h = h.reshape(h.shape[0], -1)
        for fc in self.fcs:
            h = jax.nn.relu(fc(h))
        return self.head(h)


def create(name: str, input_shape: Sequence[int], *, features: Sequence[int] = CONV_FEATURES,
           fc_widths: Sequence[int] = FC_WIDTHS, max_digits: int = MAX_DIGITS,
           transform: str = "affine", kernel: str = "bilinear", padding: str = "zeros",
           antialias: bool = False, rngs: nnx.Rngs) -> SequenceCNN:
    """Builds `cnn`, `st_cnn_single` or `st_cnn_multi` for one example of shape `(H, W, C)`."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown SVHN model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    at, loc = {"cnn": ((), "conv"), "st_cnn_single": ((0,), "conv"),
               "st_cnn_multi": (tuple(range(NUM_MULTI_TRANSFORMERS)), "fc")}[name]
    if len(features) < len(at):
        raise ValueError(f"{name} needs at least {len(at)} conv layers, got features={features}")
    return SequenceCNN(input_shape, features=features, fc_widths=fc_widths,
                       max_digits=max_digits, transformer_at=at, loc=loc, transform=transform,
                       kernel=kernel, padding=padding, antialias=antialias, rngs=rngs)


def get_model(model_config, input_shape: Sequence[int], rngs: nnx.Rngs) -> SequenceCNN:
    """The model of `model_config` (`name`, optional `features`, `fc_widths`, `transform`, ...)."""
    get = lambda key, default: model_config.get(key, default) if hasattr(  # noqa: E731
        model_config, "get") else default
    return create(get("name", None), input_shape,
                  features=tuple(get("features", CONV_FEATURES)),
                  fc_widths=tuple(get("fc_widths", FC_WIDTHS)),
                  max_digits=int(get("max_digits", MAX_DIGITS)),
                  transform=get("transform", "affine"), kernel=get("kernel", "bilinear"),
                  padding=get("padding", "zeros"), antialias=bool(get("antialias", False)),
                  rngs=rngs)
