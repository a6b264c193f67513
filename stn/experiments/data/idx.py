"""Read and write MNIST-format IDX files (optionally gzipped).

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/) is a big-endian header:
two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions `d`, then `d`
uint32 sizes, followed by the raw data in C order. MNIST, Fashion-MNIST and KMNIST all ship
in this format as `train-images-idx3-ubyte(.gz)` etc.

Every malformed file raises a one-line `ValueError` that names the file.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

_UBYTE = 0x08

#: The four standard file stems of an MNIST-format directory, by (split, kind).
STANDARD_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _open(path: str, mode: str):
    """Opens `path` through gzip when its name ends in `.gz`."""
    return gzip.open(path, mode) if str(path).endswith(".gz") else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an unsigned-byte IDX file into a uint8 array of the shape its header states.

    Raises:
      ValueError: (one line, naming the file) for a bad magic number, an unsupported type
        code, or a payload whose length does not match the header.
    """
    path = os.fspath(path)
    try:
        with _open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile
        raise ValueError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"bad magic number in IDX file {path}: expected 0x0000TTDD, got "
            f"0x{data[:4].hex() or 'empty'}")
    type_code, ndim = data[2], data[3]
    if type_code != _UBYTE:
        raise ValueError(
            f"unsupported IDX type 0x{type_code:02x} in {path}: expected 0x08 (unsigned byte)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"truncated header in IDX file {path}: {ndim} dims need {header} "
                         f"bytes, file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    got = len(data) - header
    if got != expected:
        raise ValueError(f"wrong length of IDX file {path}: header shape {tuple(shape)} needs "
                         f"{expected} data bytes, file has {got}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (gzipped when `path` ends in `.gz`)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx expects a uint8 array, got {array.dtype} for {path}")
    header = bytes([0, 0, _UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with _open(os.fspath(path), "wb") as f:
        f.write(header + np.ascontiguousarray(array).tobytes())


def find_file(directory: str | os.PathLike, stem: str) -> str:
    """Returns the path of `stem` or `stem.gz` in `directory`, or raises a one-line error."""
    directory = os.fspath(directory)
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise ValueError(f"missing IDX file in {directory}: expected {stem} or {stem}.gz")


def read_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split (`train` or `test`) of an MNIST-format directory.

    Returns:
      uint8 images `[N, H, W]` and int32 labels `[N]`.
    Raises:
      ValueError: for malformed files, images that are not 3-D, labels that are not 1-D, or
        image and label counts that differ (naming both files).
    """
    images_path = find_file(directory, STANDARD_FILES[(split, "images")])
    labels_path = find_file(directory, STANDARD_FILES[(split, "labels")])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"IDX images file {images_path} has shape {images.shape}, "
                         f"expected [N, H, W]")
    if labels.ndim != 1:
        raise ValueError(f"IDX labels file {labels_path} has shape {labels.shape}, expected [N]")
    if len(images) != len(labels):
        raise ValueError(f"mismatched counts: {images_path} has {len(images)} images but "
                         f"{labels_path} has {len(labels)} labels")
    return images, labels.astype(np.int32)


def write_split(directory: str | os.PathLike, split: str, images: np.ndarray,
                labels: np.ndarray, *, compress: bool = True) -> None:
    """Writes one split as the two standard IDX files of an MNIST-format directory."""
    os.makedirs(directory, exist_ok=True)
    suffix = ".gz" if compress else ""
    write_idx(os.path.join(directory, STANDARD_FILES[(split, "images")] + suffix),
              np.asarray(images, np.uint8))
    write_idx(os.path.join(directory, STANDARD_FILES[(split, "labels")] + suffix),
              np.asarray(labels).astype(np.uint8))
