"""Checks where data enters (`stn.experiments.data.arrays`) and the external readers (`stn.experiments.data.external`)."""
import zipfile

import numpy as np
import pytest

from stn.experiments.data import arrays, external, idx


def _one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert str(needle) in message, (needle, message)
    return message


# --- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels,quoted", [
    (np.array([1, 200, 3]), "200 at index 1"),
    (np.array([1, 12, 3], np.uint8), "12 at index 1"),
    (np.array([-1, 2, 3]), "-1 at index 0"),
    (np.array([1, 2, 2 ** 40]), f"{2 ** 40} at index 2"),  # int32 would wrap it into range
    (np.array([1.0, 2.0, 1e12]), "1000000000000.0 at index 2"),
])
def test_labels_outside_the_classes_are_refused(labels, quoted):
    with pytest.raises(ValueError) as e:
        arrays.check_labels(labels, 10, what="my labels")
    _one_line(e, "my labels", quoted, "0..9")


@pytest.mark.parametrize("labels,reason", [
    (np.array([1.0, 3.7]), "not whole numbers"),
    (np.array([1.0, np.nan]), "non-finite"),
    (np.array([True, False]), "bool"),
    (np.array(["1", "2"]), "<U1"),
    (np.array([[1, 2], [3, 4]]), "shape (2, 2), expected [N]"),
])
def test_labels_of_the_wrong_kind_or_shape_are_refused(labels, reason):
    with pytest.raises(ValueError) as e:
        arrays.check_labels(labels, 10, what="my labels")
    _one_line(e, "my labels", reason)


def test_labels_accepted_as_int32_including_whole_floats():
    out = arrays.check_labels(np.array([0.0, 9.0, 3.0]), 10, what="x")
    assert out.dtype == np.int32 and out.tolist() == [0, 9, 3]
    out = arrays.check_labels(np.array([0, 9], np.uint8), 10, what="x")
    assert out.dtype == np.int32 and out.tolist() == [0, 9]


def test_sequence_labels_take_their_example_shape():
    labels = np.array([[1, 2, 10, 10, 10], [0, 10, 10, 10, 10]], np.int64)
    out = arrays.check_labels(labels, 11, what="seq", example_shape=(5,))
    assert out.dtype == np.int32 and out.shape == (2, 5)
    arrays.check_labels(labels, 11, what="seq", example_shape=(None,))  # any length
    bad = labels.copy()
    bad[1, 3] = 11
    with pytest.raises(ValueError) as e:
        arrays.check_labels(bad, 11, what="seq", example_shape=(5,))
    _one_line(e, "11 at index [1, 3]", "0..10")
    with pytest.raises(ValueError) as e:
        arrays.check_labels(labels[:, :4], 11, what="seq", example_shape=(5,))
    _one_line(e, "shape (2, 4), expected [N, 5]")
    with pytest.raises(ValueError, match=r"expected \[N, 5\]"):
        arrays.check_labels(labels[:, 0], 11, what="seq", example_shape=(5,))


# --- images ------------------------------------------------------------------------------------

def test_uint8_and_unit_floats_are_accepted_and_scaled_once():
    u8 = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_allclose(arrays.check_images(u8, what="x"), [[0.0, 0.2, 1.0]], rtol=1e-6)
    for dtype in (np.float16, np.float32, np.float64):
        out = arrays.check_images(np.array([[0.0, 0.5, 1.0]], dtype), what="x")
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0]])


@pytest.mark.parametrize("images,reason", [
    (np.array([[0, 128, 255]], np.int32), "int32"),  # 0..255 but not uint8: scale unknown
    (np.array([[0, 128, 255]], np.int64), "int64"),
    (np.array([[0.0, 128.0, 255.0]]), "divide by 255"),  # float64 in 0..255
    (np.array([[-0.5, 0.5]], np.float32), "[-0.5, 0.5]"),
    (np.full((2, 3), np.nan, np.float32), "non-finite"),
    (np.array([[0.0, np.inf]]), "non-finite"),
    (np.array([[True, False]]), "bool"),
])
def test_images_of_unknown_scale_or_non_finite_are_refused(images, reason):
    with pytest.raises(ValueError) as e:
        arrays.check_images(images, what="my images")
    _one_line(e, "my images", reason, "uint8 in 0..255 or floats in [0, 1]")


def test_empty_and_mismatched_lengths():
    with pytest.raises(ValueError) as e:
        arrays.check_not_empty(np.zeros((0, 28, 28)), what="the split")
    _one_line(e, "the split is empty")
    with pytest.raises(ValueError) as e:
        arrays.check_same_length(np.zeros((3, 2)), np.zeros(2), what="the set")
    _one_line(e, "3 images but 2 labels")
    arrays.check_not_empty(np.zeros((1, 2)), what="x")
    arrays.check_same_length(np.zeros((2, 2)), np.zeros(2), what="x")


# --- external npz ------------------------------------------------------------------------------

def _npz(path, **arrays_):
    np.savez(path, **arrays_)
    return path


def test_read_npz_round_trip_and_load_checks(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3], np.int64)
    path = _npz(tmp_path / "set.npz", image=images, label=labels)
    raw_images, raw_labels = external.read_npz(path)
    np.testing.assert_array_equal(raw_images, images)
    np.testing.assert_array_equal(raw_labels, labels)
    loaded = external.load(f"npz:{path}", num_classes=10)
    assert loaded.tag == "npz_set" and loaded.labels.dtype == np.int32
    np.testing.assert_allclose(loaded.images, images / 255.0, rtol=1e-6)
    seq = _npz(tmp_path / "seq.npz", image=images, label=np.full((4, 5), 10))
    assert external.load(f"npz:{seq}", num_classes=11, label_shape=(5,)).labels.shape == (4, 5)


def test_read_npz_refuses_bad_files_in_one_line(tmp_path):
    with pytest.raises(ValueError) as e:
        external.read_npz(tmp_path / "nope.npz")
    _one_line(e, tmp_path / "nope.npz", "cannot open")
    with pytest.raises(ValueError) as e:
        external.read_npz(tmp_path)
    _one_line(e, "is a directory")
    text = tmp_path / "notes.npz"
    text.write_text("image,label\n1,2\n")
    with pytest.raises(ValueError) as e:
        external.read_npz(text)
    _one_line(e, text, "not an .npz archive")
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError) as e:
        external.read_npz(npy)
    _one_line(e, "not an .npz archive")
    good = _npz(tmp_path / "good.npz", image=np.zeros((50, 28, 28), np.uint8),
                label=np.zeros(50, np.int64))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError) as e:
        external.read_npz(truncated)
    _one_line(e, truncated, "truncated or corrupt")


def test_read_npz_refuses_flipped_bytes_inside_a_member(tmp_path):
    good = _npz(tmp_path / "good.npz", image=np.zeros((50, 28, 28), np.uint8),
                label=np.zeros(50, np.int64))
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:  # flip bytes in the image member's data (CRC mismatch)
        info = z.getinfo("image.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[start:start + 8] = b"\xff" * 8
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        external.read_npz(bad)
    _one_line(e, bad, "truncated or corrupt")


@pytest.mark.parametrize("contents,reason", [
    ({"images": np.zeros((2, 28, 28), np.uint8), "label": np.zeros(2)}, "no array 'image'"),
    ({"image": np.zeros((0, 28, 28), np.uint8), "label": np.zeros(0)}, "'image' is empty"),
    ({"image": np.zeros((3, 28, 28), np.uint8), "label": np.zeros(2)}, "3 images but 2 labels"),
    ({"image": np.array([None, 1], object), "label": np.zeros(2)}, "object (pickled)"),
])
def test_read_npz_refuses_bad_contents(tmp_path, contents, reason):
    path = tmp_path / "bad.npz"
    np.savez(path, **contents)
    with pytest.raises(ValueError) as e:
        external.read_npz(path)
    _one_line(e, path, reason)


@pytest.mark.parametrize("contents,reason", [
    ({"image": np.zeros((2, 28, 28), np.uint8), "label": np.array([0, 12])}, "12 at index 1"),
    ({"image": np.zeros((2, 28, 28), np.uint8), "label": np.array([0, 3.7])}, "whole numbers"),
    ({"image": np.zeros((2, 28, 28), np.int32), "label": np.array([0, 1])}, "int32"),
    ({"image": np.full((2, 28, 28), 255.0), "label": np.array([0, 1])}, "divide by 255"),
    ({"image": np.full((2, 28, 28), np.nan), "label": np.array([0, 1])}, "non-finite"),
])
def test_load_refuses_bad_values_before_any_work(tmp_path, contents, reason):
    path = tmp_path / "bad.npz"
    np.savez(path, **contents)
    with pytest.raises(ValueError) as e:
        external.load(f"npz:{path}", num_classes=10)
    _one_line(e, path, reason)


# --- external idx ------------------------------------------------------------------------------

def test_read_idx_test_and_its_refusals(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    idx.write_split(tmp_path, "test", images, np.array([1, 2, 3]))
    loaded = external.load(f"idx:{tmp_path}", num_classes=10)
    assert loaded.images.shape == (3, 28, 28) and loaded.labels.tolist() == [1, 2, 3]
    assert loaded.tag == f"idx_{tmp_path.name}"
    plain = tmp_path / "t10k-images-idx3-ubyte.gz"
    with pytest.raises(ValueError) as e:
        external.load(f"idx:{plain}", num_classes=10)
    _one_line(e, plain, "is a file, not a directory")
    idx.write_split(tmp_path, "test", images, np.array([1, 200, 3]))
    with pytest.raises(ValueError) as e:
        external.load(f"idx:{tmp_path}", num_classes=10)
    _one_line(e, "200 at index 1")
    idx.write_split(tmp_path, "test", images[:0], np.zeros(0))
    with pytest.raises(ValueError) as e:
        external.read_idx_test(tmp_path)
    _one_line(e, "is empty")
    with pytest.raises(ValueError) as e:
        external.load("csv:/x", num_classes=10)
    _one_line(e, "'idx:DIR'", "'npz:FILE'")
