"""Task `classification`: distorted MNIST (paper section 4.1, Table 1), any 28x28 digit source.

Config fields read here (configs/mnist.py): `data.source`, `data.distortion`,
`data.validation_size` (training digits held out, 0 = none), `data.validation_seed`,
`data.test_seed`; `model.name`, `model.transform`, `model.kernel`, `model.padding`,
`model.antialias`, `model.st_output_size`; `train.batch_size`.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import optax
from flax import nnx

from stn import sampling, transforms
from stn.experiments.data import arrays, distortions, external, pipeline, sources
from stn.experiments.models import mnist
from stn.experiments.tasks import Data, Task

NUM_CLASSES = 10


def validate_antialias(config) -> None:
    """One-line ValueErrors for `model.antialias` (a bool; antialiased sampling stretches the
    kernel, so not with `model.kernel="nearest"`)."""
    antialias = config.model.get("antialias", False)
    if not isinstance(antialias, bool):
        raise ValueError(f"config.model.antialias={antialias!r} must be true or false")
    if antialias and config.model.get("kernel", "bilinear") == "nearest":
        raise ValueError("config.model.antialias=true needs a kernel with a width; set "
                         "config.model.kernel to bilinear or bicubic (nearest has none)")


def validate_sampler_and_digits(config) -> None:
    """One-line ValueErrors for the fields every distorted-digit task shares: the sampler's
    `model.kernel`, `model.padding` and `model.antialias`, `data.distortion`, `data.source`,
    `data.validation_size`."""
    for field, allowed in (("kernel", sampling.KERNELS), ("padding", sampling.PADDINGS)):
        if config.model.get(field, allowed[0]) not in allowed:
            raise ValueError(f"config.model.{field}={config.model[field]!r} is unknown; set it "
                             f"to one of {', '.join(allowed)}")
    validate_antialias(config)
    if config.data.distortion not in distortions.NAMES:
        raise ValueError(f"config.data.distortion={config.data.distortion!r} is unknown; set it "
                         f"to one of {', '.join(distortions.NAMES)}")
    sources.check_source(config.data.source, field="config.data.source")
    if int(config.data.get("validation_size", 0)) < 0:
        raise ValueError(f"config.data.validation_size={config.data.validation_size} must be "
                         f">= 0 (0: no validation split)")


def validate_config(config) -> None:
    """One-line ValueErrors for the model and data fields of a classification config."""
    model = config.model.name
    if model not in mnist.MODEL_NAMES:
        raise ValueError(f"config.model.name={model!r} is unknown; set it to one of "
                         f"{', '.join(mnist.MODEL_NAMES)}")
    if model.startswith("st_") and config.model.transform not in transforms.names(2):
        raise ValueError(f"config.model.transform={config.model.transform!r} is unknown; set it "
                         f"to one of {', '.join(transforms.names(2))}")
    validate_sampler_and_digits(config)
    try:  # builds nothing: shapes only, so a network too big for its input fails here
        nnx.eval_shape(lambda: make_model(config, input_shape(config), nnx.Rngs(0)))
    except ValueError as e:
        raise ValueError(f"config.model ({config.model.name}, st_output_size="
                         f"{config.model.get('st_output_size', 0)}, st_pool="
                         f"{config.model.get('st_pool', 1)}) on {config.data.distortion} "
                         f"inputs: {e}") from None


def input_shape(config) -> tuple[int, int, int]:
    """`(S, S, 1)`: the distortion's canvas."""
    size = int(distortions.get(config.data.distortion).canvas_size)
    return (size, size, 1)


def load_data(config) -> Data:
    """Training digits (minus the validation split), their batch maker, and the fixed sets."""
    digits = sources.load_digits(config.data.source)
    distortion = distortions.get(config.data.distortion)
    size = int(config.data.get("validation_size", 0))
    digits, held_images, held_labels = pipeline.split_validation(
        digits, size, seed=int(config.data.get("validation_seed", 0)),
        field="config.data.validation_size")
    validation = (pipeline.validation_set(held_images, held_labels, distortion,
                                          seed=int(config.data.get("test_seed", 0)))
                  if size else None)
    batch = functools.partial(pipeline.train_batch, batch_size=int(config.train.batch_size),
                              distortion=distortion)
    return Data(
        train_arrays=(digits.train_images, digits.train_labels),
        train_batch=lambda arrays, seed, step: batch(*arrays, seed, step),
        validation=validation,
        test=_test_set(digits, config),
        input_shape=input_shape(config))


def _test_set(digits, config) -> dict:
    """The fixed distorted test set of the config's distortion and test seed."""
    return pipeline.test_set(digits, config.data.distortion,
                             seed=int(config.data.get("test_seed", 0)))


def make_model(config, shape, rngs):
    """The configured FCN / CNN / ST-FCN / ST-CNN (`stn.experiments.models.mnist`)."""
    return mnist.get_model(config.model, shape[:2], rngs, channels=shape[2])


def loss(logits: jax.Array, batch: dict) -> jax.Array:
    """Per-example softmax cross-entropy `[B]` of logits `[B, K]` and integer labels `[B]`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])


def metrics(logits: jax.Array, batch: dict) -> dict[str, jax.Array]:
    """`error`: 1 where the arg-max class is not the label, `[B]`."""
    return {"error": (jax.numpy.argmax(logits, axis=-1) != batch["label"]).astype(np.float32)}


def centre_on_canvas(images: np.ndarray, size: int, channels: int = 1) -> np.ndarray:
    """uint8 (or float in [0, 1]) `[N,H,W]` or `[N,H,W,C]` -> float32 `[N,S,S,C]` in [0, 1],
    centred on zeros.

    Raises ValueError for images larger than the model's input, with the wrong channels, or of
    another kind (`stn.experiments.data.arrays.check_images`).
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N,H,W] or [N,H,W,C], got shape {images.shape}")
    if images.shape[-1] != channels:
        raise ValueError(f"images have {images.shape[-1]} channels; the model expects {channels}")
    images = arrays.check_images(images, what="images")
    n, h, w, c = images.shape
    if h > size or w > size:
        raise ValueError(f"images are {h}x{w}, larger than the model's {size}x{size} input; "
                         f"crop or resize them to at most {size}x{size}")
    canvas = np.zeros((n, size, size, c), np.float32)
    top, left = (size - h) // 2, (size - w) // 2
    canvas[:, top:top + h, left:left + w] = images
    return canvas


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test`, `validation`, `idx:DIR` (its test split, undistorted) or `npz:FILE` (`image`
    `[N,H,W(,1)]` uint8 or float in [0, 1], `label` `[N]`); external images are used as given,
    centred on a black canvas of the model's input size."""
    if spec == "test":  # the test set does not depend on the validation split
        return _test_set(sources.load_digits(config.data.source), config), spec
    if spec == "validation":
        return load_data(config).require_validation(), spec
    if not spec.startswith(("idx:", "npz:")):
        raise ValueError(f"--data must be 'test', 'validation', 'idx:DIR' or 'npz:FILE', got "
                         f"{spec!r}")
    loaded = external.load(spec, num_classes=NUM_CLASSES)
    return {"image": centre_on_canvas(loaded.images, input_shape(config)[0]),
            "label": loaded.labels}, loaded.tag

TASK = Task(name="classification", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=loss, metrics=metrics,
            load_eval_set=load_eval_set)
