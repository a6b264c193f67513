"""Checks on data arrays where they enter: labels, images, emptiness (one-line `ValueError`s).

Every loader calls these before any work is done on the data, so a bad label or an unscaled
image is refused at load time with the reason, instead of giving NaN or meaningless metrics
later. Each function names the data it checks through its `what` argument (a file, a split).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: How many offending values an error message quotes.
_QUOTED = 3


def check_not_empty(array: np.ndarray, *, what: str) -> None:
    """Refuses an array with no examples (leading axis 0) or no leading axis at all."""
    shape = np.shape(array)
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(shape)}): expected at least one example")


def check_same_length(images: np.ndarray, labels: np.ndarray, *, what: str) -> None:
    """Refuses images and labels whose numbers of examples differ."""
    n_images, n_labels = np.shape(images)[:1], np.shape(labels)[:1]
    if n_images != n_labels:
        raise ValueError(f"{what}: {n_images[0] if n_images else 0} images but "
                         f"{n_labels[0] if n_labels else 0} labels; expected one label per image")


def _quote(values: np.ndarray, bad: np.ndarray) -> str:
    """`'200 at index 3, -1 at index 7 (and 5 more)'`: the first offending values."""
    where = np.argwhere(bad)
    parts = []
    for i in where[:_QUOTED]:
        at = str(int(i[0])) if len(i) == 1 else "[" + ", ".join(str(int(j)) for j in i) + "]"
        parts.append(f"{values[tuple(i)].item()!r} at index {at}")
    more = len(where) - len(parts)
    return ", ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def check_labels(labels: np.ndarray, num_classes: int, *, what: str,
                 example_shape: Sequence[int | None] = ()) -> np.ndarray:
    """Integer class labels in `0..num_classes-1` -> int32, or a one-line ValueError.

    Accepts integer arrays and float arrays whose values are whole numbers (3.0, not 3.7);
    refuses booleans, strings and objects, non-finite values, and values outside the classes
    (negative, too large, also 2**40, which a cast to int32 would wrap into range).

    Args:
      labels: `[N, *example_shape]`.
      num_classes: labels must lie in `0..num_classes-1` (e.g. 10 for digits, 11 for the
        sequence task's digits plus the blank class 10).
      what: the data's name in messages (a file, a split).
      example_shape: shape of one example's label: `()` for `[N]`, `(5,)` for `[N, 5]`; `None`
        for an axis of any length.
    """
    labels = np.asarray(labels)
    expected = "[N" + "".join(f", {'L' if s is None else s}" for s in example_shape) + "]"
    if labels.ndim != 1 + len(example_shape) or any(
            s is not None and s != got for s, got in zip(example_shape, labels.shape[1:])):
        raise ValueError(f"{what}: labels have shape {labels.shape}, expected {expected}")
    accepted = f"integer labels in 0..{num_classes - 1}"
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"{what}: labels are {labels.dtype}, expected {accepted}")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels)
        if bad.any():
            raise ValueError(f"{what}: non-finite labels ({_quote(labels, bad)}); "
                             f"expected {accepted}")
        bad = labels != np.round(labels)
        if bad.any():
            raise ValueError(f"{what}: labels are not whole numbers ({_quote(labels, bad)}); "
                             f"expected {accepted}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{what}: labels outside 0..{num_classes - 1} ({_quote(labels, bad)}); "
                         f"expected {accepted}")
    return labels.astype(np.int32)


def check_images(images: np.ndarray, *, what: str) -> np.ndarray:
    """uint8 images in 0..255, or float images in [0, 1] -> float32 in [0, 1], else ValueError.

    uint8 is divided by 255. Other integer types (int32, int64, uint16, ...) are refused even
    when their values fit 0..255, and so are float images with values above 1: guessing a
    scale would silently change the data, so the message says how to store it instead.
    Non-finite values (NaN, inf) are refused: the model would turn them into finite but
    meaningless outputs.
    """
    images = np.asarray(images)
    accepted = "store uint8 in 0..255 or floats in [0, 1]"
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if images.dtype.kind != "f":
        raise ValueError(f"{what}: images are {images.dtype}; {accepted}")
    finite = np.isfinite(images)
    if not finite.all():
        raise ValueError(f"{what}: images hold {int((~finite).sum())} non-finite values "
                         f"(NaN or inf); {accepted}")
    low, high = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        hint = " (divide by 255 or store uint8)" if high > 1.0 and low >= 0.0 else ""
        raise ValueError(f"{what}: {images.dtype} images range over [{low:g}, {high:g}], "
                         f"not [0, 1]{hint}; {accepted}")
    return images.astype(np.float32)
