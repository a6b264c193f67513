"""Crops around SVHN digit sequences and the padded sequence labels (pure numpy / PIL).

Goodfellow et al. 2014, section 5.1: the smallest rectangle holding every digit box, expanded
by 30% in x and y, cropped and resized to 64x64 (random 54x54 crops are then taken for
training; that happens in the input pipeline, `stn.experiments.data.svhn_input`). The STN paper's 128px
variant uses a looser crop; here it is the same 30%-expanded box grown by `context` around its
centre (2.0 for 128px, so digits keep about their 64px size in pixels).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

#: Class of the positions after the end of a sequence.
BLANK = 10


def union_box(boxes: np.ndarray) -> np.ndarray:
    """`[n, 4]` `(left, top, width, height)` boxes -> their union `(x0, y0, x1, y1)`."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("union_box: expected at least one digit box, got none")
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1 = (boxes[:, 0] + boxes[:, 2]).max()
    y1 = (boxes[:, 1] + boxes[:, 3]).max()
    return np.array([x0, y0, x1, y1])


def expand_box(box: np.ndarray, expand: float = 0.3, context: float = 1.0) -> np.ndarray:
    """Grows `(x0, y0, x1, y1)` about its centre: width and height times `(1 + expand) * context`."""
    box = np.asarray(box, np.float64)
    centre = (box[:2] + box[2:]) / 2
    half = (box[2:] - box[:2]) / 2 * (1.0 + expand) * context
    return np.concatenate([centre - half, centre + half])


def crop_and_resize(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crops `box` (clipped to the image) from uint8 `[H, W, 3]` and resizes it to `[size, size, 3]`.

    Clipping (rather than padding) keeps only real pixels, as SVHN crops usually are made;
    bilinear resampling over the fractional box.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"crop_and_resize: expected uint8 RGB [H, W, 3], got "
                         f"{image.dtype} {image.shape}")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    x0, x1 = np.clip([x0, x1], 0, width)
    y0, y1 = np.clip([y0, y1], 0, height)
    if x1 - x0 < 1 or y1 - y0 < 1:  # box entirely off the image: use the whole image
        x0, y0, x1, y1 = 0.0, 0.0, float(width), float(height)
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR,
                                            box=(x0, y0, x1, y1))
    return np.asarray(resized, np.uint8)


def sequence_label(digits: np.ndarray, max_digits: int = 5) -> np.ndarray | None:
    """Digits 0..9 `[n]` -> int32 `[max_digits]` padded with `BLANK`, or None if n > max_digits."""
    digits = np.asarray(digits, np.int32).reshape(-1)
    if len(digits) > max_digits:
        return None
    if len(digits) == 0 or digits.min() < 0 or digits.max() > 9:
        raise ValueError(f"sequence_label: expected 1..{max_digits} digits in 0..9, got "
                         f"{digits.tolist()}")
    label = np.full((max_digits,), BLANK, np.int32)
    label[: len(digits)] = digits
    return label


def sequence_length(labels: np.ndarray) -> np.ndarray:
    """Padded labels `[..., L]` -> number of non-blank positions `[...]` (int32)."""
    return np.sum(np.asarray(labels) != BLANK, axis=-1).astype(np.int32)
