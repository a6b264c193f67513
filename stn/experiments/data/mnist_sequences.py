"""`mnist_sequences`: an offline stand-in for SVHN multi-digit, made on device from real digits.

Each example lays 1 to 5 digits from any base digit source (`stn.experiments.data.sources.load_digits`)
along a line on a black `S x S` canvas (S = 64 by default, or 128), with a random length
(uniform in 1..5), digit scale, line angle, spacing and position; the label is the digit
sequence padded with the blank class 10 (`stn.experiments.data.svhn_multidigit.crops.BLANK`) to 5, the
same label format as the SVHN builder, so the same model, loss and sequence error apply.

Every digit is placed with a layer-1 affine grid (`stn.transforms`, paper eq. 1) and the one
bilinear sampler (`stn.sampling`), exactly as the distorted-MNIST sets are
(`stn.experiments.data.distortions.placement_theta`); digits are combined with a pixelwise max.

The recipe (pixels; `d = 28 * scale` is a placed digit's box size):

| draw | distribution |
| --- | --- |
| length n | uniform in {1, ..., 5} |
| spacing | centre-to-centre step `spacing * d`, spacing uniform in [0.55, 0.8] |
| angle | line and digits rotated together, uniform in [-20, 20] degrees |
| scale | `U[0.7, 1.0] * min(S / 45, fit)`, `fit` the scale at which the whole line spans 90% of S |
| position | the line's centre uniform such that its rotated bounding box stays on the canvas |

Everything is a pure function of `(images, labels, seed, step)`: `train_batch` is jittable
and deterministic from the config seed and the step, like `stn.experiments.data.pipeline.train_batch`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stn import sampling, transforms
from stn.experiments.data import distortions
from stn.experiments.data.sources import DigitSet

MAX_DIGITS = 5
BLANK = 10  # same as stn.experiments.data.svhn_multidigit.crops.BLANK (kept here to stay tfds-free)
DIGIT_SIZE = 28
SPACING = (0.55, 0.8)
ANGLE_DEG = (-20.0, 20.0)
SCALE_JITTER = (0.7, 1.0)
Params = dict  # name -> [B, ...] array


def sample_params(key: jax.Array, batch: int, canvas_size: int = 64,
                  max_digits: int = MAX_DIGITS) -> Params:
    """The random layout of `batch` sequences (see the module table): lengths, angles, ...

    Returns a dict of `[B]` arrays `length` (int32), `angle`, `scale`, `spacing` and `centre`
    `[B, 2]` (pixels from the canvas centre).
    """
    k_len, k_space, k_angle, k_scale, k_pos = jax.random.split(key, 5)
    length = jax.random.randint(k_len, (batch,), 1, max_digits + 1)
    spacing = jax.random.uniform(k_space, (batch,), minval=SPACING[0], maxval=SPACING[1])
    angle = jax.random.uniform(k_angle, (batch,), minval=ANGLE_DEG[0], maxval=ANGLE_DEG[1])
    span_in_digits = 1.0 + spacing * (length - 1)  # line length in units of d
    fit = 0.9 * canvas_size / (DIGIT_SIZE * span_in_digits)
    scale = jax.random.uniform(k_scale, (batch,), minval=SCALE_JITTER[0],
                               maxval=SCALE_JITTER[1]) * jnp.minimum(canvas_size / 45.0, fit)
    half_along = DIGIT_SIZE * scale * span_in_digits / 2
    half_across = DIGIT_SIZE * scale / 2
    c, s = jnp.abs(jnp.cos(jnp.deg2rad(angle))), jnp.abs(jnp.sin(jnp.deg2rad(angle)))
    half_box = jnp.stack([c * half_along + s * half_across, s * half_along + c * half_across], -1)
    room = jnp.maximum(canvas_size / 2.0 - half_box, 0.0)
    centre = jax.random.uniform(k_pos, (batch, 2), minval=-1.0, maxval=1.0) * room
    return {"length": length.astype(jnp.int32), "angle": angle, "scale": scale,
            "spacing": spacing, "centre": centre}


def digit_shifts(params: Params, max_digits: int = MAX_DIGITS) -> jax.Array:
    """`[B, max_digits, 2]` canvas positions (pixels from the centre) of each digit slot.

    Slot i sits `(i - (n - 1) / 2) * spacing * d` along the line direction `F(angle) (1, 0)`.
    """
    step = params["spacing"] * DIGIT_SIZE * params["scale"]  # [B]
    offset = jnp.arange(max_digits)[None, :] - (params["length"][:, None] - 1) / 2.0
    along = offset * step[:, None]  # [B, L]
    direction = distortions.rotation(params["angle"])[:, :, 0]  # F(angle) (1, 0)^T, [B, 2]
    return params["centre"][:, None, :] + along[..., None] * direction[:, None, :]


def render(digits: jax.Array, params: Params, canvas_size: int = 64) -> jax.Array:
    """Draws float `[B, L, 28, 28, 1]` digits at their slots -> `[B, S, S, 1]` in [0, 1].

    Slots at or after a sequence's length are left out; overlapping ink combines by max.
    """
    batch, slots = digits.shape[:2]
    shifts = digit_shifts(params, slots).reshape(batch * slots, 2)
    repeat = lambda x: jnp.repeat(x, slots, axis=0)  # noqa: E731  [B] -> [B*L]
    theta = distortions.placement_theta(repeat(params["angle"]), repeat(params["scale"]),
                                        shifts, canvas_size)
    grid = transforms.get("affine").grid(theta, canvas_size, canvas_size)
    placed = sampling.sample(digits.reshape(batch * slots, DIGIT_SIZE, DIGIT_SIZE, 1), grid,
                             kernel="bilinear", padding="zeros", align_corners=False)
    placed = jnp.clip(placed, 0.0, 1.0)  # bilinear weights sum to <= 1: only round-off
    placed = placed.reshape(batch, slots, canvas_size, canvas_size, 1)
    present = jnp.arange(slots)[None, :] < params["length"][:, None]  # [B, L]
    return jnp.max(jnp.where(present[..., None, None, None], placed, 0.0), axis=1)


def padded_labels(digit_labels: jax.Array, length: jax.Array) -> jax.Array:
    """`[B, L]` digit labels and `[B]` lengths -> int32 `[B, L]`, BLANK after each length."""
    slots = jnp.arange(digit_labels.shape[1])[None, :]
    return jnp.where(slots < length[:, None], digit_labels, BLANK).astype(jnp.int32)


def make_batch(images: jax.Array, labels: jax.Array, key: jax.Array, *, batch_size: int,
               canvas_size: int = 64, max_digits: int = MAX_DIGITS) -> dict:
    """One batch from base digits: uint8 `[N, 28, 28]` (or float `[N, 28, 28, 1]` in [0, 1]).

    Returns `{"image": f32 [B, S, S, 1], "label": int32 [B, max_digits]}`.
    """
    images = jnp.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE, 1):
        raise ValueError(f"mnist_sequences: expected base digits [N, 28, 28] (or [N, 28, 28, 1]), "
                         f"got shape {images.shape}")
    if images.dtype == jnp.uint8:
        images = images.astype(jnp.float32) / 255.0
    k_pick, k_layout = jax.random.split(key)
    index = jax.random.randint(k_pick, (batch_size, max_digits), 0, images.shape[0])
    params = sample_params(k_layout, batch_size, canvas_size, max_digits)
    canvas = render(images[index], params, canvas_size)
    return {"image": canvas, "label": padded_labels(jnp.asarray(labels)[index], params["length"])}


def batch_key(seed: int, step) -> jax.Array:
    """The key of training batch `step` for config seed `seed`: `fold_in(PRNGKey(seed), step)`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), step)


def train_batch(images: jax.Array, labels: jax.Array, seed: int, step, *, batch_size: int,
                canvas_size: int = 64, max_digits: int = MAX_DIGITS) -> dict:
    """Training batch number `step`: pure and jittable (`batch_size`, `canvas_size` static)."""
    return make_batch(images, labels, batch_key(seed, step), batch_size=batch_size,
                      canvas_size=canvas_size, max_digits=max_digits)


def fixed_set(images: np.ndarray, labels: np.ndarray, key: jax.Array, *, num_examples: int,
              canvas_size: int = 64, chunk: int = 1000) -> dict:
    """`num_examples` sequences of the base digits `images`, made once from `key` (numpy).

    Chunk `i` of `chunk` sequences uses `fold_in(key, i)`, so the set is fixed by the key.
    """
    make = jax.jit(make_batch, static_argnames=("batch_size", "canvas_size", "max_digits"))
    out_images, out_labels = [], []
    for i, start in enumerate(range(0, num_examples, chunk)):
        batch = make(images, labels, jax.random.fold_in(key, i),
                     batch_size=min(chunk, num_examples - start), canvas_size=canvas_size)
        out_images.append(np.asarray(batch["image"]))
        out_labels.append(np.asarray(batch["label"]))
    return {"image": np.concatenate(out_images), "label": np.concatenate(out_labels)}


def test_set(digits: DigitSet, *, canvas_size: int = 64, num_examples: int | None = None,
             seed: int = 0, chunk: int = 1000) -> dict:
    """The fixed test set (numpy), built from the base set's test digits only.

    `num_examples` defaults to the number of base test digits.
    """
    n = len(digits.test_images) if num_examples is None else int(num_examples)
    key = jax.random.PRNGKey(seed + 1_000_003)  # apart from the training keys
    return fixed_set(digits.test_images, digits.test_labels, key, num_examples=n,
                     canvas_size=canvas_size, chunk=chunk)


test_set.__test__ = False  # not a pytest test, despite its name


def validation_set(images: np.ndarray, labels: np.ndarray, *, num_examples: int,
                   canvas_size: int = 64, seed: int = 0) -> dict:
    """The fixed validation sequences, made from held-out training digits (`images`) only."""
    key = jax.random.PRNGKey(seed + 2_000_003)  # apart from the training and test keys
    return fixed_set(images, labels, key, num_examples=num_examples, canvas_size=canvas_size)
