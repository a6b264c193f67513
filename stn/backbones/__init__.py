"""Pretrained backbones (layer 2): each a Flax NNX module with the importer of its published
weights, usable without the rest of `stn` (they import only jax, flax, numpy and safetensors).

- `stn.backbones.inception_v3`: Inception-v3 (Szegedy et al. 2016), timm's layer names.
- `stn.backbones.timm_import`: loads a timm safetensors checkpoint into such a module through a
  per-model name map (`INCEPTION_V3`); a name or shape that does not match is one line naming it.
- `stn.backbones.seeded`: deterministic stand-in weights for a checkpoint's names and shapes
  (numpy only), for parity tests against the published framework without its weights.
"""

from stn.backbones import inception_v3, seeded, timm_import

__all__ = ["inception_v3", "seeded", "timm_import"]
