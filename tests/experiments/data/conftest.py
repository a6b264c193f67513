"""Fixtures of the data tests: a miniature SVHN format 1 manual dir (PNGs, digitStruct.mat)."""
import os
import tarfile

import pytest

import helpers


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
