"""Writes tests/library/fixtures/inception_v3_timm.npz: timm's Inception-v3 logits on a fixed input,
with seeded weights that the test rebuilds without torch (import parity).

    /work/torchenv/bin/python benchmarks/make_inception_fixture.py   # torch, timm, numpy

timm's `inception_v3` (the architecture of `inception_v3.tv_in1k`, pretrained=False) gets every
tensor of its state_dict from `stn/backbones/seeded.py` (numpy, from the seed and the tensor's
name), BN running statistics included; it runs in eval mode on a fixed 2 x 80 x 96 input (not
square, so a height/width mix-up shows). The fixture holds the input (NHWC), the logits, the seed
and the checkpoint's names and shapes: a few hundred kilobytes. This script is the only place
torch runs; neither torch nor timm is a requirement of the project.
"""
import importlib.util
import json
import os

import numpy as np
import timm
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "inception_v3_timm.npz")
SEED = 23
SKIPPED = ("num_batches_tracked",)


def load_seeded():
    """stn/backbones/seeded.py by path (the package imports jax, absent from this venv)."""
    spec = importlib.util.spec_from_file_location(
        "seeded", os.path.join(ROOT, "stn", "backbones", "seeded.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    seeded = load_seeded()
    model = timm.create_model("inception_v3", pretrained=False).eval()
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items() if not k.endswith(SKIPPED)}
    weights = seeded.seeded_weights(shapes, SEED)
    state.update({k: torch.from_numpy(v) for k, v in weights.items()})
    model.load_state_dict(state, strict=True)
    image = np.random.default_rng(SEED).normal(0.0, 1.0, (2, 80, 96, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()).numpy()
    np.savez_compressed(OUT, image=image, logits=logits.astype(np.float32), seed=SEED,
                        shapes=json.dumps(shapes), timm_version=timm.__version__,
                        torch_version=torch.__version__)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes); logits std {logits.std():.3f}, "
          f"|max| {np.abs(logits).max():.3f}; timm {timm.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
