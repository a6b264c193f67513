"""The `tfds:` source (through `tfds.testing.mock_data`, no network) and its offline error."""
import time

import numpy as np
import pytest

from stn.experiments.data import sources

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_source_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        digits = sources.load_digits("tfds:mnist", data_dir=str(tmp_path))
    assert digits.name == "tfds:mnist"
    for images, labels in [(digits.train_images, digits.train_labels),
                           (digits.test_images, digits.test_labels)]:
        assert images.shape == (12, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (12,) and labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < 10
    assert digits.train_images.std() > 0  # mock images are random, not blank


def test_tfds_offline_fails_fast_in_one_line(tmp_path, monkeypatch):
    # Nothing prepared in tmp_path and the host check says offline: no download attempted.
    monkeypatch.setattr(sources, "host_reachable", lambda host, **kw: False)
    start = time.monotonic()
    with pytest.raises(ValueError) as e:
        sources.load_digits("tfds:fashion_mnist", data_dir=str(tmp_path))
    assert time.monotonic() - start < 20
    message = str(e.value)
    assert "\n" not in message and "idx:DIR" in message and "'sample'" in message
    assert "tfds:fashion_mnist" in message


def test_tfds_unknown_name_is_one_line(tmp_path):
    with pytest.raises(ValueError) as e:
        sources.load_digits("tfds:no_such_digits", data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and "no_such_digits" in str(e.value)


def test_host_reachable_is_false_for_a_closed_local_port():
    import socket
    with socket.socket() as s:  # bind, then close: the port is now (almost surely) closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert not sources.host_reachable("127.0.0.1", port=port, timeout=1.0)
    assert time.monotonic() - start < 2.0


def test_host_reachable_is_true_for_a_listening_local_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert sources.host_reachable("127.0.0.1", port=s.getsockname()[1], timeout=1.0)


@pytest.mark.parametrize("split", [0, 1])
def test_tfds_labels_outside_the_digits_and_empty_splits_are_refused(tmp_path, monkeypatch,
                                                                      split):
    """A tfds set whose labels are not 0..9 (or a split with no examples) fails at load time."""
    real = sources._tfds_split_to_numpy
    calls = []

    def spoiled(source, what, spoil):
        images, labels = real(source, what)
        calls.append(what)
        return spoil(images, labels) if len(calls) == split + 1 else (images, labels)

    cases = [(lambda i, l: (i, np.where(np.arange(len(l)) == 2, 12, l)), "12 at index 2"),
             (lambda i, l: (i[:0], l[:0]), "is empty")]
    for spoil, needle in cases:
        calls.clear()
        monkeypatch.setattr(sources, "_tfds_split_to_numpy",
                            lambda source, what: spoiled(source, what, spoil))
        with tfds.testing.mock_data(num_examples=6):
            with pytest.raises(ValueError) as e:
                sources.load_digits("tfds:mnist", data_dir=str(tmp_path))
        message = str(e.value)
        assert "\n" not in message and needle in message
        assert f"tfds:mnist/{['train', 'test'][split]}" in message
