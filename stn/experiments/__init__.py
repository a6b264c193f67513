"""The paper's experiment harness, built on the `stn` library like any user's code.

The library (`stn.sampling`, `stn.transforms`, `stn.kernels`, `stn.boxes`, `stn.layers`,
`stn.backbones`) never imports this package. Bottom to top, each layer imports only from those
below it:

  3. `stn.experiments.models`: the paper's networks, one module per experiment.
  4. `stn.experiments.data`: digit sources, the paper's distortions, batching.
  5. `stn.experiments.tasks` (one `Task` per experiment), `training` (the one training loop),
     `evaluation`, `checkpointing`, `parallel` and `host` (device mesh, several hosts),
     `sweeps`, `results` (collecting runs, tables, charts), `pictures`.

The entry points `train.py`, `eval.py` and `configs/` sit at the repository's top level.
"""

import importlib.util

#: The modules of the `experiments` extra that the harness imports (module: distribution).
EXTRA_MODULES = {
    "ml_collections": "ml-collections", "absl": "absl-py", "optax": "optax",
    "orbax.checkpoint": "orbax-checkpoint", "tensorflow_datasets": "tensorflow-datasets",
    "tensorboard": "tensorboard", "h5py": "h5py", "PIL": "pillow", "matplotlib": "matplotlib",
    "safetensors": "safetensors",
}


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (fast)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken entry
        return False


def missing_extra() -> list[str]:
    """The modules of ``EXTRA_MODULES`` that are not installed."""
    return [module for module in EXTRA_MODULES if not _installed(module)]


_missing = missing_extra()
if _missing:  # one line naming the extra, not a ModuleNotFoundError deep inside a module
    raise ModuleNotFoundError(
        f"stn.experiments needs the 'experiments' extra (missing: {', '.join(_missing)}): "
        'pip install "stn-jax[experiments]"', name=_missing[0])
