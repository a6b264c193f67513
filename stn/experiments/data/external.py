"""External labelled data for evaluation: `npz:FILE` and `idx:DIR` (its test split), checked.

`load(spec, num_classes=..., label_shape=...)` is what `eval.py --data=SPEC` uses: it reads
the file, checks it (`stn.experiments.data.arrays`) and returns float32 images in [0, 1] with int32
labels, or raises a one-line `ValueError` that names the file and what is accepted. The readers
behind it (`read_npz`, `read_idx_test`) return the arrays as stored.

An `.npz` (as `np.savez` writes) holds `image` (`[N, H, W]` or `[N, H, W, C]`; uint8 in
0..255 or floats in [0, 1]) and `label` (`[N]` class indices, or `[N, L]` for sequences).
"""
from __future__ import annotations

import os
import zipfile
from typing import NamedTuple

import numpy as np

from stn.experiments.data import arrays, idx, sources

NPZ_KEYS = ("image", "label")
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive of .npy files
ACCEPTED_SPECS = "'idx:DIR' (the test split of MNIST-format IDX files) or 'npz:FILE'"


class ExternalSet(NamedTuple):
    """Checked external data: float32 images in [0, 1] (as stored: `[N,H,W]` or `[N,H,W,C]`),
    int32 labels, and a short tag for file names (`npz_NAME`, `idx_NAME`)."""

    images: np.ndarray
    labels: np.ndarray
    tag: str


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`image` and `label` arrays of an `.npz` file, as stored, or a one-line ValueError.

    Refuses a missing path or a directory, a file that is not an `.npz` archive, a truncated
    or corrupt one, pickled (object) arrays, missing keys, empty arrays and image and label
    counts that differ. Values are checked by `stn.experiments.data.arrays` (see `load`).
    """
    path = os.path.expanduser(os.fspath(path))
    what = f"npz file {path}"
    if not os.path.exists(path):
        raise ValueError(f"{what}: cannot open it (no such file)")
    if os.path.isdir(path):
        raise ValueError(f"{what} is a directory; expected an .npz file with arrays "
                         f"{' and '.join(NPZ_KEYS)}")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_ZIP_MAGIC))
    except OSError as e:
        raise ValueError(f"{what}: cannot open it ({_first_line(e)})") from None
    if magic != _ZIP_MAGIC:
        raise ValueError(f"{what} is not an .npz archive (a zip of .npy arrays, as np.savez "
                         f"writes); its first bytes are {magic!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = sorted(archive.files)
            found = {key: archive[key] for key in NPZ_KEYS if key in stored}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{what} holds object (pickled) arrays, which are not read; store "
                             f"numeric arrays") from None
        raise ValueError(f"{what} is truncated or corrupt ({_first_line(e)}); write it again "
                         f"with np.savez(path, image=..., label=...)") from None
    missing = [key for key in NPZ_KEYS if key not in found]
    if missing:
        raise ValueError(f"{what} has no array {' or '.join(map(repr, missing))}: it holds "
                         f"{stored}, expected {' and '.join(map(repr, NPZ_KEYS))}")
    images, labels = found["image"], found["label"]
    arrays.check_not_empty(images, what=f"{what} 'image'")
    arrays.check_not_empty(labels, what=f"{what} 'label'")
    arrays.check_same_length(images, labels, what=what)
    return images, labels


def read_idx_test(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The test split of an MNIST-format folder (`DIR` or `idx:DIR`): uint8 `[N, H, W]`, labels
    as stored (`[N]`).

    The folder check is `sources.idx_directory`'s (a plain file is named as one); an empty
    split is refused.
    """
    directory = sources.idx_directory(os.fspath(directory))
    images, labels = idx.read_split(directory, "test")
    arrays.check_not_empty(images, what=f"IDX test split in {directory}")
    return images, labels


def load(spec: str, *, num_classes: int, label_shape: tuple[int | None, ...] = ()
         ) -> ExternalSet:
    """Reads and checks `idx:DIR` or `npz:FILE` for evaluation (see module docstring).

    Args:
      spec: `idx:DIR` or `npz:FILE`.
      num_classes: labels must lie in `0..num_classes-1` (10 for digits; 11 for sequences,
        whose blank class is 10).
      label_shape: one example's label shape: `()` for `[N]`, `(5,)` for `[N, 5]`.
    Returns:
      `ExternalSet(images float32 in [0, 1], labels int32, tag)`; images keep their stored
      shape (`[N, H, W]` or `[N, H, W, C]`): fitting them to the model is the caller's step.
    """
    if spec.startswith("idx:") and len(spec) > 4:
        images, labels = read_idx_test(spec)
        what = f"IDX test split in {spec[4:]}"
        tag = "idx_" + os.path.basename(os.path.normpath(os.path.expanduser(spec[4:])))
    elif spec.startswith("npz:") and len(spec) > 4:
        images, labels = read_npz(spec[4:])
        what = f"npz file {os.path.expanduser(spec[4:])}"
        tag = "npz_" + os.path.splitext(os.path.basename(spec[4:]))[0]
    else:
        raise ValueError(f"external data must be {ACCEPTED_SPECS}, got {spec!r}")
    labels = arrays.check_labels(labels, num_classes, what=f"{what} 'label'",
                                 example_shape=label_shape)
    return ExternalSet(arrays.check_images(images, what=f"{what} 'image'"), labels, tag)
