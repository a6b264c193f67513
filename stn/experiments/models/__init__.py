"""Layer 3: the paper's networks, one file per experiment.

The model contract (docs/guides/contracts.md): a model is an `nnx.Module` called on a batch of images
`[B, H, W, C]`, returning its outputs (logits, or a dict of them), with a method
`transformer_grids(images) -> list[[B, h, w, 2]]`: the sampling grid of each of its spatial
transformers mapped into the input image's frame (normalised as `align_corners=False`), for
pictures; an empty list for a model without a transformer. Localisation nets subclass
`stn.layers.LocalisationNet`, by which the trainer finds them.
"""
from __future__ import annotations

import jax
from flax import nnx


def num_params(model: nnx.Module) -> int:
    """Number of trainable scalars (`nnx.Param` entries) in `model`."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


__all__ = ["num_params"]
