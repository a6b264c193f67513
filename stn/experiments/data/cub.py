"""CUB-200-2011 birds (paper section 4.3, Table 3) and a CPU stand-in, as uint8 image arrays.

Sources (`config.data.source`):
- `dir:PATH`: the official CUB_200_2011 folder (PATH holds `images/`, `images.txt`,
  `image_class_labels.txt`, `train_test_split.txt`; the paper's 5,994 / 5,794 split is
  `train_test_split.txt`). JPEGs decoded with Pillow (RGB), each resized to
  `store_size x store_size` (aspect ratio not kept: unstated in the paper, a choice of ours).
- `tfds:caltech_birds2011`: tensorflow-datasets' copy, read TF-free through `tfds.data_source`
  (array_record files prepared under the tfds data dir), resized the same way. Reading needs no
  TensorFlow; preparing does (tfds' builder for this set calls `tf.io.gfile` and OpenCV), once:
  `tfds build caltech_birds2011 --file_format=array_record` where tensorflow is installed.
- `synthetic`: a miniature in the official layout written by `write_miniature` (coloured
  "birds", one head colour per class, at random places and sizes on textured backgrounds),
  then read back through `dir:`: the smoke runs and tests, with no download.
- `clutter:SOURCE` (SOURCE `idx:DIR`, `tfds:fashion_mnist` or `sample`): the CPU stand-in of
  docs/reports/results.md, 28x28 items at random positions and scales on a larger cluttered canvas
  (`cluttered_objects`).

Training batches (`train_batch`) take a random `image_size` crop of each stored image and flip it
left-right with probability 1/2 (both unstated in the paper); evaluation sets take the centre
crop (`centre_crop`). Images are float32 in [0, 1] once batched; the model normalises them.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from stn.experiments.data import pipeline, sources

#: The official layout's index files (each line `<image id> <value>`).
INDEX_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
_ORDER, _CROP, _FLIP = 10, 11, 12  # fold_in tags of the training randomness streams


class CubIndex(NamedTuple):
    """The official index: image paths (relative to `images/`), 0-based labels, train flags."""

    paths: list[str]
    labels: np.ndarray  # int32 [N], 0-based (the files count classes from 1)
    is_train: np.ndarray  # bool [N]


def _read_index_file(path: str) -> dict[int, str]:
    """`{image id: value}` of one index file; one-line ValueError for a malformed line or an
    id listed twice (which would relabel an image, or move it between train and test)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing: a CUB_200_2011 folder holds images/ and "
                         f"{', '.join(INDEX_FILES)}")
    entries, lines = {}, {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise ValueError(f"{path}:{number}: expected '<image id> <value>', got "
                                 f"{line.strip()!r}")
            image_id = int(parts[0])
            if image_id in entries:
                raise ValueError(f"{path}:{number}: image id {image_id} is listed again (first "
                                 f"on line {lines[image_id]}); each id must appear once")
            entries[image_id], lines[image_id] = parts[1].strip(), number
    return entries


def read_index(root: str) -> CubIndex:
    """Parses the three index files of the official layout under `root`, in image-id order.

    Raises:
      ValueError: one line, for a missing file, a malformed line, ids that differ between the
        files, a label below 1, or a split flag other than 0/1.
    """
    images, labels, split = (_read_index_file(os.path.join(root, name)) for name in INDEX_FILES)
    if not images:
        raise ValueError(f"{os.path.join(root, 'images.txt')} lists no images")
    for name, table in zip(INDEX_FILES[1:], (labels, split)):
        if set(table) != set(images):
            odd = sorted(set(table) ^ set(images))[0]
            raise ValueError(f"{os.path.join(root, name)} and images.txt list different image "
                             f"ids (e.g. {odd})")
    ids = sorted(images)
    try:
        label_values = np.asarray([int(labels[i]) for i in ids], np.int64)
        flags = np.asarray([int(split[i]) for i in ids], np.int64)
    except ValueError as e:
        raise ValueError(f"{root}: a class label or split flag is not an integer ({e})") from None
    if label_values.min() < 1:
        raise ValueError(f"{root}/image_class_labels.txt: class ids start at 1, found "
                         f"{label_values.min()}")
    if not np.isin(flags, (0, 1)).all():
        raise ValueError(f"{root}/train_test_split.txt: flags must be 0 or 1")
    return CubIndex([images[i] for i in ids], (label_values - 1).astype(np.int32),
                    flags.astype(bool))


#: Pillow's modes of 16-bit grey pixels (e.g. a 16-bit PNG, whatever its file's name says).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _rgb(image: Image.Image) -> Image.Image | None:
    """`image` as 8-bit RGB: 16-bit grey scaled by 255 / 65535 (Pillow's own conversion clips
    it, turning a 0..65535 ramp almost white); None for 32-bit integer or float pixels, whose
    range is unknown."""
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.round(wide * (255.0 / 65535.0)).astype(np.uint8))
    elif image.mode in ("I", "F"):
        return None
    return image.convert("RGB")


def decode_resized(path: str, size: int) -> np.ndarray:
    """One image file -> uint8 `[size, size, 3]` (RGB, bilinear resize, aspect not kept).
    16-bit images are scaled to 8 bits; 32-bit pixels, an image over Pillow's pixel limit (a
    decompression bomb) and any unreadable file are refused in one line."""
    try:
        with Image.open(path) as image:
            mode, rgb = image.mode, _rgb(image)
            if rgb is not None:
                return np.asarray(rgb.resize((size, size), Image.BILINEAR))
    except Image.DecompressionBombError as e:
        raise ValueError(f"cannot read image {path}: it is too large to decode safely ({e})"
                         ) from None
    except (OSError, SyntaxError, ValueError) as e:  # SyntaxError: some broken headers
        raise ValueError(f"cannot read image {path}: {e}") from None
    raise ValueError(f"cannot read image {path}: its pixels are 32-bit "
                     f"{'integers' if mode == 'I' else 'floats'} of no fixed range; save it with "
                     f"8- or 16-bit channels")


def decode_all(paths: list[str], size: int, *, threads: int = 8) -> np.ndarray:
    """uint8 `[N, size, size, 3]` of every path (Pillow decodes outside the GIL: threads)."""
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for i, image in enumerate(pool.map(lambda p: decode_resized(p, size), paths)):
            out[i] = image
    return out


def load_dir(root: str, store_size: int) -> sources.DigitSet:
    """The official folder as uint8 `[N, S, S, 3]` train / test arrays and 0-based labels."""
    if not os.path.isdir(root):
        raise ValueError(f"data.source dir:{root}: no such directory")
    index = read_index(root)
    paths = [os.path.join(root, "images", p) for p in index.paths]
    images = decode_all(paths, store_size)
    train, test = index.is_train, ~index.is_train
    if not train.any() or not test.any():
        raise ValueError(f"{root}/train_test_split.txt: needs both training (1) and test (0) "
                         f"images")
    return sources.DigitSet(images[train], index.labels[train], images[test],
                            index.labels[test], f"dir:{root}")


def load_tfds(name: str, store_size: int, *, data_dir: str | None = None) -> sources.DigitSet:
    """A tfds image-classification set (e.g. `caltech_birds2011`) read TF-free through
    `tfds.data_source` (array_record, prepared once), each image resized to `store_size`."""
    import tensorflow_datasets as tfds  # heavy and optional

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        splits = tfds.data_source(name, split=["train", "test"], data_dir=data_dir,
                                  download=False)
    except Exception as e:  # not prepared as array_record
        raise ValueError(f"tfds:{name} is not prepared as array_record under "
                         f"{data_dir or '~/tensorflow_datasets'} ({type(e).__name__}); prepare "
                         f"it once with `tfds build {name} --file_format=array_record` (its "
                         f"builder needs tensorflow and opencv-python) or use dir:PATH with the "
                         f"official CUB_200_2011 folder") from None
    arrays = []
    for split in splits:
        images, labels = [], []
        for i in range(len(split)):
            example = split[i]
            image = Image.fromarray(np.asarray(example["image"])).convert("RGB")
            images.append(np.asarray(image.resize((store_size, store_size), Image.BILINEAR)))
            labels.append(int(example["label"]))
        arrays += [np.stack(images), np.asarray(labels, np.int32)]
    return sources.DigitSet(*arrays, f"tfds:{name}")


# ----------------------------------------------------------------------------- synthetic data

#: Head colours, one per synthetic class (the body colour is shared by pairs of classes, so
#: the head must be seen to tell them apart).
HEAD_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 90, 230), (240, 210, 40), (200, 60, 220),
                (40, 210, 210), (250, 140, 30), (240, 240, 240))


def _synthetic_bird(rng: np.random.Generator, label: int, height: int, width: int) -> Image.Image:
    """A textured background with one "bird": an ellipse body (colour by `label // 2`) and a
    small round head (colour by `label`) on one side, at a random place and size."""
    background = rng.integers(60, 140, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    image = Image.fromarray(background).resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    side = min(height, width)
    body = rng.uniform(0.25, 0.45) * side
    cx, cy = rng.uniform(body, width - body), rng.uniform(body, height - body)
    shade = 90 + 50 * (label // 2 % 3)
    draw.ellipse([cx - body, cy - body * 0.6, cx + body, cy + body * 0.6],
                 fill=(shade, shade // 2, 255 - shade))
    head = 0.35 * body
    hx = cx + (0.9 * body if rng.uniform() < 0.5 else -0.9 * body)
    draw.ellipse([hx - head, cy - body * 0.6 - head, hx + head, cy - body * 0.6 + head],
                 fill=HEAD_COLOURS[label % len(HEAD_COLOURS)])
    return image


def write_miniature(root: str, *, num_classes: int = 4, train_per_class: int = 6,
                    test_per_class: int = 3, seed: int = 0) -> str:
    """Writes a miniature CUB_200_2011 folder under `root` (JPEGs of `_synthetic_bird`, sizes
    varying around 120x100, in `images/<NNN>.<Class>/`) and its three index files; returns root."""
    rng = np.random.default_rng(seed)
    lines = {name: [] for name in INDEX_FILES}
    image_id = 0
    for label in range(num_classes):
        folder = f"{label + 1:03d}.Class_{label + 1}"
        os.makedirs(os.path.join(root, "images", folder), exist_ok=True)
        for k in range(train_per_class + test_per_class):
            image_id += 1
            rel = f"{folder}/bird_{image_id:04d}.jpg"
            height, width = int(rng.integers(90, 130)), int(rng.integers(100, 150))
            _synthetic_bird(rng, label, height, width).save(os.path.join(root, "images", rel),
                                                            quality=90)
            lines["images.txt"].append(f"{image_id} {rel}")
            lines["image_class_labels.txt"].append(f"{image_id} {label + 1}")
            lines["train_test_split.txt"].append(f"{image_id} {int(k < train_per_class)}")
    for name, content in lines.items():
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(content) + "\n")
    return root


# ----------------------------------------------------------------------------- CPU stand-in


def cluttered_objects(items: np.ndarray, labels: np.ndarray, *, canvas: int,
                      scale_range: tuple[float, float], clutter: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Each uint8 `[N, 28, 28]` item resized by a random factor in `scale_range`, pasted at a
    random place on a `canvas x canvas` black image with `clutter` random 8x8 pieces of other
    items: uint8 `[N, canvas, canvas, 3]` (grey as RGB) and the labels
    (`cluttered_objects_with_boxes` without the boxes)."""
    canvases, labels, _ = cluttered_objects_with_boxes(
        items, labels, canvas=canvas, scale_range=scale_range, clutter=clutter, seed=seed)
    return canvases, labels


def cluttered_objects_with_boxes(items: np.ndarray, labels: np.ndarray, *, canvas: int,
                                 scale_range: tuple[float, float], clutter: int, seed: int
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`cluttered_objects` and each item's place: int `[N, 3]` rows `(top, left, side)` in
    pixels (the pasted item covers rows `top..top+side-1`, columns `left..left+side-1`), the
    ground truth the stand-in's boxes are measured against (they are never trained on it)."""
    rng = np.random.default_rng(seed)
    n = len(items)
    out = np.zeros((n, canvas, canvas), np.uint8)
    places = np.zeros((n, 3), np.int64)
    for i in range(n):
        _add_clutter(out[i], items, clutter, rng)
        side = int(round(28 * rng.uniform(*scale_range)))
        side = min(max(side, 4), canvas)
        item = np.asarray(Image.fromarray(items[i]).resize((side, side), Image.BILINEAR))
        ty, tx = rng.integers(0, canvas - side + 1, 2)
        np.maximum(out[i, ty:ty + side, tx:tx + side], item, out=out[i, ty:ty + side, tx:tx + side])
        places[i] = (ty, tx, side)
    return np.repeat(out[..., None], 3, axis=-1), np.asarray(labels, np.int32), places


def centred_items(items: np.ndarray, *, canvas: int, side_range: tuple[int, int],
                  jitter: int, seed: int, clutter: int = 0) -> np.ndarray:
    """The stand-in's "ImageNet": each uint8 `[N, 28, 28]` item resized to a random side in
    `side_range` (pixels, inclusive) and pasted near the centre (a random shift of at most
    `jitter` pixels each way) of a black `canvas x canvas` image, with `clutter` random 8x8
    pieces of other items at random places (as `cluttered_objects` draws them; 0: none):
    uint8 `[N, canvas, canvas]` (grey; the batches repeat it as RGB)."""
    low, high = int(side_range[0]), min(int(side_range[1]), canvas)
    if not 1 <= low <= high:
        raise ValueError(f"item sides {side_range} must satisfy 1 <= low <= high (canvas "
                         f"{canvas})")
    rng = np.random.default_rng(seed)
    out = np.zeros((len(items), canvas, canvas), np.uint8)
    for i, item in enumerate(items):
        side = int(rng.integers(low, high + 1))
        pasted = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
        room = canvas - side
        ty, tx = np.clip(room // 2 + rng.integers(-jitter, jitter + 1, 2), 0, room)
        out[i, ty:ty + side, tx:tx + side] = pasted
        _add_clutter(out[i], items, clutter, rng)
    return out


def _add_clutter(image: np.ndarray, items: np.ndarray, pieces: int,
                 rng: np.random.Generator) -> None:
    """Pastes (by maximum) `pieces` random 8x8 pieces of random `items` at random places of
    the uint8 `[S, S]` `image`, in place."""
    size = image.shape[0]
    for _ in range(pieces):
        src = items[rng.integers(len(items))]
        y, x = rng.integers(0, 28 - 8, 2)
        ty, tx = rng.integers(0, size - 8, 2)
        np.maximum(image[ty:ty + 8, tx:tx + 8], src[y:y + 8, x:x + 8],
                   out=image[ty:ty + 8, tx:tx + 8])


# ----------------------------------------------------------------------------- batches


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[N, S, S, C]` -> float32 `[N, size, size, C]` in [0, 1], the centre crop."""
    s = images.shape[1]
    if size > s:
        raise ValueError(f"crop size {size} exceeds the stored images' {s}x{s}")
    top = (s - size) // 2
    return images[:, top:top + size, top:top + size].astype(np.float32) / 255.0


def train_batch(images: jax.Array, labels: jax.Array, seed, step, *, batch_size: int,
                size: int, flip: bool = True) -> dict[str, jax.Array]:
    """The training batch of `step`: a random `size x size` crop of each stored image, flipped
    left-right with probability 1/2 (if `flip`), float32 in [0, 1]; pure in `(seed, step)`."""
    index = pipeline.batch_indices(images.shape[0], seed, step, batch_size, stream=_ORDER)
    base = jax.random.fold_in(jax.random.key(seed), step)
    limit = images.shape[1] - size
    corners = jax.random.randint(jax.random.fold_in(base, _CROP), (batch_size, 2), 0, limit + 1)
    chosen = images[index]

    def crop(image, corner):
        return jax.lax.dynamic_slice(image, (corner[0], corner[1], 0),
                                     (size, size, image.shape[-1]))

    crops = jax.vmap(crop)(chosen, corners).astype(jnp.float32) / 255.0
    if flip:
        flips = jax.random.bernoulli(jax.random.fold_in(base, _FLIP), 0.5, (batch_size,))
        crops = jnp.where(flips[:, None, None, None], crops[:, :, ::-1], crops)
    return {"image": crops, "label": labels[index].astype(jnp.int32)}
