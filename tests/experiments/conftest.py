"""Fixtures of the harness tests."""
import pytest

from helpers import write_pattern_set


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pattern_set(tmp_path_factory.mktemp("patterns"))
