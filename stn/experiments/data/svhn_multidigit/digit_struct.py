"""Reader (and a writer, for miniatures) of SVHN format 1's `digitStruct.mat`.

`digitStruct.mat` is a MATLAB v7.3 file, i.e. HDF5. MATLAB stores the struct array
`digitStruct(i).name` / `digitStruct(i).bbox(j).{height,left,top,width,label}` as:

- `/digitStruct/name`: `[N, 1]` object references; each points to a uint16 `[len, 1]` dataset
  holding the file name's character codes.
- `/digitStruct/bbox`: `[N, 1]` object references; each points to a group with five datasets
  `height`, `left`, `top`, `width`, `label`. With one box in the image each is a float64 `[1, 1]`
  holding the value itself; with several boxes each is `[n, 1]` of object references, each to a
  float64 `[1, 1]` dataset.
- The referenced objects live in the `/#refs#` group.

Label 10 stands for the digit 0 (`label_to_digit`). Boxes are in pixels, `left`/`top` the
0-based column/row of the box's top-left corner.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import h5py
import numpy as np


class ImageBoxes(NamedTuple):
    """One SVHN image's annotation: `boxes` float64 `[n, 4]` as `(left, top, width, height)`."""

    name: str
    boxes: np.ndarray
    labels: np.ndarray  # int32 [n], SVHN's 1..10 (10 = digit 0)


FIELDS = ("left", "top", "width", "height")


def label_to_digit(label: int) -> int:
    """SVHN's box label (1..10, 10 meaning 0) -> the digit 0..9."""
    label = int(label)
    if not 1 <= label <= 10:
        raise ValueError(f"SVHN box label must be in 1..10 (10 = digit 0), got {label}")
    return label % 10


def _is_reference(dataset: h5py.Dataset) -> bool:
    return h5py.check_dtype(ref=dataset.dtype) is not None


def _read_values(file: h5py.File, dataset: h5py.Dataset) -> np.ndarray:
    """A bbox field as float64 `[n]`: direct values (one box) or dereferenced (several)."""
    raw = dataset[()]
    if not _is_reference(dataset):
        return np.asarray(raw, np.float64).reshape(-1)
    return np.array([float(np.asarray(file[ref][()]).reshape(-1)[0])
                     for ref in np.asarray(raw).reshape(-1)], np.float64)


def _read_name(file: h5py.File, ref) -> str:
    codes = np.asarray(file[ref][()]).reshape(-1)
    return "".join(chr(int(c)) for c in codes)


def read_digit_struct(path: str | os.PathLike) -> list[ImageBoxes]:
    """Reads every image's file name, boxes and labels from a `digitStruct.mat`.

    Raises:
      ValueError: one line, if the file is not HDF5 or lacks `/digitStruct/{name,bbox}`.
    """
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: expected a MATLAB v7.3 (HDF5) digitStruct.mat, "
                         f"h5py cannot open it ({err})") from None
    with file:
        group = file.get("digitStruct")
        if group is None or "name" not in group or "bbox" not in group:
            raise ValueError(f"{path}: expected datasets /digitStruct/name and "
                             f"/digitStruct/bbox, found {list(file.keys())}")
        names = np.asarray(group["name"][()]).reshape(-1)
        bboxes = np.asarray(group["bbox"][()]).reshape(-1)
        if len(names) != len(bboxes):
            raise ValueError(f"{path}: {len(names)} names but {len(bboxes)} bbox entries")
        records = []
        for name_ref, bbox_ref in zip(names, bboxes):
            box_group = file[bbox_ref]
            columns = [_read_values(file, box_group[f]) for f in FIELDS]
            labels = _read_values(file, box_group["label"]).astype(np.int32)
            records.append(ImageBoxes(_read_name(file, name_ref),
                                      np.stack(columns, axis=1), labels))
    return records


def write_digit_struct(path: str | os.PathLike, records: Sequence[ImageBoxes]) -> None:
    """Writes `records` in the MATLAB v7.3 layout described in the module docstring.

    Used to make miniature SVHN archives for tests; MATLAB's 512-byte user block is kept
    so the file looks like MATLAB's own.
    """
    with h5py.File(path, "w", userblock_size=512) as file:
        refs = file.create_group("#refs#")
        group = file.create_group("digitStruct")
        ref_dtype = h5py.ref_dtype
        name_refs = np.empty((len(records), 1), dtype=ref_dtype)
        bbox_refs = np.empty((len(records), 1), dtype=ref_dtype)
        counter = iter(range(10**9))

        def new_name() -> str:
            return f"r{next(counter)}"

        for i, record in enumerate(records):
            codes = np.array([[ord(c)] for c in record.name], np.uint16)
            name_refs[i, 0] = refs.create_dataset(new_name(), data=codes).ref
            box_group = refs.create_group(new_name())
            values = dict(zip(FIELDS, np.asarray(record.boxes, np.float64).T))
            values["label"] = np.asarray(record.labels, np.float64)
            for field in (*FIELDS, "label"):
                column = values[field]
                if len(column) == 1:  # MATLAB stores a lone scalar in place
                    box_group.create_dataset(field, data=column.reshape(1, 1))
                else:
                    field_refs = np.empty((len(column), 1), dtype=ref_dtype)
                    for j, value in enumerate(column):
                        field_refs[j, 0] = refs.create_dataset(
                            new_name(), data=np.array([[value]], np.float64)).ref
                    box_group.create_dataset(field, data=field_refs)
            bbox_refs[i, 0] = box_group.ref
        group.create_dataset("name", data=name_refs)
        group.create_dataset("bbox", data=bbox_refs)
