"""Base digit sources: tensorflow-datasets, a local IDX directory, or the embedded sample.

`load_digits(source)` returns a `DigitSet` of uint8 `[N, 28, 28]` images and int32 `[N]`
labels, whatever the source:

- `tfds:NAME` (`mnist`, `fashion_mnist`, `kmnist`, or any tfds image-classification set of
  28x28 grey images): read TF-free through `tfds.data_source` (array_record files), prepared
  once under the tfds data dir (`data_dir` argument, else `TFDS_DATA_DIR`, else
  `~/tensorflow_datasets`).
- `idx:DIR`: a directory holding the four standard MNIST-format IDX files, gzipped or not.
- `sample`: 8,000 / 2,000 real MNIST digits shipped inside the package (see
  `stn/experiments/data/sample/README.md`), so everything works on a machine with no network.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import NamedTuple

import numpy as np

from stn.experiments.data import arrays, idx

#: The embedded sample's directory (package data next to this module).
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")

ACCEPTED_FORMS = "'tfds:NAME' (e.g. tfds:mnist, tfds:fashion_mnist, tfds:kmnist), 'idx:DIR' or 'sample'"
#: Digit classes 0..9: every source's labels must lie in this range.
NUM_CLASSES = 10

# Where tfds downloads each set from; used only for a quick reachability check.
_DOWNLOAD_HOSTS = {
    "mnist": "storage.googleapis.com",
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "kmnist": "codh.rois.ac.jp",
}


class DigitSet(NamedTuple):
    """A digit data set in memory: uint8 `[N, H, W]` images, int32 `[N]` labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str


def load_digits(source: str, *, data_dir: str | None = None) -> DigitSet:
    """Loads a digit set from `tfds:NAME`, `idx:DIR` or `sample` (see module docstring).

    Args:
      source: the source string, as in `config.data.source`.
      data_dir: tfds data dir for `tfds:` sources (default: `TFDS_DATA_DIR` or tfds' own).
    Raises:
      ValueError: one line, for an unknown source form, malformed files, or a tfds set that
        is neither prepared locally nor downloadable (it then names `idx:DIR` and `sample`).
    """
    check_source(source)
    if source == "sample":
        return _load_idx_dir(SAMPLE_DIR, "sample")
    if source.startswith("idx:"):
        return _load_idx_dir(idx_directory(source), source)
    return _load_tfds(source[5:], data_dir=data_dir)


def check_source(source: str, *, field: str = "data source") -> None:
    """Raises a one-line ValueError unless `source` has an accepted form (and an `idx:` folder
    exists), without reading any data; `field` names the setting in the message."""
    if not isinstance(source, str):
        raise ValueError(f"{field} must be a string, one of {ACCEPTED_FORMS}; got {source!r}")
    if source.startswith("idx:") and len(source) > 4:
        idx_directory(source, field=field)
    elif source != "sample" and not (source.startswith("tfds:") and len(source) > 5):
        raise ValueError(f"{field}={source!r} is unknown: expected {ACCEPTED_FORMS}")


def idx_directory(source: str, *, field: str = "data source") -> str:
    """The folder of an `idx:DIR` source (`~` expanded), or a one-line error saying what it is.

    The one place that checks an `idx:` path: a missing path and a plain file get different
    messages, since "does not exist" about a file that exists sends the user looking elsewhere.
    `field` names the setting in the message.
    """
    directory = os.path.expanduser(source[4:] if source.startswith("idx:") else source)
    hint = "point idx: at a folder holding the four MNIST-format IDX files, or use 'sample'"
    if os.path.isfile(directory):
        raise ValueError(f"{field}={source!r}: {directory} is a file, not a directory; {hint}")
    if not os.path.isdir(directory):
        raise ValueError(f"{field}={source!r}: directory {directory} does not exist; {hint}")
    return directory


def check_split(images: np.ndarray, labels: np.ndarray, *, images_what: str,
                labels_what: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of a digit set as loaded: non-empty, and int32 labels in 0..9 (or ValueError)."""
    arrays.check_not_empty(images, what=images_what)
    arrays.check_same_length(images, labels, what=f"{images_what} and {labels_what}")
    return images, arrays.check_labels(labels, NUM_CLASSES, what=labels_what)


def _load_idx_dir(directory: str, name: str) -> DigitSet:
    """Reads both splits of an MNIST-format directory, checking each at load time."""
    loaded = []
    for split in ("train", "test"):
        images, labels = idx.read_split(directory, split)
        files = [idx.find_file(directory, idx.STANDARD_FILES[(split, kind)])
                 for kind in ("images", "labels")]
        loaded += check_split(images, labels, images_what=f"{name} {split} images {files[0]}",
                              labels_what=f"{name} {split} labels {files[1]}")
    return DigitSet(*loaded, name)


def host_reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to `host:port` opens within `timeout` seconds.

    Runs in a daemon thread so a hanging DNS lookup cannot stall the caller either.
    """
    result = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _offline_error(name: str, data_dir: str | None, host: str) -> ValueError:
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "the default tfds data dir"
    return ValueError(
        f"tfds:{name} is not prepared in {where} and its download host {host} is unreachable "
        f"(offline?): use data.source='idx:DIR' (a directory of MNIST-format IDX files) or "
        f"'sample' (the embedded 10k-digit MNIST sample)")


def _load_tfds(name: str, *, data_dir: str | None) -> DigitSet:
    """Loads a tfds set TF-free via `tfds.data_source` (array_record files, prepared once).

    Tries the local copy first (`download=False` answers in well under a second); only if it
    is missing does it check the download host (2 s), because tfds 4.9.10 retries an offline
    download for minutes before giving up.
    """
    import tensorflow_datasets as tfds  # heavy and optional: import only when asked

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        tfds.builder_cls(name)  # local registry only (list_builders would go online)
    except Exception:  # DatasetNotFoundError, whose message lists every set on many lines
        raise ValueError(f"unknown tfds data set {name!r}: expected e.g. tfds:mnist, "
                         f"tfds:fashion_mnist, tfds:kmnist") from None
    splits = ["train", "test"]
    try:
        sources = tfds.data_source(name, split=splits, data_dir=data_dir, download=False)
    except Exception:  # not prepared (or prepared as tfrecord): build array_record below
        host = _DOWNLOAD_HOSTS.get(name, "storage.googleapis.com")
        if not host_reachable(host):
            raise _offline_error(name, data_dir, host) from None
        sources = tfds.data_source(name, split=splits, data_dir=data_dir, download=True)
    (train_images, train_labels), (test_images, test_labels) = [
        check_split(*_tfds_split_to_numpy(src, f"tfds:{name}/{s}"),
                    images_what=f"tfds:{name}/{s} images", labels_what=f"tfds:{name}/{s} labels")
        for src, s in zip(sources, splits)]
    return DigitSet(train_images, train_labels, test_images, test_labels, f"tfds:{name}")


def _tfds_split_to_numpy(source, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Materialises a random-access tfds data source of `{image, label}` into numpy arrays."""
    n = len(source)
    images, labels = [], []
    chunk = 4096
    for start in range(0, n, chunk):
        keys = list(range(start, min(n, start + chunk)))
        try:  # batched reads are much faster on real array_record files
            batch = source.__getitems__(keys)
        except TypeError:  # tfds.testing.mock_data patches __getitems__ with a bad signature
            batch = [source[k] for k in keys]
        images.extend(np.asarray(ex["image"]) for ex in batch)
        labels.extend(int(ex["label"]) for ex in batch)
    images = np.stack(images) if images else np.zeros((0, 28, 28, 1), np.uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{what}: expected grey uint8 images [N, H, W(, 1)], got "
                         f"{images.dtype} {images.shape}")
    return images, np.asarray(labels, np.int32)
