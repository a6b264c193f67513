"""Layer 4: digit sources, the paper's distortions (built on layer 1), batching.

- `stn.experiments.data.sources.load_digits(source)`: `tfds:NAME`, `idx:DIR` or `sample` -> `DigitSet`.
- `stn.experiments.data.distortions.get(name)`: `none`, `r`, `rts`, `p`, `e`, `tc` -> `Distortion`.
- `stn.experiments.data.pipeline.train_batch` / `test_set`: deterministic batches from `(seed, step)`.
- `stn.experiments.data.arrays.check_*`: label, image and emptiness checks where data enters (one line).
- `stn.experiments.data.external.load(spec, num_classes=...)`: checked `npz:FILE` / `idx:DIR` for eval.
"""
from stn.experiments.data.sources import DigitSet, load_digits

__all__ = ["DigitSet", "load_digits"]
