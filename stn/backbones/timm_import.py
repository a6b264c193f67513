"""Load timm's published weights (safetensors files) into the NNX backbones, without torch.

Generic part: an NNX backbone whose attribute paths spell timm's module names (as
`stn.backbones.inception_v3` does) maps leaf by leaf through `LEAF_RULES`:

| NNX module, leaf | checkpoint key | layout change |
| --- | --- | --- |
| `nnx.Conv.kernel` `[kh, kw, in, out]` | `<path>.weight` `[out, in, kh, kw]` | transpose |
| `nnx.Linear.kernel` `[in, out]` | `<path>.weight` `[out, in]` | transpose |
| `nnx.Conv` / `nnx.Linear` `.bias` | `<path>.bias` | none |
| `FrozenBatchNorm` `.scale`, `.bias`, `.mean`, `.var` | `<path>.weight`, `.bias`, `.running_mean`, `.running_var` | none |

Per-model part: a `NameMap` with the checkpoint keys to skip (e.g. Inception's auxiliary
classifier, BN's `num_batches_tracked`), the classifier's name (skipped when the model is built
without one, e.g. to fine-tune a new head) and any renames. A second backbone (e.g. a ResNet-50
whose NNX names follow timm's `conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`) needs its module and
one more `NameMap` here.

Every key of the file must be used or skipped, and every leaf filled with the right shape and
with finite values (a batch-norm running variance also non-negative): the first mismatch raises
a one-line ValueError naming the key (and both shapes). Files are read by `read_safetensors`,
which turns a missing, truncated or foreign file into one line as well.

The reverse, `export_arrays` / `save_safetensors`, writes a module's weights under the same names
and layouts, so weights trained here (e.g. the CUB stand-in's pretrained backbone) load through
the very path the published ones take.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from stn.backbones.inception_v3 import FrozenBatchNorm

__all__ = ["NameMap", "INCEPTION_V3", "MAPS", "LEAF_RULES", "checkpoint_shapes", "load_arrays",
           "load_safetensors", "export_arrays", "save_safetensors"]


@dataclasses.dataclass(frozen=True)
class NameMap:
    """How one model's checkpoint names differ from its NNX paths.

    Attributes:
      skip_suffixes / skip_prefixes: checkpoint keys never loaded.
      classifier: the classifier's path; its keys are skipped when the model has none.
      renames: NNX path prefix -> checkpoint key prefix, for names that differ.
    """

    skip_suffixes: tuple[str, ...] = (".num_batches_tracked",)
    skip_prefixes: tuple[str, ...] = ()
    classifier: str = "fc"
    renames: Mapping[str, str] = dataclasses.field(default_factory=dict)


#: timm `inception_v3.tv_in1k`: the auxiliary classifier (only in torchvision's weights) unused.
INCEPTION_V3 = NameMap(skip_prefixes=("AuxLogits.",))
MAPS = {"inception_v3": INCEPTION_V3}

_CONV_KERNEL = (lambda w: np.transpose(w, (2, 3, 1, 0)), lambda s: (s[3], s[2], s[0], s[1]),
                lambda w: np.transpose(w, (3, 2, 0, 1)))
_LINEAR_KERNEL = (lambda w: np.transpose(w, (1, 0)), lambda s: (s[1], s[0]),
                  lambda w: np.transpose(w, (1, 0)))
_SAME = (lambda w: w, lambda s: tuple(s), lambda w: w)
#: module type -> {leaf name: (checkpoint suffix, (checkpoint -> NNX array, NNX shape ->
#: checkpoint shape, NNX array -> checkpoint))}
LEAF_RULES: dict[type, dict[str, tuple[str, tuple[Callable, Callable]]]] = {
    nnx.Conv: {"kernel": ("weight", _CONV_KERNEL), "bias": ("bias", _SAME)},
    nnx.Linear: {"kernel": ("weight", _LINEAR_KERNEL), "bias": ("bias", _SAME)},
    FrozenBatchNorm: {"scale": ("weight", _SAME), "bias": ("bias", _SAME),
                      "mean": ("running_mean", _SAME), "var": ("running_var", _SAME)},
}


@dataclasses.dataclass(frozen=True)
class _Slot:
    module: nnx.Module
    leaf: str
    to_nnx: Callable[[np.ndarray], np.ndarray]
    shape: tuple[int, ...]  # in the checkpoint's layout
    to_checkpoint: Callable[[np.ndarray], np.ndarray]


def _key_prefix(path: tuple, name_map: NameMap) -> str:
    prefix = ".".join(str(p) for p in path)
    for old, new in name_map.renames.items():
        if prefix == old or prefix.startswith(old + "."):
            return new + prefix[len(old):]
    return prefix


def _slots(model: nnx.Module, name_map: NameMap) -> dict[str, _Slot]:
    """Checkpoint key -> where its tensor goes, for every leaf `LEAF_RULES` knows."""
    slots = {}
    for path, node in nnx.iter_graph(model):
        rules = next((r for kind, r in LEAF_RULES.items() if type(node) is kind), None)
        if rules is None:
            continue
        prefix = _key_prefix(tuple(path), name_map)
        for leaf, (suffix, (to_nnx, to_ckpt_shape, to_ckpt)) in rules.items():
            variable = getattr(node, leaf, None)
            if variable is None:  # e.g. a convolution without bias
                continue
            slots[f"{prefix}.{suffix}"] = _Slot(node, leaf, to_nnx,
                                                to_ckpt_shape(variable[...].shape), to_ckpt)
    return slots


def checkpoint_shapes(model: nnx.Module, name_map: NameMap = INCEPTION_V3
                      ) -> dict[str, tuple[int, ...]]:
    """The checkpoint keys `model` loads and their shapes in the checkpoint's layout."""
    return {key: slot.shape for key, slot in _slots(model, name_map).items()}


def _skipped(key: str, name_map: NameMap, has_classifier: bool) -> bool:
    return (key.endswith(name_map.skip_suffixes) or key.startswith(name_map.skip_prefixes)
            or (not has_classifier and key.startswith(name_map.classifier + ".")))


def load_arrays(model: nnx.Module, arrays: Mapping[str, np.ndarray],
                name_map: NameMap = INCEPTION_V3, *, what: str = "checkpoint") -> nnx.Module:
    """Copies checkpoint `arrays` (timm names, torch layouts) into `model` in place; returns it.

    Raises:
      ValueError: one line naming the first key of the checkpoint that the model lacks, the
        first leaf the checkpoint lacks, the first shape that differs, or the first array with
        a non-finite value (or a negative batch-norm variance); the model is then unchanged.
    """
    slots = _slots(model, name_map)
    has_classifier = any(k.startswith(name_map.classifier + ".") for k in slots)
    for key in sorted(arrays):
        if key not in slots and not _skipped(key, name_map, has_classifier):
            raise ValueError(f"{what}: key {key!r} has no place in the model "
                             f"({type(model).__name__}); wrong file or model settings?")
    missing = [k for k in slots if k not in arrays]
    if missing:
        raise ValueError(f"{what}: the model's {missing[0]!r} is not in the file "
                         f"({len(missing)} keys missing)")
    for key, slot in slots.items():  # every check before any leaf changes
        array = np.asarray(arrays[key])
        if tuple(array.shape) != slot.shape:
            raise ValueError(f"{what}: {key!r} has shape {tuple(array.shape)} in the file, "
                             f"the model expects {slot.shape} (width or num_classes differs?)")
        _check_values(key, array, slot, what)
    for key, slot in slots.items():
        getattr(slot.module, slot.leaf).value = jnp.asarray(slot.to_nnx(np.asarray(arrays[key])),
                                                            jnp.float32)
    return model


def _check_values(key: str, array: np.ndarray, slot: _Slot, what: str) -> None:
    """One line naming `key` when its values are not finite, or when it is a batch-norm
    running variance below zero (a weights file that would make every later loss NaN)."""
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{what}: {key!r} holds {array.dtype} values, not numbers")
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{what}: {key!r} holds {int((~finite).sum())} non-finite values "
                         f"(NaN or infinity); the file is damaged or was saved from a diverged "
                         f"run")
    if isinstance(slot.module, FrozenBatchNorm) and slot.leaf == "var" and (array < 0).any():
        raise ValueError(f"{what}: {key!r} is a batch-norm running variance but holds negative "
                         f"values (smallest {float(array.min()):.4g}); the file is damaged")


def read_safetensors(path: str | os.PathLike, *, what: str = "weights file"
                     ) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, `{key: numpy array}`; a missing, truncated or foreign
    file is one ValueError line naming it (`what` says which setting gave the path)."""
    from safetensors.numpy import load_file  # optional dependency: only when importing weights

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{what}: {path} is a folder, not a safetensors file")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: {path} does not exist")
    try:
        return load_file(path)
    except Exception as e:  # a truncated or foreign file, or a dtype numpy lacks (bfloat16)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({reason})") from None


def load_safetensors(model: nnx.Module, path: str | os.PathLike,
                     name_map: NameMap = INCEPTION_V3) -> nnx.Module:
    """Loads a timm `.safetensors` file (e.g. `inception_v3.tv_in1k`'s `model.safetensors`)
    into `model` in place through `name_map`; one-line ValueError for any mismatch."""
    path = os.fspath(path)
    return load_arrays(model, read_safetensors(path), name_map, what=path)


def export_arrays(model: nnx.Module, name_map: NameMap = INCEPTION_V3) -> dict[str, np.ndarray]:
    """`model`'s weights as a checkpoint: `{timm key: float32 array in torch's layout}`, the
    inverse of `load_arrays` (keys exactly `checkpoint_shapes(model, name_map)`)."""
    return {key: np.ascontiguousarray(slot.to_checkpoint(
                np.asarray(getattr(slot.module, slot.leaf)[...], np.float32)))
            for key, slot in _slots(model, name_map).items()}


def save_safetensors(model: nnx.Module, path: str | os.PathLike,
                     name_map: NameMap = INCEPTION_V3) -> str:
    """Writes `export_arrays(model)` to the safetensors file `path` (atomically); returns it."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    temporary = f"{path}.tmp{os.getpid()}"
    save_file(export_arrays(model, name_map), temporary)
    os.replace(temporary, path)
    return path
