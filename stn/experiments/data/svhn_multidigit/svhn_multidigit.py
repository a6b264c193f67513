"""tensorflow-datasets builder for SVHN format 1 as multi-digit sequences (TF-free).

Each example is one house-number image cropped around its digit sequence (see `crops`):
`image` uint8 `[S, S, 3]` (S = 64 or 128 by config), `label` int64 `[5]` (digits 0..9, padded
with the blank class 10), `length` (1..5) and `filename`. Images with more than 5 digits are
dropped; how many per split is logged and kept in `info.metadata["dropped_more_than_5"]`.

Source archives (`train.tar.gz`, `test.tar.gz`, `extra.tar.gz` from
http://ufldl.stanford.edu/housenumbers/) are read from `manual_dir` when it holds them (or
their extracted `train/`, `test/`, `extra/` folders); otherwise they are downloaded.
Build TF-free with `file_format="array_record"` and read with `tfds.data_source`.
"""
from __future__ import annotations

import dataclasses
import os
import tarfile
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from stn.experiments.data.svhn_multidigit import crops, digit_struct

URL = "http://ufldl.stanford.edu/housenumbers/"
SPLITS = ("train", "test", "extra")
MAX_DIGITS = 5

MANUAL_INSTRUCTIONS = """\
Download SVHN format 1 (train.tar.gz, test.tar.gz and, optionally, extra.tar.gz) from
http://ufldl.stanford.edu/housenumbers/ and put the archives (or their extracted train/,
test/, extra/ folders, each holding the PNGs and digitStruct.mat) in the manual dir
(default: <data_dir>/downloads/manual/). train and test are required."""


@dataclasses.dataclass(eq=False)
class SvhnMultidigitConfig(tfds.core.BuilderConfig):
    """Crop geometry: output `size`, box growth `expand` (0.3 = 30%) and extra `context`."""

    size: int = 64
    expand: float = 0.3
    context: float = 1.0


@dataclasses.dataclass
class ExampleStats:
    """Counts kept while generating one split."""

    kept: int = 0
    dropped_more_than_5: int = 0


def iter_examples(directory: str, config: SvhnMultidigitConfig,
                  stats: ExampleStats) -> Iterator[tuple[str, dict]]:
    """Yields `(key, example)` for every image of an extracted split folder.

    Args:
      directory: a folder holding `digitStruct.mat` and the PNGs it names.
      config: crop geometry.
      stats: updated in place (kept / dropped counts).
    """
    mat = os.path.join(directory, "digitStruct.mat")
    if not os.path.isfile(mat):
        raise ValueError(f"SVHN split folder {directory}: expected digitStruct.mat in it")
    for record in digit_struct.read_digit_struct(mat):
        digits = [digit_struct.label_to_digit(l) for l in record.labels]
        label = crops.sequence_label(np.array(digits), MAX_DIGITS)
        if label is None:
            stats.dropped_more_than_5 += 1
            continue
        with Image.open(os.path.join(directory, record.name)) as png:
            image = np.asarray(png.convert("RGB"), np.uint8)
        box = crops.expand_box(crops.union_box(record.boxes), config.expand, config.context)
        crop = crops.crop_and_resize(image, box, config.size)
        stats.kept += 1
        yield record.name, {
            "image": Image.fromarray(crop),  # PIL images are PNG-encoded by tfds without TF
            "label": label.astype(np.int64),
            "length": len(digits),
            "filename": record.name,
        }


def _find_split_dir(root: str, split: str) -> str | None:
    """The folder holding `digitStruct.mat` for `split` under `root` (`root/split` or `root`)."""
    for candidate in (os.path.join(root, split), root):
        if os.path.isfile(os.path.join(candidate, "digitStruct.mat")):
            return candidate
    return None


def _extract(archive: str, dl_manager) -> str:
    """Extracts a `.tar.gz` once under the download dir with Python's tarfile.

    (tfds' own extractor needs TensorFlow.) A marker file records a finished extraction.
    """
    name = os.path.basename(archive).replace(".tar.gz", "")
    target = os.path.join(os.fspath(dl_manager.download_dir), "extracted", f"svhn_{name}")
    marker = os.path.join(target, ".extracted")
    if not os.path.isfile(marker):
        logging.info("svhn_multidigit: extracting %s to %s", archive, target)
        os.makedirs(target, exist_ok=True)
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(target, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise ValueError(f"{archive}: expected a readable SVHN .tar.gz archive ({err})") from None
        open(marker, "w").close()
    return target


class SvhnMultidigit(tfds.core.GeneratorBasedBuilder):
    """SVHN format 1 house numbers (up to 5 digits) as cropped sequence examples."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 64px and 128px crops, labels padded to 5."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS
    BUILDER_CONFIGS = [
        SvhnMultidigitConfig(name="64px", size=64, expand=0.3, context=1.0,
                             description="Union of the digit boxes +30%, resized to 64x64 "
                                         "(Goodfellow et al. 2014)."),
        SvhnMultidigitConfig(name="128px", size=128, expand=0.3, context=2.0,
                             description="Looser crop: the 64px box grown 2x about its "
                                         "centre, resized to 128x128."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3)),
                "label": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int64),
                "length": tfds.features.Scalar(dtype=np.int64),
                "filename": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage=URL,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        folders = self._manual_folders(dl_manager)
        if folders is None:
            logging.info("svhn_multidigit: no archives in the manual dir, downloading from %s", URL)
            archives = dl_manager.download({split: URL + f"{split}.tar.gz" for split in SPLITS})
            folders = {split: _find_split_dir(_extract(os.fspath(path), dl_manager), split)
                       for split, path in archives.items()}
        self.info.metadata["dropped_more_than_5"] = {}
        return {split: self._generate_examples(split, folder)
                for split, folder in folders.items()}

    def _manual_folders(self, dl_manager) -> dict[str, str] | None:
        """Split folders from the manual dir (archives extracted on the way), or None if empty."""
        try:
            manual = os.fspath(dl_manager.manual_dir)
        except AssertionError:  # manual dir missing or empty: download instead
            return None
        folders = {}
        for split in SPLITS:
            folder = _find_split_dir(manual, split) if os.path.isdir(
                os.path.join(manual, split)) else None
            archive = os.path.join(manual, f"{split}.tar.gz")
            if folder is None and os.path.isfile(archive):
                folder = _find_split_dir(_extract(archive, dl_manager), split)
            if folder is not None:
                folders[split] = folder
        missing = [s for s in ("train", "test") if s not in folders]
        if missing:
            raise ValueError(f"svhn_multidigit manual dir {manual}: expected train.tar.gz and "
                             f"test.tar.gz (or extracted folders with digitStruct.mat); "
                             f"missing {missing}")
        return folders

    def _generate_examples(self, split: str, folder: str):
        stats = ExampleStats()
        yield from iter_examples(folder, self.builder_config, stats)
        self.info.metadata["dropped_more_than_5"][split] = stats.dropped_more_than_5
        logging.info("svhn_multidigit/%s %s: kept %d images, dropped %d with more than %d "
                     "digits", self.builder_config.name, split, stats.kept,
                     stats.dropped_more_than_5, MAX_DIGITS)
