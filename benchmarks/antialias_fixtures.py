"""Writes tests/library/fixtures/antialias_torch.npz: torch's antialiased resizes that tests/test_antialias.py
compares `sampling.sample(..., antialias=True)` with (torch is not a test dependency).

    /work/torchenv/bin/python benchmarks/antialias_fixtures.py    # any environment with torch

For a 12 x 10 image of normal noise (seed 0, float64) it stores
`torch.nn.functional.interpolate(image, size, mode, antialias=True, align_corners=False)` for
`mode` bilinear and bicubic (torch's antialiased bicubic is Keys with a = -0.5, as PIL's) at
downscales with integer and non-integer factors per axis, and at one upscale (where antialias
changes nothing). Keys: `{mode}_{h}x{w}`, plus `image` and `torch_version`.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

SIZES = [(6, 5), (4, 3), (5, 4), (3, 2), (7, 9), (12, 10), (16, 13)]
OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                   "fixtures", "antialias_torch.npz")


def main() -> None:
    image = np.random.default_rng(0).normal(size=(12, 10))
    arrays = {"image": image, "torch_version": np.array(torch.__version__)}
    source = torch.tensor(image, dtype=torch.float64)[None, None]
    for mode in ("bilinear", "bicubic"):
        for height, width in SIZES:
            out = F.interpolate(source, size=(height, width), mode=mode, antialias=True,
                                align_corners=False)
            arrays[f"{mode}_{height}x{width}"] = out[0, 0].numpy()
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes), torch {torch.__version__}")


if __name__ == "__main__":
    main()
