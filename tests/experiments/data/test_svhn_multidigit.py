"""The SVHN multi-digit builder on a miniature written in the real format 1 layout.

The test writes a few PNGs and a MATLAB v7.3 `digitStruct.mat` (HDF5, object references),
packs them as `train.tar.gz` / `test.tar.gz` in a manual dir and builds TF-free to array_record.
"""
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from stn.experiments.data.svhn_multidigit import SvhnMultidigit, crops, digit_struct  # noqa: E402

import helpers  # noqa: E402


def test_digit_struct_round_trip(tmp_path):
    """The reader recovers names, boxes and labels, for lone and multiple boxes alike."""
    _, records = helpers.write_svhn_split(str(tmp_path), "train", helpers.SVHN_TRAIN)
    read = digit_struct.read_digit_struct(os.path.join(tmp_path, "train", "digitStruct.mat"))
    assert [r.name for r in read] == [r.name for r in records]
    for got, want in zip(read, records):
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.labels, want.labels)


def test_digit_struct_rejects_non_hdf5(tmp_path):
    path = tmp_path / "digitStruct.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(ValueError, match="HDF5"):
        digit_struct.read_digit_struct(path)


def test_crop_geometry():
    box = crops.union_box(np.array([[10, 5, 12, 25], [24, 6, 12, 25]]))
    np.testing.assert_allclose(box, [10, 5, 36, 31])
    np.testing.assert_allclose(crops.expand_box(box, 0.3), [6.1, 1.1, 39.9, 34.9])
    np.testing.assert_allclose(crops.expand_box(box, 0.3, 2.0), [-10.8, -15.8, 56.8, 51.8])
    assert crops.sequence_label(np.array([1, 2, 3, 4, 5, 6])) is None
    np.testing.assert_array_equal(crops.sequence_label(np.array([0, 7])), [0, 7, 10, 10, 10])
    np.testing.assert_array_equal(crops.sequence_length(np.array([[0, 7, 10, 10, 10]])), [2])


def test_crop_matches_box_content():
    """The crop shows the box's content: left half white, right half black, at the set size.

    (PIL's bilinear downscaling is antialiased, so only pixels away from the edges are exact.)
    """
    image = np.zeros((50, 80, 3), np.uint8)
    image[10:30, 20:40] = 255
    out = crops.crop_and_resize(image, np.array([20, 10, 60, 30]), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[2:-2, 1:6].min() == 255 and out[2:-2, 10:].max() == 0


def _expected_box(boxes, context):
    """The crop the paper describes, written out: the union of the digit boxes grown by 30%
    (times `context`) about its centre, as `(x0, y0, x1, y1)`."""
    boxes = np.array(boxes, np.float64)[:, :4]
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    cx, cy, grow = (x0 + x1) / 2, (y0 + y1) / 2, 1.3 * context
    return np.array([cx - (cx - x0) * grow, cy - (cy - y0) * grow,
                     cx + (x1 - cx) * grow, cy + (y1 - cy) * grow])


@pytest.mark.parametrize("config,size", [("64px", 64), ("128px", 128)])
def test_builder_from_manual_dir(manual_dir, tmp_path, config, size):
    builder = SvhnMultidigit(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    assert set(builder.info.splits.keys()) == {"train", "test"}
    assert builder.info.metadata["dropped_more_than_5"] == {"train": 1, "test": 0}
    sources = builder.as_data_source()
    for split, expected in helpers.SVHN_EXPECTED.items():
        source = sources[split]
        assert len(source) == len(expected)
        seen = {}
        for i in range(len(source)):
            example = source[i]
            name = example["filename"]
            name = name.decode() if isinstance(name, bytes) else name
            assert example["image"].shape == (size, size, 3)
            assert example["image"].dtype == np.uint8
            # The image is the crop around its digits, not e.g. the whole picture resized.
            entries = {"train": helpers.SVHN_TRAIN, "test": helpers.SVHN_TEST}[split]
            boxes = {n: b for n, _, b in entries}[name]
            box = _expected_box(boxes, {"64px": 1.0, "128px": 2.0}[config])
            want = crops.crop_and_resize(helpers.svhn_pixels(entries)[name], box, size)
            np.testing.assert_array_equal(example["image"], want)
            digits = expected[name]
            want = digits + [10] * (5 - len(digits))
            np.testing.assert_array_equal(example["label"], want)
            assert int(example["length"]) == len(digits)
            seen[name] = True
        assert set(seen) == set(expected)


def test_builder_rejects_manual_dir_without_test(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    folder, _ = helpers.write_svhn_split(str(tmp_path / "src"), "train", helpers.SVHN_TRAIN[:1])
    with tarfile.open(manual / "train.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="train")
    builder = SvhnMultidigit(config="64px", data_dir=str(tmp_path / "data"))
    with pytest.raises(ValueError, match="missing \\['test'\\]"):
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
