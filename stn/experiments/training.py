"""`train_and_evaluate(config, workdir)`: the data-parallel training loop, for any task.

The task (`stn.experiments.tasks`, picked by `config.task`) supplies the data, model, loss and
metrics; this module names none. Each step makes its batch on the devices from `(seed, step)`
(sharded over the mesh of every device of every process, `stn.experiments.parallel`) and runs one
jitted SGD step. See docs/guides/training.md for what a run writes, and how it resumes, stops and
refuses; `StopOnSignal` is the codebase's one signal handler.
"""
from __future__ import annotations

import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from stn import layers, native, sampling
from stn.experiments import (checkpointing, config_compare, evaluation, metrics_io, models,
                             parallel, pictures, tasks)
from stn.experiments import workdir as workdir_lib
from stn.experiments.workdir import workdir_lock


class TrainingInterrupted(RuntimeError):
    """Raised after SIGTERM/SIGINT once the checkpoint of the current step is saved."""


class Diverged(FloatingPointError):
    """Raised when the loss or the parameters become non-finite, or the loss passes its limit."""


# Most steps dispatched on an accelerator before the loop reads their metrics (and so waits).
MAX_STEPS_IN_FLIGHT = 50


def max_steps_in_flight(config) -> int:
    """`train.max_steps_in_flight` if set, else 50 on a GPU or TPU and 1 on the CPU (where a
    step is long, and XLA:CPU's collectives hung with many multi-device steps queued)."""
    chosen = int(config.train.get("max_steps_in_flight", 0))
    if chosen > 0:
        return chosen
    return 1 if jax.default_backend() == "cpu" else MAX_STEPS_IN_FLIGHT


# ----------------------------------------------------------------------------- config checks


def validate_train_config(config) -> None:
    """One-line ValueErrors for the `train` and `eval` fields, before anything compiles."""
    for key in ("steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
                "lr_decay_every", "keep_checkpoints"):
        if int(config.train[key]) <= 0:
            raise ValueError(f"config.train.{key}={config.train[key]} must be a positive integer")
    for key, low in (("learning_rate", "> 0"), ("loss_limit", "> 0")):
        value = float(config.train.get(key, 1.0))
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"config.train.{key}={config.train[key]} must be {low} and finite")
    for key in ("grad_clip_norm", "weight_decay", "momentum"):
        value = float(config.train.get(key, 0.0))
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"config.train.{key}={config.train[key]} must be >= 0 and finite "
                             f"(0 turns it off)")
    if config.train.get("optimizer", "sgd") not in OPTIMIZERS:
        raise ValueError(f"config.train.optimizer={config.train.optimizer!r} is unknown; set it "
                         f"to one of {', '.join(OPTIMIZERS)}")
    if not 0 <= float(config.model.get("loc_lr_multiplier", 1.0)) < math.inf:
        raise ValueError(f"config.model.loc_lr_multiplier={config.model.loc_lr_multiplier} "
                         f"must be >= 0 and finite")
    if int(config.model.get("loc_warmup_steps", 0)) < 0:
        raise ValueError(f"config.model.loc_warmup_steps={config.model.loc_warmup_steps} must "
                         f"be >= 0 (0: the localisation nets learn from the first step)")
    n_dev = jax.device_count()
    if config.train.batch_size % n_dev:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is not divisible by "
                         f"the {n_dev} devices; set it to a multiple of {n_dev}")
    if config.eval.batch_size <= 0:
        raise ValueError(f"config.eval.batch_size={config.eval.batch_size} must be positive")


# ----------------------------------------------------------------------------- optimizer


def _is_under(name: str, prefix: str) -> bool:
    """Whether the dotted path `name` is `prefix` or lies below it ("" is the root)."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def parameter_mask(state, model: nnx.Module, prefixes: list[str], leaf: str | None = None):
    """A tree of bools like `state`: True for leaves under one of the module paths `prefixes`
    (dotted, as `stn.layers.localisation_paths` gives them; and, with `leaf`, only those named
    `leaf`, e.g. "bias")."""
    def chosen(path, _):
        name = checkpointing.path_name(path)
        under = any(_is_under(name, p) for p in prefixes)
        return under and (leaf is None or name.rpartition(".")[2] == leaf)
    return jax.tree_util.tree_map_with_path(chosen, state)


def trainable_mask(state):
    """A tree of bools like `state`: True for `nnx.Param` leaves (and plain arrays), False for
    other variables (fixed state: running statistics, `layers.Frozen` weights)."""
    def mark(v):
        if isinstance(v, nnx.Variable):
            return jax.tree.map(lambda _: isinstance(v, nnx.Param), v)
        return True
    return jax.tree.map(mark, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


OPTIMIZERS = ("sgd", "adam")


def base_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """`train.optimizer`: "sgd" (the paper's; `train.momentum`, 0 = none; the default) or
    "adam" (optax's Adam, default betas, as tensorpack's STN examples use)."""
    name = config.train.get("optimizer", "sgd")
    if name == "adam":
        return optax.adam(schedule)
    return optax.sgd(schedule, momentum=float(config.train.get("momentum", 0.0)) or None)


def make_optimizer(config, state, model: nnx.Module | None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`base_optimizer` (SGD by default), the lr times `lr_decay_factor` every `lr_decay_every`
    steps.

    - `train.grad_clip_norm > 0`: the gradient is first rescaled to at most that global norm.
    - `train.weight_decay > 0`: `weight_decay * w` is added to every parameter's gradient (L2;
      fixed state such as frozen batch-norm statistics or `layers.Frozen` weights is never
      decayed) except the localisation nets' regression biases, which hold the transform's
      identity (decaying them would pull every transformer towards the degenerate theta = 0).
    - `model.loc_lr_multiplier`: the localisation nets' whole update (gradient, decay and
      momentum) is scaled by it, i.e. they learn at that multiple of the learning rate, as a
      per-layer learning-rate multiplier does in the paper's framework.
    - `model.loc_warmup_steps` N > 0: the localisation nets do not move for the first N steps
      (their gradient and decay are zeroed before the momentum sees them), so their first
      updates come from a classifier that has already learnt something rather than from a
      random head's gradient.
    """
    schedule = optax.exponential_decay(
        config.train.learning_rate, transition_steps=config.train.lr_decay_every,
        decay_rate=config.train.lr_decay_factor, staircase=True)
    parts = []
    clip = float(config.train.get("grad_clip_norm", 0.0))
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    weight_decay = float(config.train.get("weight_decay", 0.0))
    if weight_decay > 0:
        regressions = layers.regression_paths(model) if model is not None else []
        identity_bias = parameter_mask(state, model, regressions, "bias")
        decayed = jax.tree.map(lambda t, b: t and not b, trainable_mask(state), identity_bias)
        parts.append(optax.add_decayed_weights(weight_decay, mask=decayed))
    loc = (parameter_mask(state, model, layers.localisation_paths(model))
           if model is not None else None)
    warmup = int(config.model.get("loc_warmup_steps", 0))
    if warmup > 0 and loc is not None:
        parts.append(optax.masked(optax.scale_by_schedule(
            lambda count: (count >= warmup).astype(jnp.float32)), loc))
    parts.append(base_optimizer(config, schedule))
    multiplier = float(config.model.get("loc_lr_multiplier", 1.0))
    if multiplier != 1.0 and loc is not None:
        parts.append(optax.masked(optax.scale(multiplier), loc))
    return optax.chain(*parts), schedule


def make_train_step(graphdef, tx: optax.GradientTransformation, task: tasks.Task) -> Callable:
    """The pure step `(state, opt_state, batch) -> (state, opt_state, metrics)`.

    Metrics: the batch's mean `loss` and `error`, the gradient's global norm, and `finite`:
    whether every parameter after the update is finite (checked before any save). The forward
    is the task's `train_forward` (else `forward`); what it writes into the model's state (e.g.
    batch-norm running statistics) is kept, and the update applied on top.
    """
    forward = task.train_forward or task.forward

    def loss_fn(state, batch):
        model = nnx.merge(graphdef, state)
        outputs = forward(model, batch)
        return task.loss(outputs, batch).mean(), (outputs, nnx.state(model))

    def step(state, opt_state, batch):
        (loss, (outputs, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state, batch)
        updates, opt_state = tx.update(grads, opt_state, state)
        state = optax.apply_updates(state, updates)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state)]))
        error = task.metrics(outputs, batch)["error"].mean()
        return state, opt_state, {"loss": loss, "error": error,
                                  "grad_norm": optax.global_norm(grads), "finite": finite}

    return step


# ----------------------------------------------------------------------------- pieces of the loop


class MetricWindow:
    """Running means of the train metrics since the last log line (and the largest gradient norm)."""

    def __init__(self):
        self.sums, self.count, self.max_grad_norm = {"loss": 0.0, "error": 0.0}, 0, 0.0

    def add(self, values: dict) -> None:
        for key in self.sums:
            self.sums[key] += float(values[key])
        self.max_grad_norm = max(self.max_grad_norm, float(values["grad_norm"]))
        self.count += 1

    def means(self) -> dict[str, float]:
        return {f"train_{k}": v / max(self.count, 1) for k, v in self.sums.items()}


class StopOnSignal:
    """The codebase's one SIGTERM/SIGINT handler: a signal sets `signum`, which the loop checks
    after each step (it then saves a checkpoint and stops; a sweep's launcher sends SIGTERM).

    With `interrupt` (a message with `{signum}`), a signal raises `TrainingInterrupted` at
    once instead: for work after the last save (an evaluation), which is redone on a rerun.
    Handlers are installed only from the main thread, as Python requires.
    """

    def __init__(self, interrupt: str | None = None):
        self.signum = None
        self.interrupt = interrupt
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signum = signum
        if self.interrupt is not None:
            raise TrainingInterrupted(self.interrupt.format(signum=signum))

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def divergence_message(step: int, loss: float, params_finite: bool, config, mngr) -> str:
    """One line: the step, what diverged, what is kept on disk, and what to change."""
    what = f"the loss is {loss:.4g}" + ("" if params_finite else
                                       " and the parameters are not finite")
    newest = mngr.latest_step()
    kept = (f"the newest checkpoint is step {newest} in {mngr.directory}" if newest is not None
            else "no checkpoint had been saved yet")
    return (f"training diverged at step {step}: {what} (train.loss_limit="
            f"{float(config.train.get('loss_limit', 1e4)):g}); nothing from that step on was saved "
            f"and {kept}; "
            f"lower config.train.learning_rate (now {config.train.learning_rate}) or "
            f"config.model.loc_lr_multiplier, and rerun in a fresh --workdir")


def check_same_run(workdir: str, config) -> None:
    """Refuses (one line) to continue a run in `workdir` made with another config: resuming
    needs the same computation (`stn.experiments.config_compare`; `train.steps` may grow)."""
    started = any(os.path.exists(os.path.join(workdir, name))
                  for name in (workdir_lib.CHECKPOINTS_DIR, workdir_lib.METRICS_FILE,
                               workdir_lib.RESULTS_FILE))
    if not (started and os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE))):
        return
    differences = evaluation.config_differences(workdir_lib.read_config(workdir),
                                                config.to_dict(), steps_may_grow=True)
    if differences:
        raise ValueError(f"{workdir} holds a run of another config ({differences}); rerun "
                         f"with that run's config to resume it, or start fresh in another "
                         f"--workdir")


@functools.lru_cache(maxsize=None)
def _transformer_view(graphdef):
    """Jitted `(state, images) -> (outputs, grids)`: each transformer's grid in the input frame
    and the input sampled on it (what that transformer attends to)."""

    def view(state, images):
        grids = nnx.merge(graphdef, state).transformer_grids(images)
        return [sampling.sample(images, grid) for grid in grids], grids

    return jax.jit(view)


def draw_transformers(task: tasks.Task, graphdef, state, test: dict, count: int, mesh,
                      workdir: str, step: int, writer: metrics_io.MetricWriter) -> None:
    """The task's picture of the first `count` test examples at `step`. Every process joins the
    computation (it runs on global arrays); only process 0 draws and writes."""
    batch = {k: v[:count] for k, v in test.items()}
    images = parallel.global_array(batch["image"], parallel.replicated(mesh))
    outputs, grids = parallel.to_host(_transformer_view(graphdef)(state, images))
    if not grids or jax.process_index() != 0:
        return
    picture = task.draw(batch, grids, outputs)
    png = pictures.save_step_picture(picture, os.path.join(workdir, workdir_lib.IMAGES_DIR), step)
    writer.write_png(step, "transformer/inputs_outputs", png, picture.height, picture.width)


def print_start(config, workdir: str) -> None:
    """What the run is, printed at once, before anything compiles (the first step compiles for
    a minute or more, which must not look like a hang): the config and its task, the workdir,
    then the devices and the sampler path (the native one may be built here)."""
    print(f"run {config.get('name', config.task)} (task {config.task}) in {workdir}", flush=True)
    kinds = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    sampler = ("native (stn.native)" if native.available()
               else f"jnp ({native.unavailable_reason()})")
    print(f"devices: {jax.device_count()} {kinds} in {jax.process_count()} process(es); "
          f"sampler: {sampler}", flush=True)


def pretrained_state(task: tasks.Task, config, graphdef, state, sharding):
    """`state` with the task's pretrained weights loaded (`Task.init_weights`), on `sharding`.
    The optimizer's state needs no change: it starts from zeros whatever the weights."""
    model = nnx.merge(graphdef, state)
    task.init_weights(config, model)
    return jax.device_put(nnx.state(model), sharding)


def _format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _json_number(value: float | None) -> float | None:
    """`value`, or None where it is not a finite number (strict JSON has no NaN)."""
    return value if value is not None and math.isfinite(value) else None


def results_record(config, *, steps: int, start_step: int, evaluations: dict[str, dict],
                   wall: float | None, images_per_second: float | None, evaluation_time: float,
                   num_params: int) -> dict[str, Any]:
    """The `results.json` record (docs/guides/contracts.md): `<split>_<metric>` for every
    evaluated split (test, validation), plus the run's size and time: `wall_time_s` and
    `images_per_second` of the training, `evaluation_wall_time_s` of the final evaluation.
    Non-finite numbers become null with a `non_finite` list naming them."""
    record = {"name": config.name, "task": config.task, "config": config.to_dict(),
              "steps": steps}
    non_finite = []
    for split, values in evaluations.items():
        for key, value in values.items():
            name = "num_" + split + "_examples" if key == "num_examples" else f"{split}_{key}"
            record[name] = _json_number(value) if key != "num_examples" else int(value)
            if key != "num_examples" and record[name] is None:
                non_finite.append(name)
    record.update(wall_time_s=wall, images_per_second=images_per_second,
                  evaluation_wall_time_s=evaluation_time, num_params=num_params,
                  resumed_from_step=start_step, num_devices=jax.device_count(),
                  num_processes=jax.process_count())
    if non_finite:
        record["non_finite"] = non_finite
    return record


def training_figures(workdir: str, steps: int) -> dict[str, float | None]:
    """`wall_time_s` and `images_per_second` of the record of `steps` steps in `workdir`, which
    an evaluating-only rerun keeps (it trains nothing); None where no such record holds them
    (the training's process was stopped before writing it)."""
    try:
        with open(os.path.join(workdir, workdir_lib.RESULTS_FILE)) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or old.get("steps") != steps:
        old = {}
    return {key: old.get(key) for key in ("wall_time_s", "images_per_second")}


class PendingMetrics:
    """Metrics of dispatched steps not yet read on the host. Reading them waits for their
    steps, so on an accelerator the loop reads them in groups (and always before a save)."""

    def __init__(self, config, mngr, step_callback=None):
        self.config, self.mngr, self.step_callback = config, mngr, step_callback
        self.loss_limit = float(config.train.get("loss_limit", 1e4))
        self.steps: list[tuple[int, dict]] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, metrics: dict) -> None:
        self.steps.append((step, metrics))

    def read_into(self, window: MetricWindow, writer: metrics_io.MetricWriter) -> None:
        """Adds every pending step to `window`; raises `Diverged` at the first bad one."""
        for step, values in zip([s for s, _ in self.steps],
                                jax.device_get([m for _, m in self.steps])):
            loss, finite = float(values["loss"]), bool(values["finite"])
            if not (math.isfinite(loss) and loss <= self.loss_limit and finite):
                writer.close()
                raise Diverged(divergence_message(step, loss, finite, self.config, self.mngr))
            window.add(values)
            if self.step_callback is not None:
                self.step_callback(step, {"loss": loss, "error": float(values["error"])})
        self.steps.clear()


def log_progress(writer: metrics_io.MetricWriter, window: MetricWindow, step: int,
                 total_steps: int, learning_rate: float, steps_per_second: float,
                 batch_size: int) -> None:
    """The train metrics since the last log line to the writer, and one line to stdout."""
    means = window.means()
    writer.write_scalars(step, {**means, "learning_rate": learning_rate,
                                "max_grad_norm": window.max_grad_norm,
                                "window_steps": window.count})
    eta = (_format_seconds((total_steps - step) / steps_per_second) if steps_per_second > 0
           else "?")
    print(f"step {step}/{total_steps} ({100 * step / total_steps:.0f}%) "
          f"loss {means['train_loss']:.4f} err {means['train_error']:.3f} "
          f"lr {learning_rate:.3g} |g|max {window.max_grad_norm:.3g} | "
          f"{steps_per_second * batch_size:.0f} img/s | ETA {eta}", flush=True)


def evaluate_run(task: tasks.Task, config, graphdef, state, data: tasks.Data, mesh,
                 writer: metrics_io.MetricWriter, workdir: str, step: int, *,
                 final: bool) -> dict[str, dict]:
    """The validation set (if any), the test set (at the end, or always with
    `eval.test_during_training`), the optimised set of a transductive task (at the end, as
    `train`), metrics written and printed, and the task's picture."""
    sets = {"validation": data.validation}
    if final or config.eval.get("test_during_training", False):
        sets["test"] = data.test
    if final and data.optimised is not None:  # transductive: score the images optimised on
        sets["train"] = data.optimised
    done = {}
    for split, dataset in sets.items():
        if dataset is None:
            continue
        values = evaluation.evaluate(task, graphdef, state, dataset, mesh=mesh,
                                     batch_size=int(config.eval.batch_size))
        writer.write_scalars(step, {f"{split}_{k}": v for k, v in values.items()
                                    if k != "num_examples"})
        print(f"step {step}: {split} error {values['error']:.4f} "
              f"({100 * values['error']:.2f}%), loss {values['loss']:.4f} on "
              f"{values['num_examples']} examples", flush=True)
        done[split] = values
    draw_shown_examples(task, config, graphdef, state, data, mesh, workdir, step, writer)
    writer.flush()
    return done


def draw_shown_examples(task: tasks.Task, config, graphdef, state, data: tasks.Data, mesh,
                        workdir: str, step: int, writer: metrics_io.MetricWriter) -> None:
    """The task's picture at `step` of the same `train.num_images` examples every time: the
    first test examples, or the first optimised images of a transductive task."""
    count = int(config.train.get("num_images", 16))
    if count > 0:
        shown = data.test if data.optimised is None else data.optimised
        draw_transformers(task, graphdef, state, shown, count, mesh, workdir, step, writer)


def evaluation_missing(config, data: tasks.Data, workdir: str, step: int) -> bool:
    """Whether `step` is a (non-final) evaluation step whose checkpoint a resumed run starts from
    but whose metrics `metrics.jsonl` lacks (the run was killed between the save and the
    evaluation). Read on every process alike, so that all of them join the evaluation."""
    if not 0 < step < int(config.train.steps) or step % int(config.train.eval_every):
        return False
    wanted = set()
    if data.validation is not None:
        wanted.add("validation_error")
    if config.eval.get("test_during_training", False):
        wanted.add("test_error")
    metrics = os.path.join(workdir, workdir_lib.METRICS_FILE)
    return not wanted <= metrics_io.recorded_keys(metrics, step)


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config, workdir: str, *,
                       step_callback: Callable[[int, dict], None] | None = None) -> dict:
    """Trains `config` in `workdir` (resuming from its newest good checkpoint) and evaluates it.

    Args:
      config: an `ml_collections.ConfigDict` from `configs/*.py` (its `task` names the task).
      workdir: output folder (docs/guides/training.md lists what it holds).
      step_callback: called as `step_callback(step, metrics)` after each step (tests, hooks).
    Returns:
      The record written to `workdir/results.json`.
    """
    # -- setup: check everything before any work; one run per workdir
    t_start = time.time()
    if config.get("distributed", False):
        parallel.initialize_distributed()
    task = tasks.for_config(config)
    validate_train_config(config)
    config_compare.check_finite(config.to_dict())  # before the task's checks use the numbers
    task.validate_config(config)
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    with workdir_lock(workdir, enabled=is_main):
        check_same_run(workdir, config)
        if is_main:
            print_start(config, workdir)

        # -- data (read before anything is written: its checks may still refuse the run, and a
        # refused run leaves neither config.json nor the lock, stn.experiments.workdir)
        data = task.load_data(config)
        mesh = parallel.make_mesh()
        replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
        train_arrays = parallel.global_tree(data.train_arrays, replicated)
        make_batch = jax.jit(data.train_batch, out_shardings=sharded)

        # -- model and optimizer
        model = task.make_model(config, data.input_shape, nnx.Rngs(params=config.seed))
        graphdef, state = nnx.split(model)
        num_params = models.num_params(model)
        if is_main:
            model_name = config.model.get("name", config.task)
            print(f"model {model_name}: {num_params:,} parameters; compiling the first "
                  f"step", flush=True)
        tx, schedule = make_optimizer(config, state, model)
        state = jax.device_put(state, replicated)
        opt_state = jax.jit(tx.init, out_shardings=replicated)(state)
        train_step = jax.jit(make_train_step(graphdef, tx, task),
                             in_shardings=(replicated, replicated, sharded),
                             out_shardings=(replicated, replicated, replicated),
                             donate_argnums=(0, 1))

        if is_main:  # every check passed: from here on the workdir holds this run
            metrics_io.write_text(os.path.join(workdir, workdir_lib.CONFIG_FILE),
                                  json.dumps(config.to_dict(), indent=2, sort_keys=True))

        # -- checkpoint: resume from the newest one that verifies
        mngr = checkpointing.manager(workdir, max_to_keep=int(config.train.keep_checkpoints))
        start_step, state, opt_state = checkpointing.restore_newest_good(mngr, state, opt_state)
        if start_step:
            print(f"Resuming from the checkpoint of step {start_step} in {mngr.directory}",
                  flush=True)
        else:  # a fresh run starts from the task's pretrained weights (a checkpoint holds them)
            state = pretrained_state(task, config, graphdef, state, replicated)
        writer = metrics_io.MetricWriter(workdir)
        writer.truncate_after(start_step)
        if not start_step:  # the untrained transformers (the identity, or the initial box)
            draw_shown_examples(task, config, graphdef, state, data, mesh, workdir, 0, writer)
        if evaluation_missing(config, data, workdir, start_step):  # killed between save and eval
            with StopOnSignal(interrupt=f"stopped by signal {{signum}} while redoing the "
                                        f"evaluation of step {start_step}; rerun the same "
                                        f"command to resume"):
                evaluate_run(task, config, graphdef, state, data, mesh, writer, workdir,
                             start_step, final=False)

        # -- loop: metrics are read in groups (at most max_steps_in_flight apart), always before
        # a save, so a diverged state is never checkpointed
        total_steps, batch_size = int(config.train.steps), int(config.train.batch_size)
        window, pending = MetricWindow(), PendingMetrics(config, mngr, step_callback)
        in_flight = max_steps_in_flight(config)
        t_loop, t_first, steps_done = time.time(), None, 0

        with StopOnSignal() as stop:
            for step in range(start_step, total_steps):
                batch = make_batch(train_arrays, config.seed, step)
                state, opt_state, metrics = train_step(state, opt_state, batch)
                done, steps_done = step + 1, steps_done + 1
                pending.add(done, metrics)
                t_first = t_first or time.time()
                log_now = done % config.train.log_every == 0 or done == total_steps
                save_now = done % config.train.checkpoint_every == 0 or done == total_steps
                eval_now = done % config.train.eval_every == 0 and done != total_steps
                if (log_now or save_now or eval_now or stop.signum is not None
                        or step_callback is not None or len(pending) >= in_flight):
                    pending.read_into(window, writer)
                if log_now:
                    rate = (steps_done - 1) / max(time.time() - t_first, 1e-9)
                    log_progress(writer, window, done, total_steps, float(schedule(step)), rate,
                                 batch_size)
                    window = MetricWindow()
                if save_now or stop.signum is not None:
                    checkpointing.save(mngr, done, state, opt_state)
                if eval_now:
                    evaluate_run(task, config, graphdef, state, data, mesh, writer, workdir, done,
                                 final=False)
                if stop.signum is not None:
                    writer.close()
                    raise TrainingInterrupted(
                        f"stopped by signal {stop.signum} after step {done}; checkpoint saved in "
                        f"{mngr.directory}; rerun the same command to resume")
        train_time = time.time() - t_loop

        # -- final evaluation and the record
        final_step = max(start_step, total_steps)
        if start_step >= total_steps:
            print(f"Checkpoint of step {start_step} already reaches train.steps={total_steps}; "
                  f"evaluating only", flush=True)
        t_evaluation = time.time()
        with StopOnSignal(interrupt=f"stopped by signal {{signum}} during the final evaluation; "
                                    f"the checkpoint of step {final_step} is saved in "
                                    f"{mngr.directory}; rerun the same command to evaluate it"):
            evaluations = evaluate_run(task, config, graphdef, state, data, mesh, writer,
                                       workdir, final_step, final=True)
            writer.close()
            steps_picture = pictures.stitch_steps(os.path.join(workdir, workdir_lib.IMAGES_DIR),
                                                  caption=task.steps_caption)
            if is_main and steps_picture is not None:  # the same examples at several steps
                steps_picture.save(os.path.join(workdir, workdir_lib.IMAGES_DIR,
                                                "transformer_steps.png"))
            if steps_done:
                figures = {"wall_time_s": time.time() - t_start,
                           "images_per_second": steps_done * batch_size / train_time}
            else:  # evaluating only: the record keeps the training's figures
                figures = training_figures(workdir, final_step)
            results = results_record(
                config, steps=final_step, start_step=start_step, evaluations=evaluations,
                wall=figures["wall_time_s"], images_per_second=figures["images_per_second"],
                evaluation_time=time.time() - t_evaluation, num_params=num_params)
            if is_main:
                metrics_io.write_json(os.path.join(workdir, workdir_lib.RESULTS_FILE), results)
    test = evaluations["test"]
    print(f"Final test error: {test['error']:.4f} ({100 * test['error']:.2f}%) after "
          f"{final_step} steps; wall time {time.time() - t_start:.1f}s; results in "
          f"{os.path.join(workdir, 'results.json')}", flush=True)
    return results
