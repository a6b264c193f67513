"""The IDX reader/writer and the `idx:` / `sample` sources, on files the tests write."""
import gzip
import os
import struct

import numpy as np
import pytest

from stn.experiments.data import idx
from stn.experiments.data.sources import load_digits


def _digits(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_roundtrip_plain_and_gzip(tmp_path, name):
    images, _ = _digits(5)
    path = tmp_path / name
    idx.write_idx(path, images)
    back = idx.read_idx(path)
    assert back.dtype == np.uint8 and back.shape == (5, 28, 28)
    np.testing.assert_array_equal(back, images)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == name.endswith(".gz")


def test_header_layout_is_standard(tmp_path):
    path = tmp_path / "l-idx1-ubyte"
    idx.write_idx(path, np.arange(7, dtype=np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x01" and struct.unpack(">I", raw[4:8]) == (7,)
    assert raw[8:] == bytes(range(7))


def _one_line(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_magic(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError) as e:
        idx.read_idx(path)
    assert "magic" in _one_line(e, path)


def test_wrong_type_code(tmp_path):
    path = tmp_path / "float-idx1"
    path.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00\x00\x00\x00")
    with pytest.raises(ValueError) as e:
        idx.read_idx(path)
    assert "type" in _one_line(e, path)


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_length(tmp_path, delta):
    path = tmp_path / "short-idx3-ubyte.gz"
    payload = bytes(2 * 28 * 28 + delta)
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 28, 28) + payload)
    with pytest.raises(ValueError) as e:
        idx.read_idx(path)
    assert "length" in _one_line(e, path)


def test_truncated_header_and_not_gzip(tmp_path):
    path = tmp_path / "h-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError) as e:
        idx.read_idx(path)
    _one_line(e, path)
    fake = tmp_path / "x-idx3-ubyte.gz"
    fake.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError) as e:
        idx.read_idx(fake)
    _one_line(e, fake)


def test_mismatched_counts(tmp_path):
    images, labels = _digits(4)
    idx.write_split(tmp_path, "train", images, labels)
    idx.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:3].astype(np.uint8))
    with pytest.raises(ValueError) as e:
        idx.read_split(tmp_path, "train")
    message = _one_line(e, tmp_path / "train-labels-idx1-ubyte.gz")
    assert "4 images" in message and "3 labels" in message


def test_missing_file_names_the_directory(tmp_path):
    images, labels = _digits(2)
    idx.write_split(tmp_path, "train", images, labels)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte") as e:
        load_digits(f"idx:{tmp_path}")
    assert "\n" not in str(e.value)


def test_idx_directory_source_mixed_compression(tmp_path):
    train, train_labels = _digits(6, seed=1)
    test, test_labels = _digits(3, seed=2)
    idx.write_split(tmp_path, "train", train, train_labels, compress=True)
    idx.write_split(tmp_path, "test", test, test_labels, compress=False)
    digits = load_digits(f"idx:{tmp_path}")
    np.testing.assert_array_equal(digits.train_images, train)
    np.testing.assert_array_equal(digits.test_images, test)
    assert digits.train_labels.dtype == np.int32
    np.testing.assert_array_equal(digits.test_labels, test_labels)
    assert digits.name == f"idx:{tmp_path}"


def test_embedded_sample():
    digits = load_digits("sample")
    assert digits.train_images.shape == (8000, 28, 28)
    assert digits.test_images.shape == (2000, 28, 28)
    assert digits.train_images.dtype == np.uint8 and digits.test_labels.dtype == np.int32
    assert set(np.unique(digits.train_labels)) == set(range(10))
    # Real digits: dark background, bright strokes, roughly 19% of pixels lit.
    lit = (digits.test_images > 127).mean()
    assert 0.08 < lit < 0.3 and digits.test_images[:, 0, :].max() < 64


@pytest.mark.parametrize("source", ["mnist", "idx:", "tfds:", "files:/x", 3])
def test_unknown_source_lists_forms(source):
    with pytest.raises(ValueError) as e:
        load_digits(source)
    message = str(e.value)
    assert "\n" not in message and "idx:DIR" in message and "sample" in message


def test_idx_source_missing_or_a_plain_file(tmp_path):
    missing = os.path.join(tmp_path, "nope")
    with pytest.raises(ValueError, match="does not exist") as e:
        load_digits(f"idx:{missing}")
    _one_line(e, missing)
    plain = tmp_path / "train-images-idx3-ubyte"
    plain.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a directory") as e:
        load_digits(f"idx:{plain}")
    _one_line(e, plain)


@pytest.mark.parametrize("bad", [200, 12, 10])
def test_idx_labels_outside_the_digits_are_refused_at_load(tmp_path, bad):
    """IDX labels are bytes: 200 or 10 would pass as classes and give NaN losses later."""
    images, labels = _digits(5)
    idx.write_split(tmp_path, "train", images, labels)
    labels = labels.copy()
    labels[3] = bad
    idx.write_split(tmp_path, "test", images, labels)
    with pytest.raises(ValueError) as e:
        load_digits(f"idx:{tmp_path}")
    message = _one_line(e, tmp_path / "t10k-labels-idx1-ubyte.gz")
    assert f"{bad} at index 3" in message and "0..9" in message


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_empty_split_is_refused_at_load(tmp_path, split):
    images, labels = _digits(4)
    for s in ("train", "test"):
        n = 0 if s == split else 4
        idx.write_split(tmp_path, s, images[:n], labels[:n])
    with pytest.raises(ValueError, match="is empty") as e:
        load_digits(f"idx:{tmp_path}")
    _one_line(e, tmp_path)
    assert f"{split} images" in str(e.value)
