"""Deterministic stand-in weights for a checkpoint's names and shapes (numpy only).

A parity test needs the same weights in two frameworks without shipping a 100 MB checkpoint:
`seeded_weights(shapes, seed)` makes every tensor from `(seed, crc32(name))`, so the script that
runs timm (tools/fixtures/inception_v3_timm.py, with torch) and the test that runs the NNX
module (without torch) build identical tensors from the names and shapes alone. The values are
chosen so a deep network's activations stay of order one (He-scaled weights) and every batch-norm
term matters (scale, shift and running statistics away from 1 and 0). This file imports nothing
but numpy and zlib, so the torch-side script can load it by path.
"""
from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np

__all__ = ["seeded_tensor", "seeded_weights"]


def seeded_tensor(name: str, shape: Sequence[int], seed: int) -> np.ndarray:
    """float32 tensor of `shape` for checkpoint key `name` (torch layout, e.g. OIHW kernels).

    - `*.running_mean`: N(0, 0.1^2); `*.running_var`: U(0.5, 1.5);
    - other 1-D `*.weight` (BN scale): U(0.5, 1.5); 1-D `*.bias`: N(0, 0.1^2);
    - >= 2-D weights: N(0, 2 / fan_in), fan_in = prod(shape[1:]) (He scaling).
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    shape = tuple(int(s) for s in shape)
    if name.endswith("running_var") or (len(shape) == 1 and name.endswith("weight")):
        values = rng.uniform(0.5, 1.5, shape)
    elif len(shape) <= 1:
        values = rng.normal(0.0, 0.1, shape)
    else:
        values = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    return values.astype(np.float32)


def seeded_weights(shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """`{name: seeded_tensor(name, shape, seed)}` for every name of `shapes`."""
    return {name: seeded_tensor(name, shape, seed) for name, shape in shapes.items()}
