"""Task `addition`: MNIST addition (paper appendix A.1), the sum of two digits in two channels.

Config fields read here (configs/mnist_addition.py): `data.source`, `data.distortion` (each
digit's, default `rts`), `data.validation_size` (training digits held out, 0 = none),
`data.validation_seed`, `data.test_seed`; `model.name` (`stn.experiments.models.addition.MODEL_NAMES`),
`model.transform`, `model.kernel`, `model.padding`, `model.antialias`, `model.st_output_size`;
`train.batch_size`. Loss and error are the classification ones over the 19 sums.
"""
from __future__ import annotations

import functools

from stn.experiments import pictures
from stn import transforms
from stn.experiments.data import addition, distortions, external, pipeline, sources
from stn.experiments.models import addition as models
from stn.experiments.tasks import Data, Task, classification


def validate_config(config) -> None:
    """One-line ValueErrors for the model and data fields of an addition config."""
    model = config.model.name
    if model not in models.MODEL_NAMES:
        raise ValueError(f"config.model.name={model!r} is unknown for task 'addition'; set it "
                         f"to one of {', '.join(models.MODEL_NAMES)}")
    if models.transformer_count(model) and config.model.transform not in transforms.NAMES:
        raise ValueError(f"config.model.transform={config.model.transform!r} is unknown; set it "
                         f"to one of {', '.join(transforms.NAMES)}")
    if int(config.model.get("st_output_size", 0)) < 0:
        raise ValueError(f"config.model.st_output_size={config.model.st_output_size} must be "
                         f">= 0 (0: the input's size)")
    classification.validate_sampler_and_digits(config)


def input_shape(config) -> tuple[int, int, int]:
    """`(S, S, 2)`: the distortion's canvas, one channel per digit."""
    size = int(distortions.get(config.data.distortion).canvas_size)
    return (size, size, addition.CHANNELS)


def _test_set(digits, config) -> dict:
    return addition.test_set(digits, config.data.distortion,
                             seed=int(config.data.get("test_seed", 0)))


def load_data(config) -> Data:
    """Training digits (minus the validation split), the pair batch maker, the fixed sets."""
    digits = sources.load_digits(config.data.source)
    size = int(config.data.get("validation_size", 0))
    digits, held_images, held_labels = pipeline.split_validation(
        digits, size, seed=int(config.data.get("validation_seed", 0)),
        field="config.data.validation_size")
    validation = (addition.validation_set(held_images, held_labels, config.data.distortion,
                                          seed=int(config.data.get("test_seed", 0)))
                  if size else None)
    batch = functools.partial(addition.train_batch, batch_size=int(config.train.batch_size),
                              distortion=config.data.distortion)
    return Data(train_arrays=(digits.train_images, digits.train_labels),
                train_batch=lambda arrays, seed, step: batch(*arrays, seed, step),
                validation=validation, test=_test_set(digits, config),
                input_shape=input_shape(config))


def make_model(config, shape, rngs):
    """The configured FCN / CNN / ST-FCN / ST-CNN / 2xST-FCN / 2xST-CNN."""
    return models.create(config.model.name, shape, transform=config.model.transform,
                         st_output_size=int(config.model.get("st_output_size", 0)),
                         kernel=config.model.get("kernel", "bilinear"),
                         padding=config.model.get("padding", "zeros"),
                         antialias=config.model.get("antialias", False), rngs=rngs)


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test`, `validation`, or `npz:FILE` holding `image` `[N, S, S, 2]` (uint8, or float in
    [0, 1], the model's input size) and `label` `[N]` sums in 0..18."""
    if spec == "test":
        return _test_set(sources.load_digits(config.data.source), config), spec
    if spec == "validation":
        return load_data(config).require_validation(), spec
    if not spec.startswith("npz:"):
        raise ValueError(f"--data must be 'test', 'validation' or 'npz:FILE' for task "
                         f"'addition', got {spec!r}")
    loaded = external.load(spec, num_classes=addition.NUM_CLASSES)
    shape = input_shape(config)
    if loaded.images.shape[1:] != shape:
        raise ValueError(f"{spec[4:]}: 'image' must be [N, {', '.join(map(str, shape))}] (two "
                         f"digits, one per channel, on the model's canvas), got "
                         f"{list(loaded.images.shape)}")
    return {"image": loaded.images, "label": loaded.labels}, loaded.tag


def draw(batch: dict, grids: list, outputs: list):
    """Each input channel with every transformer's outline, then each transformer's output
    channels: a reader sees each transformer take one digit (`pictures.channel_panels_image`)."""
    return pictures.channel_panels_image(batch["image"], outputs, grids)


TASK = Task(name="addition", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=classification.loss,
            metrics=classification.metrics, load_eval_set=load_eval_set, draw=draw,
            steps_caption="The same test examples at each step on the left (step 0: before "
                          "training). Each: the input's channels with every transformer's "
                          "outline, then each transformer's output channels.")
