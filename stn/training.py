"""`train_and_evaluate(config, workdir)`: the data-parallel training loop, top to bottom.

1. Validate the config (one-line errors, before any compile); write `workdir/config.json`.
2. Mesh over every device (all hosts), axis `data`; parameters and optimizer state replicated,
   each batch sharded along `data` (the modern form of `pmap`).
3. Each step: the distorted batch is made on the devices by a jitted
   `stn.data.pipeline.train_batch(images, labels, seed, step)` whose output is sharded over the
   mesh, then one jitted train step (forward, cross-entropy, backward, optax SGD update).
   The batch depends only on `(seed, step)`, so a resumed run sees the same data.
4. Every `log_every` steps: loss, accuracy, lr to stdout (with an ETA), TensorBoard and
   `metrics.jsonl`. Every `eval_every` steps and at the end: test error, and a PNG of test
   inputs (with the sampling grid's outline) beside the transformer's outputs. On a GPU or TPU
   the step's metrics stay on the device until such a step, so the host does not wait on each
   step (on the CPU it reads every step: `max_steps_in_flight`).
5. Checkpoints (orbax) every `checkpoint_every` steps, at the end, and on SIGTERM/SIGINT; a
   rerun with the same workdir resumes. A NaN/inf loss stops the run naming the step.
6. `workdir/results.json` (see docs/CONTRACTS.md).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stn import checkpointing, evaluation, metrics_io, plots, sampling, transforms
from stn.data import distortions, pipeline, sources, svhn_input
from stn.models import mnist as mnist_models, svhn


class TrainingInterrupted(RuntimeError):
    """Raised after SIGTERM/SIGINT once the checkpoint of the current step is saved."""


class NonFiniteLoss(FloatingPointError):
    """Raised when the training loss becomes NaN or inf."""


# Most steps dispatched on an accelerator before the loop reads their metrics (and so waits).
MAX_STEPS_IN_FLIGHT = 50


def max_steps_in_flight() -> int:
    """`MAX_STEPS_IN_FLIGHT` on a GPU or TPU; 1 (read every step) on the CPU.

    On the CPU a step takes tens of milliseconds, so waiting for each costs nothing, and XLA:CPU's
    collectives are not safe with many multi-device steps queued: `train.py --cpu_devices=2` on
    `configs/mnist.py:quick` with 50 steps in flight hung in an all-gather rendezvous until XLA
    aborted the process (20 steps in flight did not).
    """
    return 1 if jax.default_backend() == "cpu" else MAX_STEPS_IN_FLIGHT


# ----------------------------------------------------------------------------- config checks


def is_sequence_task(config) -> bool:
    """`config.task == "sequences"`: SVHN multi-digit or its stand-in (`stn.data.svhn_input`)."""
    return config.get("task", "classification") == "sequences"


def task_functions(config) -> tuple[Callable, Callable]:
    """`(per_example_loss, correct)` of the config's task, each `(outputs, labels) -> [B]`.

    Classification: cross-entropy and arg-max; sequences: `stn.models.svhn`'s length + digit
    cross-entropies and sequence correctness.
    """
    if is_sequence_task(config):
        return svhn.per_example_loss, svhn.sequence_correct
    return evaluation.classification_loss, evaluation.classification_correct


def _validate_sequence_config(config) -> None:
    if config.model.name not in svhn.MODEL_NAMES:
        raise ValueError(f"config.model.name={config.model.name!r} is unknown for task "
                         f"'sequences'; set it to one of {', '.join(svhn.MODEL_NAMES)}")
    svhn_input.validate_config(config)


def validate_config(config) -> None:
    """Raises a one-line ValueError naming the field to change, before anything compiles."""
    if is_sequence_task(config):
        _validate_sequence_config(config)
    else:
        _validate_classification_config(config)
    _validate_train_config(config)


def _validate_classification_config(config) -> None:
    model = config.model.name
    if model not in mnist_models.MODEL_NAMES:
        raise ValueError(f"config.model.name={model!r} is unknown; set it to one of "
                         f"{', '.join(mnist_models.MODEL_NAMES)}")
    if model.startswith("st_") and config.model.transform not in transforms.NAMES:
        raise ValueError(f"config.model.transform={config.model.transform!r} is unknown; set it "
                         f"to one of {', '.join(transforms.NAMES)}")
    names = distortions.NAMES
    if config.data.distortion not in names:
        raise ValueError(f"config.data.distortion={config.data.distortion!r} is unknown; set it "
                         f"to one of {', '.join(names)}")
    source = config.data.source
    if isinstance(source, str) and source.startswith("idx:"):
        directory = os.path.expanduser(source[4:])
        if not os.path.isdir(directory):
            raise ValueError(f"config.data.source={source!r}: directory {directory} does not "
                             f"exist; point idx: at a folder of MNIST IDX files, or use "
                             f"data.source=sample")


def _validate_train_config(config) -> None:
    for key in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                "lr_decay_every"):
        if int(config.train[key]) <= 0:
            raise ValueError(f"config.train.{key}={config.train[key]} must be a positive integer")
    if not config.train.learning_rate > 0:
        raise ValueError(f"config.train.learning_rate={config.train.learning_rate} must be > 0")
    if not float(config.train.get("grad_clip_norm", 0.0)) >= 0:
        raise ValueError(f"config.train.grad_clip_norm={config.train.grad_clip_norm} must be >= 0 "
                         f"(0 turns clipping off)")
    n_dev = jax.device_count()
    if config.train.batch_size % n_dev:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is not divisible by "
                         f"the {n_dev} devices; set it to a multiple of {n_dev}")
    if config.eval.batch_size <= 0:
        raise ValueError(f"config.eval.batch_size={config.eval.batch_size} must be positive")


# ----------------------------------------------------------------------------- building blocks


def input_size(config) -> int:
    """Side of the (square) images the model sees: the distortion's canvas."""
    return int(distortions.get(config.data.distortion).canvas_size)


def build_model(config, mesh: Mesh):
    """`(graphdef, replicated param state, input size)` for the config's model and seed."""
    if is_sequence_task(config):
        shape = svhn_input.input_shape(config)
        size = shape[0]
        model = svhn.get_model(config.model, shape, nnx.Rngs(params=config.seed))
    else:
        size = input_size(config)
        model = mnist_models.get_model(config.model, size, nnx.Rngs(params=config.seed))
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, NamedSharding(mesh, P()))
    return graphdef, state, size


def make_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """SGD (optional momentum) with the lr divided by `1/lr_decay_factor` every N steps.

    `train.weight_decay > 0` adds `weight_decay * w` to every gradient (L2; the SVHN recipe);
    `train.grad_clip_norm > 0` first rescales the gradient to at most that global norm.
    """
    schedule = optax.exponential_decay(
        config.train.learning_rate, transition_steps=config.train.lr_decay_every,
        decay_rate=config.train.lr_decay_factor, staircase=True)
    momentum = config.train.get("momentum", 0.0) or None
    tx = optax.sgd(schedule, momentum=momentum)
    weight_decay = float(config.train.get("weight_decay", 0.0))
    if weight_decay > 0:
        tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    clip = float(config.train.get("grad_clip_norm", 0.0))
    if clip > 0:  # one bad batch cannot throw a transformer off the canvas for good
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule


def loc_net_flags(state) -> list[bool]:
    """For each leaf of `state`: does it belong to a localisation net?"""
    paths = jax.tree_util.tree_flatten_with_path(state)[0]
    return ["loc_net" in jax.tree_util.keystr(path) for path, _ in paths]


def param_names(state) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


def make_train_step(graphdef, tx: optax.GradientTransformation, loc_flags: list[bool],
                    loc_multiplier: float, *,
                    per_example_loss: Callable = evaluation.classification_loss,
                    correct: Callable = evaluation.classification_correct) -> Callable:
    """The pure train step `(state, opt_state, batch) -> (state, opt_state, metrics)`.

    The localisation net's gradient is scaled by `loc_multiplier` (equivalent to a smaller
    learning rate for it under SGD with or without momentum). `per_example_loss` and `correct`
    (`(outputs, labels) -> [B]`) come from `task_functions`; "accuracy" is the mean of `correct`.
    """

    def loss_fn(state, batch):
        logits = nnx.merge(graphdef, state)(batch["image"])
        loss = per_example_loss(logits, batch["label"]).mean()
        return loss, logits

    def step(state, opt_state, batch):
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state, batch)
        if loc_multiplier != 1.0:
            leaves, treedef = jax.tree.flatten(grads)
            leaves = [g * loc_multiplier if f else g for g, f in zip(leaves, loc_flags)]
            grads = jax.tree.unflatten(treedef, leaves)
        updates, opt_state = tx.update(grads, opt_state, state)
        state = optax.apply_updates(state, updates)
        accuracy = jnp.mean(correct(logits, batch["label"]))
        return state, opt_state, {"loss": loss, "accuracy": accuracy,
                                  "grad_norm": optax.global_norm(grads)}

    return step


@functools.lru_cache(maxsize=None)
def _transformer_view(graphdef):
    """Jitted `(state, images) -> (outputs, grids)`: lists, one entry per transformer drawn.

    Grids are in the input's frame (`input_frame_grids` where the model has several
    transformers in series, else the first transformer's own); each output is the input
    resampled on its grid, i.e. the region that transformer attends to.
    """

    def view(state, images):
        grids = nnx.merge(graphdef, state).transformer_grids(images)
        outputs = [sampling.sample(images, grid) for grid in grids]
        return outputs, grids

    return jax.jit(view)


def load_test_set(config) -> dict[str, np.ndarray]:
    """The fixed distorted test set of the config (numpy, on every host)."""
    if is_sequence_task(config):
        return svhn_input.load(config).test
    digits = sources.load_digits(config.data.source)
    return pipeline.test_set(digits, distortions.get(config.data.distortion),
                             seed=config.data.get("test_seed", 0))


def _format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it after each step."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config, workdir: str, *,
                       step_callback: Callable[[int, dict], None] | None = None) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates it.

    Args:
      config: an `ml_collections.ConfigDict` as made by `configs/mnist.py`.
      workdir: output folder (config.json, checkpoints/, metrics.jsonl, tensorboard/,
        images/, results.json).
      step_callback: called as `step_callback(step, metrics)` after each step (tests, hooks).
    Returns:
      The dict written to `workdir/results.json`.
    """
    t_start = time.time()
    if config.get("distributed", False):
        jax.distributed.initialize()
    validate_config(config)
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(config.to_dict(), f, indent=2, sort_keys=True)

    if is_sequence_task(config):  # SVHN or its stand-in: batch maker and test set from there
        data = svhn_input.load(config)
        train_arrays, batch_fn, test = (data.train_images, data.train_labels), data.train_batch, \
            data.test
    else:
        digits = sources.load_digits(config.data.source)
        distortion = distortions.get(config.data.distortion)
        test = pipeline.test_set(digits, distortion, seed=config.data.get("test_seed", 0))
        train_arrays = (digits.train_images, digits.train_labels)
        batch_fn = functools.partial(pipeline.train_batch, batch_size=int(config.train.batch_size),
                                     distortion=distortion)
    loss_fn, correct_fn = task_functions(config)

    mesh = evaluation.make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    graphdef, state, _ = build_model(config, mesh)
    num_params = int(sum(x.size for x in jax.tree.leaves(state)))
    tx, schedule = make_optimizer(config)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(state)

    mngr = checkpointing.manager(workdir, max_to_keep=config.train.get("keep_checkpoints", 3))
    names = param_names(state)
    start_step = 0
    if mngr.latest_step() is not None:
        start_step = int(mngr.latest_step())
        state, opt_state = checkpointing.restore(mngr, start_step, state, opt_state)
        print(f"Resuming from the checkpoint of step {start_step} in {mngr.directory}", flush=True)

    total_steps = int(config.train.steps)
    batch_size = int(config.train.batch_size)
    train_images = jax.device_put(train_arrays[0], replicated)
    train_labels = jax.device_put(train_arrays[1], replicated)
    make_batch = jax.jit(batch_fn, out_shardings=batch_sharding)
    train_step = jax.jit(
        make_train_step(graphdef, tx, loc_net_flags(state),
                        float(config.model.get("loc_lr_multiplier", 1.0)),
                        per_example_loss=loss_fn, correct=correct_fn),
        in_shardings=(replicated, replicated, batch_sharding),
        out_shardings=(replicated, replicated, replicated), donate_argnums=(0, 1))

    writer = metrics_io.MetricWriter(workdir)
    has_transformer = config.model.name.startswith("st_")
    num_images = int(config.train.get("num_images", 16))

    def run_eval(step: int) -> dict:
        metrics = evaluation.evaluate_arrays(graphdef, state, test["image"], test["label"],
                                             batch_size=config.eval.batch_size, mesh=mesh,
                                             loss_fn=loss_fn, correct_fn=correct_fn)
        writer.write_scalars(step, {"test_error": metrics["test_error"],
                                    "test_loss": metrics["test_loss"]})
        print(f"step {step}: test error {metrics['test_error']:.4f} "
              f"({100 * metrics['test_error']:.2f}%) on {metrics['num_examples']} examples",
              flush=True)
        if has_transformer and is_main and num_images > 0:
            images = jnp.asarray(test["image"][:num_images])
            outputs, grids = _transformer_view(graphdef)(state, images)
            picture = plots.transformer_grid_image(
                np.asarray(images), [np.asarray(o) for o in outputs],
                [np.asarray(g) for g in grids], columns=4 if len(grids) == 1 else 2)
            png = plots.png_bytes(picture)
            os.makedirs(os.path.join(workdir, "images"), exist_ok=True)
            for name in (f"transformer_step_{step:07d}.png", "transformer_latest.png"):
                with open(os.path.join(workdir, "images", name), "wb") as f:
                    f.write(png)
            writer.write_png(step, "transformer/inputs_outputs", png, picture.height,
                             picture.width)
        writer.flush()
        return metrics

    def save(step: int) -> None:
        checkpointing.save(mngr, step, state, opt_state, names)

    window = {"loss": 0.0, "accuracy": 0.0, "grad_norm": 0.0, "n": 0}
    # Steps whose metrics are still on the device. Reading a metric waits for its step, so on an
    # accelerator the loop reads them in one go at log, checkpoint and eval steps (and every
    # `max_steps_in_flight()` steps): the host keeps dispatching while the device computes.
    pending: list[tuple[int, dict]] = []
    in_flight = max_steps_in_flight()

    def read_pending() -> None:
        """Moves the pending steps' metrics to the host; stops the run on a non-finite loss."""
        for done_i, values in zip([d for d, _ in pending],
                                  jax.device_get([m for _, m in pending])):
            loss = float(values["loss"])
            if not np.isfinite(loss):
                last_good = mngr.latest_step()
                writer.close()
                raise NonFiniteLoss(
                    f"training loss is {loss} at step {done_i}; stopped. The last good checkpoint "
                    f"(step {last_good}) is kept in {mngr.directory}; lower "
                    f"config.train.learning_rate (now {config.train.learning_rate}) or "
                    f"config.model.loc_lr_multiplier and rerun")
            window["loss"] += loss
            window["accuracy"] += float(values["accuracy"])
            window["grad_norm"] = max(window["grad_norm"], float(values["grad_norm"]))
            window["n"] += 1
            if step_callback is not None:
                step_callback(done_i, {"loss": loss, "accuracy": float(values["accuracy"])})
        pending.clear()

    t_loop = time.time()
    t_after_first = None
    steps_done = 0
    last_metrics = None
    with _StopFlag() as stop:
        for step in range(start_step, total_steps):
            batch = make_batch(train_images, train_labels, config.seed, step)
            state, opt_state, metrics = train_step(state, opt_state, batch)
            done = step + 1
            pending.append((done, metrics))
            steps_done += 1
            if t_after_first is None:
                t_after_first = time.time()
            log_now = done % config.train.log_every == 0 or done == total_steps
            save_now = done % config.train.checkpoint_every == 0 or done == total_steps
            eval_now = done % config.train.eval_every == 0 and done != total_steps
            if (log_now or save_now or eval_now or stop.signum is not None
                    or step_callback is not None or len(pending) >= in_flight):
                read_pending()  # before any save, so a non-finite state is never checkpointed
            if log_now:
                lr = float(schedule(step))
                mean_loss = window["loss"] / window["n"]
                mean_acc = window["accuracy"] / window["n"]
                writer.write_scalars(done, {"train_loss": mean_loss, "train_accuracy": mean_acc,
                                            "learning_rate": lr,
                                            "max_grad_norm": window["grad_norm"]})
                rate = (steps_done - 1) / max(time.time() - t_after_first, 1e-9)
                eta = (total_steps - done) / rate if rate > 0 else float("nan")
                print(f"step {done}/{total_steps} ({100 * done / total_steps:.0f}%) "
                      f"loss {mean_loss:.4f} acc {mean_acc:.3f} lr {lr:.3g} "
                      f"|g|max {window['grad_norm']:.3g} | "
                      f"{rate * batch_size:.0f} img/s | ETA "
                      f"{_format_seconds(eta) if np.isfinite(eta) else '?'}", flush=True)
                window = {"loss": 0.0, "accuracy": 0.0, "grad_norm": 0.0, "n": 0}
            if save_now:
                save(done)
            if eval_now:
                last_metrics = run_eval(done)
            if stop.signum is not None:
                save(done)
                writer.close()
                raise TrainingInterrupted(
                    f"stopped by signal {stop.signum} after step {done}; checkpoint saved in "
                    f"{mngr.directory}; rerun the same command to resume")
    train_time = time.time() - t_loop

    final_step = max(start_step, total_steps)
    if start_step >= total_steps:
        print(f"Checkpoint of step {start_step} already reaches train.steps={total_steps}; "
              f"evaluating only", flush=True)
    last_metrics = run_eval(final_step)
    writer.close()
    wall = time.time() - t_start
    results = {
        "name": config.name,
        "config": config.to_dict(),
        "steps": final_step,
        "test_error": last_metrics["test_error"],
        "test_loss": last_metrics["test_loss"],
        "num_test_examples": last_metrics["num_examples"],
        "wall_time_s": wall,
        "images_per_second": steps_done * batch_size / train_time if steps_done else 0.0,
        "num_params": num_params,
        "resumed_from_step": start_step,
        "num_devices": jax.device_count(),
    }
    if is_main:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    print(f"Final test error: {last_metrics['test_error']:.4f} "
          f"({100 * last_metrics['test_error']:.2f}%) after {final_step} steps; "
          f"wall time {wall:.1f}s; results in {os.path.join(workdir, 'results.json')}",
          flush=True)
    return results
