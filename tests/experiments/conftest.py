"""Fixtures of the harness tests: drawn digit patterns as IDX files, a miniature SVHN manual dir."""
import os
import tarfile

import pytest

import helpers
from helpers import write_pattern_set


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_pattern_set(tmp_path_factory.mktemp("patterns"))


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    """A manual dir holding train.tar.gz and test.tar.gz in SVHN's layout (`train/1.png`...)."""
    work = tmp_path_factory.mktemp("svhn_src")
    manual = tmp_path_factory.mktemp("svhn_manual")
    for split, entries in (("train", helpers.SVHN_TRAIN), ("test", helpers.SVHN_TEST)):
        folder, _ = helpers.write_svhn_split(str(work), split, entries)
        with tarfile.open(os.path.join(manual, f"{split}.tar.gz"), "w:gz") as tar:
            tar.add(folder, arcname=split)
    return str(manual)
