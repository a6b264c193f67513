"""Task `colocalisation`: co-localisation of one digit class (paper appendix A.2), no labels.

Config fields read here (configs/colocalisation.py): `data.source`, `data.digit_class`,
`data.clutter` (6x6 distractor patches per image: 0 for T, 16 for TC), `data.num_train` (the
images optimised on; the paper's 100), `data.validation_size` and `data.validation_seed`
(training digits held out, all classes), `data.test_seed` (seed of the fixed sets);
`model.crop_size`, `model.kernel`, `model.antialias`, `model.margin` (alpha), `model.initial_scale`,
`model.descriptor`, `model.min_scale`, `model.max_scale`, `model.translation` (how far the box's
centre may move: "inside" or "free", `stn.experiments.models.colocalisation.inside_attention`),
`model.patch_scale` (half-side of the random patches `I_n^rand`, 0: the
crop's own), `model.embedding.*` (the recipe of the fixed embedding CNN's own run:
`distortion`, `steps`, `batch_size`, `learning_rate`, `momentum`, `seed`; `workdir`, a finished
run of it, or "" for the cache under `cache_dir`); `train.batch_size`.

The embedding is the section-4.1 CNN (`stn.experiments.models.mnist.CNN`) trained on digit
classification by an ordinary run of `embedding_config(config)` (`configs/colocalisation.py:
embedding`, task `classification`), then frozen. A fresh run loads it from that run's final
checkpoint (`init_weights`, `stn.experiments.embedding_cache`: the run named by
`model.embedding.workdir`, or the cached one, trained once by the first run that asks); the
run's own checkpoints hold it from then on, so `eval.py` and a resumed run read no other run.
Loss: the appendix's triplet hinge loss (`stn.experiments.models.colocalisation`). Metrics:
`error`, the fraction of images whose predicted box has IoU <= 0.5 with the true box; `localised` = 1 - error (the paper's success,
IoU > 0.5); `iou`; and a baseline, a fixed box of the digit's size at the centre
(`centre_box_error`, `centre_box_localised`, `centre_box_iou`); and `centre_correlation` (with
`_x`, `_y`), Pearson's correlation of the predicted and true box centres over the set, x and y
pooled (`set_metrics`, from per-example moments). The trainer scores them on the optimised
images too (`Data.optimised`: `train_localised`, the paper's headline, and
`train_centre_correlation`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from stn import boxes, layers, sampling, transforms
from stn.experiments import config_args, embedding_cache, pictures
from stn.experiments.data import colocalisation, distortions, sources
from stn.experiments.models import colocalisation as models
from stn.experiments.models import mnist
from stn.experiments.tasks import Data, Task, classification

MODEL_NAMES = ("colocaliser",)
EVAL_SETS = ("test", "validation", "train")


def validate_config(config) -> None:
    """One-line ValueErrors for the model, embedding and data fields of the config."""
    if config.model.name not in MODEL_NAMES:
        raise ValueError(f"config.model.name={config.model.name!r} is unknown for task "
                         f"'colocalisation'; set it to one of {', '.join(MODEL_NAMES)}")
    if config.model.get("kernel", "bilinear") not in sampling.KERNELS:
        raise ValueError(f"config.model.kernel={config.model.kernel!r} is unknown; set it to "
                         f"one of {', '.join(sampling.KERNELS)}")
    classification.validate_antialias(config)
    if not 0 <= int(config.data.digit_class) <= 9:
        raise ValueError(f"config.data.digit_class={config.data.digit_class} must be in 0..9")
    if int(config.data.clutter) < 0:
        raise ValueError(f"config.data.clutter={config.data.clutter} must be >= 0 (0: T, 16: TC)")
    if int(config.data.num_train) < 2 or int(config.train.batch_size) > int(config.data.num_train):
        raise ValueError(f"config.data.num_train={config.data.num_train} must be at least 2 and "
                         f"at least config.train.batch_size={config.train.batch_size}")
    if int(config.train.batch_size) < 2:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} must be at least 2 "
                         f"(the triplet loss pairs the images of a batch)")
    if config.model.descriptor not in models.DESCRIPTORS:
        raise ValueError(f"config.model.descriptor={config.model.descriptor!r} is unknown; set "
                         f"it to one of {', '.join(models.DESCRIPTORS)}")
    translation = config.model.get("translation", "inside")
    if translation not in models.TRANSLATIONS:
        raise ValueError(f"config.model.translation={translation!r} is unknown; set it to one "
                         f"of {', '.join(models.TRANSLATIONS)}")
    low, high = float(config.model.min_scale), float(config.model.max_scale)
    if not (0 <= low < high <= 1):
        raise ValueError(f"config.model.min_scale={low} and max_scale={high} must satisfy "
                         f"0 <= min_scale < max_scale <= 1 (min_scale 0: no bound)")
    if low and not low < float(config.model.initial_scale) < high:
        raise ValueError(f"config.model.initial_scale={config.model.initial_scale} must lie in "
                         f"(min_scale, max_scale) = ({low}, {high}) when the crop is kept inside "
                         f"the image")
    if not all(int(w) > 0 for w in config.model.loc_hidden):
        raise ValueError(f"config.model.loc_hidden={tuple(config.model.loc_hidden)} must be "
                         f"positive widths")
    if not 0 <= float(config.model.patch_scale) <= 1:
        raise ValueError(f"config.model.patch_scale={config.model.patch_scale} must be in "
                         f"[0, 1] (0: the crop's own size)")
    if int(config.data.get("validation_size", 0)) < 0:
        raise ValueError(f"config.data.validation_size={config.data.validation_size} must be "
                         f">= 0 (0: no validation split)")
    sources.check_source(config.data.source, field="config.data.source")
    embedding = config.model.embedding
    if embedding.distortion not in distortions.NAMES:
        raise ValueError(f"config.model.embedding.distortion={embedding.distortion!r} is "
                         f"unknown; set it to one of {', '.join(distortions.NAMES)}")
    canvas = distortions.get(embedding.distortion).canvas_size
    if not 0 < int(config.model.crop_size) <= canvas:
        raise ValueError(f"config.model.crop_size={config.model.crop_size} must be in "
                         f"1..{canvas}: at most the embedding CNN's input, the "
                         f"{embedding.distortion!r} canvas")
    for key in ("steps", "batch_size", "learning_rate"):
        if not float(embedding[key]) > 0:
            raise ValueError(f"config.model.embedding.{key}={embedding[key]} must be positive")
    if float(config.train.get("weight_decay", 0.0)) != 0.0:
        raise ValueError(f"config.train.weight_decay={config.train.weight_decay} must be 0: the "
                         f"embedding CNN is fixed, and decay would shrink it")


def input_shape(config) -> tuple[int, int, int]:
    """`(84, 84, 1)`."""
    return (colocalisation.CANVAS, colocalisation.CANVAS, 1)


def _datasets(config) -> dict[str, dict[str, np.ndarray]]:
    return colocalisation.datasets(
        sources.load_digits(config.data.source), digit_class=int(config.data.digit_class),
        num_train=int(config.data.num_train),
        validation_size=int(config.data.get("validation_size", 0)),
        validation_seed=int(config.data.get("validation_seed", 0)),
        clutter=int(config.data.clutter), seed=int(config.data.get("test_seed", 0)))


def load_data(config) -> Data:
    """The fixed training images of one class, their batch maker, the fixed sets; the
    training images are also the `optimised` set, scored at the end as `train_*` (the paper's
    measure: `train_localised`, the fraction of them with IoU > 0.5) and drawn at every
    evaluation (the same images each time, as in the paper's Figure 4)."""
    sets = _datasets(config)
    batch = functools.partial(colocalisation.train_batch, batch_size=int(config.train.batch_size))
    return Data(train_arrays=(sets["train"]["image"], sets["train"]["box"]),
                train_batch=lambda arrays, seed, step: batch(*arrays, seed, step),
                validation=sets["validation"] if int(config.data.validation_size) else None,
                test=sets["test"], input_shape=input_shape(config), optimised=sets["train"])


def embedding_config(config) -> ml_collections.ConfigDict:
    """The config of the run that trains the embedding CNN (`configs/colocalisation.py:
    embedding`): task `classification`, the section-4.1 CNN on the digits of `data.source` left
    after the co-localisation config's validation split (which it must not see), distorted by
    `model.embedding.distortion`; SGD with momentum, cross-entropy, no decay, for
    `model.embedding.steps` steps of `batch_size` at `learning_rate` with `momentum`, seeded
    (initialisation, batch order and test set) by `model.embedding.seed`."""
    e, d = config.model.embedding, config.data
    c = ml_collections.ConfigDict()
    c.name = f"coloc_embedding_{e.distortion}"
    c.task = "classification"
    c.seed = int(e.seed)
    c.distributed = bool(config.get("distributed", False))
    c.data = ml_collections.ConfigDict(dict(
        source=str(d.source), distortion=str(e.distortion),
        validation_size=int(d.get("validation_size", 0)),
        validation_seed=int(d.get("validation_seed", 0)), test_seed=int(e.seed)))
    c.model = ml_collections.ConfigDict(dict(
        name="cnn", transform="affine", kernel="bilinear", antialias=False, padding="zeros",
        st_output_size=0, st_pool=1, loc_lr_multiplier=1.0))
    steps = int(e.steps)
    c.train, c.eval = config_args.run_sections(  # a constant rate: decay by a factor of 1
        steps=steps, batch_size=int(e.batch_size), learning_rate=float(e.learning_rate),
        momentum=float(e.momentum), lr_decay_every=100_000, lr_decay_factor=1.0,
        log_every=max(1, steps // 6), eval_every=steps, checkpoint_every=max(1, steps // 3),
        num_images=0, eval_batch_size=1000)
    return c


def _embedding_cnn(distortion: str, seed: int) -> mnist.CNN:
    canvas = distortions.get(distortion).canvas_size
    return mnist.CNN((canvas, canvas, 1), rngs=nnx.Rngs(params=seed))


def make_model(config, shape, rngs):
    """The co-localiser around a frozen embedding CNN at its initialisation (`init_weights`
    loads the trained one into a fresh run; a checkpoint holds it)."""
    embedding = config.model.embedding
    canvas = distortions.get(embedding.distortion).canvas_size
    cnn = _embedding_cnn(embedding.distortion, int(embedding.get("seed", 0)))
    return models.CoLocaliser(shape, cnn, crop_size=int(config.model.crop_size),
                              embedding_size=canvas,
                              kernel=config.model.get("kernel", "bilinear"),
                              antialias=config.model.get("antialias", False),
                              margin=float(config.model.margin),
                              initial_scale=float(config.model.initial_scale),
                              descriptor=config.model.descriptor,
                              patch_scale=float(config.model.patch_scale),
                              min_scale=float(config.model.min_scale),
                              max_scale=float(config.model.max_scale),
                              translation=config.model.get("translation", "inside"),
                              loc_hidden=tuple(int(w) for w in config.model.loc_hidden),
                              rngs=rngs)


def init_weights(config, model: models.CoLocaliser) -> None:
    """Loads the trained embedding CNN into `model` (frozen, in place): the final checkpoint of
    the run of `embedding_config(config)` in `model.embedding.workdir`, or ("") the cached run
    of it (`stn.experiments.embedding_cache`, trained once under `model.embedding.cache_dir`)."""
    embedding = config.model.embedding
    trained, record = embedding_cache.pretrained_model(
        embedding_config(config), workdir=str(embedding.get("workdir", "")),
        cache_dir=str(embedding.get("cache_dir", "")), kind="embeddings",
        field="config.model.embedding.workdir")
    nnx.update(model.embedding, nnx.state(layers.freeze(trained)))
    print(f"embedding CNN from {record['workdir']} ({100 * record['test_error']:.2f}% test "
          f"error)", flush=True)


def forward(model, batch: dict) -> dict:
    """The crop's and the random patch's descriptors, the box, and the model's margin."""
    return model(batch["image"], batch["rand_pos"])


def loss(outputs: dict, batch: dict) -> jax.Array:
    """The appendix's triplet hinge loss over the pairs of the batch, `[B]`."""
    del batch  # no label and no box: co-localisation is trained without either
    return models.colocalisation_loss(outputs)


MOMENT = "centre_moment_"  # per-example products whose means set_metrics turns into correlations


def _centre_moments(predicted: jax.Array, true: jax.Array) -> dict[str, jax.Array]:
    """Per example, for each axis a of the box centres (p predicted, q true): p_a, q_a, p_a^2,
    q_a^2 and p_a q_a, named `centre_moment_<a>_<p|q|pp|qq|pq>`."""
    p = boxes.box_attention(predicted)[:, 1:]  # (t_x, t_y): the box's centre
    q = boxes.box_attention(true)[:, 1:]
    values = {}
    for index, axis in enumerate("xy"):
        a, b = p[:, index], q[:, index]
        values.update({f"{MOMENT}{axis}_p": a, f"{MOMENT}{axis}_q": b,
                       f"{MOMENT}{axis}_pp": a * a, f"{MOMENT}{axis}_qq": b * b,
                       f"{MOMENT}{axis}_pq": a * b})
    return values


def _axis_spread(mean_p, mean_q, mean_pp, mean_qq, mean_pq) -> tuple[float, float, float] | None:
    """One axis's (covariance of p and q, variance of p, variance of q) from the means of p, q,
    p^2, q^2 and pq; None where either has (nearly) no spread: a variance under 1e-4 of its mean
    square, which float32 sums cannot resolve (boxes that all sit at one place gave |r| > 1 from
    rounding alone)."""
    var_p, var_q = mean_pp - mean_p ** 2, mean_qq - mean_q ** 2
    if not (var_p > 1e-4 * mean_pp and var_q > 1e-4 * mean_qq):
        return None
    return mean_pq - mean_p * mean_q, var_p, var_q


def _pearson(*spreads: tuple[float, float, float] | None) -> float:
    """Pearson's r of the pairs of every resolved axis, each axis centred on its own means:
    r = sum_a cov_a / sqrt(sum_a var_p,a * sum_a var_q,a), clipped to [-1, 1]; NaN where no axis
    is resolved. Centring per axis keeps the gap between the x and the y means (a fixed box off
    the image's diagonal) from reading as a correlation."""
    resolved = [s for s in spreads if s is not None]
    if not resolved:
        return float("nan")
    cov, var_p, var_q = (sum(values) for values in zip(*resolved))
    return float(np.clip(cov / np.sqrt(var_p * var_q), -1.0, 1.0))


def set_metrics(means: dict[str, float]) -> dict[str, float]:
    """The set's means, with the centre moments replaced by Pearson's correlation of the
    predicted and true box centres over the set's images: `centre_correlation` (x and y pooled,
    each centred on its own means: 2N pairs), `centre_correlation_x`, `centre_correlation_y`."""
    figures = {k: v for k, v in means.items() if not k.startswith(MOMENT)}
    if not any(k.startswith(MOMENT) for k in means):
        return figures
    spreads = {axis: _axis_spread(*[means[f"{MOMENT}{axis}_{m}"]
                                    for m in ("p", "q", "pp", "qq", "pq")])
               for axis in "xy"}
    figures["centre_correlation"] = _pearson(spreads["x"], spreads["y"])
    for axis in "xy":
        figures[f"centre_correlation_{axis}"] = _pearson(spreads[axis])
    return figures


def metrics(outputs: dict, batch: dict) -> dict[str, jax.Array]:
    """`error` (IoU <= 0.5), `localised` (IoU > 0.5, the paper's success), `iou`, the
    baseline of a fixed centred box of the digit's size (`centre_box_error`,
    `centre_box_localised` and `centre_box_iou`), and the box centres' moments
    (`_centre_moments`), which `set_metrics` turns into the set's `centre_correlation`."""
    overlap = boxes.iou(outputs["box"], batch["box"])
    true = batch["box"]
    half = 0.5 * (true[:, 2:] - true[:, :2])
    centred = boxes.iou(jnp.concatenate([-half, half], axis=-1), true)
    localised = (overlap > 0.5).astype(jnp.float32)
    return {"error": 1.0 - localised, "localised": localised, "iou": overlap,
            "centre_box_error": (centred <= 0.5).astype(jnp.float32),
            "centre_box_localised": (centred > 0.5).astype(jnp.float32), "centre_box_iou": centred,
            **_centre_moments(outputs["box"], true)}


def load_eval_set(config, spec: str) -> tuple[dict, str]:
    """`test` (the class's test digits), `validation`, or `train`: the images optimised on,
    where the paper measures co-localisation."""
    if spec not in EVAL_SETS:
        raise ValueError(f"--data must be one of {', '.join(EVAL_SETS)} for task "
                         f"'colocalisation', got {spec!r}")
    if spec == "validation" and not int(config.data.get("validation_size", 0)):
        raise ValueError("the config has no validation split (config.data.validation_size is 0)")
    return _datasets(config)[spec], spec


def draw(batch: dict, grids: list, outputs: list):
    """Each input with the predicted box (red) and the true box (green), beside the crop."""
    height, width = outputs[0].shape[1:3]
    true = transforms.get("attention").grid(boxes.box_attention(batch["box"]), height, width)
    return pictures.transformer_grid_image(batch["image"], outputs, [*grids, np.asarray(true)],
                                        columns=4)


TASK = Task(name="colocalisation", validate_config=validate_config, load_data=load_data,
            input_shape=input_shape, make_model=make_model, loss=loss, metrics=metrics,
            load_eval_set=load_eval_set, forward=forward, draw=draw, init_weights=init_weights,
            set_metrics=set_metrics,
            steps_caption="The same optimised images at each step on the left (step 0: the "
                          "initial box). Each: the image with the predicted box (red) and the "
                          "true box (green), then the crop the transformer took.")
