"""Benchmark: milliseconds to make one distorted training batch on the default JAX device.

Times the jitted `stn.experiments.data.pipeline.train_batch` (example selection + distortion) for each
distortion, with the training digits already on device, as the training loop uses it. Prints a
markdown table of medians over `--repeats` calls after one warm-up (compile) call, and the
minimum process CPU time per batch (all threads; the less load-sensitive number). Compare the
native CPU sampler with the pure-jnp one by running it twice, the second time with `STN_NATIVE=0`.

    python benchmarks/data_step.py                        # batch 256, embedded sample digits
    python benchmarks/data_step.py --batch-size 512 --distortions rts,tc
    python benchmarks/data_step.py --model st_cnn      # also an ST-CNN SGD step, and the ratio

With `--model`, each row also times one jitted SGD step (forward, backward, update) of that
`stn.experiments.models.mnist` model on the distortion's canvas, and the data batch's share of
data + step (the target: under 10% with ST-CNN).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone
from stn.experiments.data import distortions, pipeline, sources


def time_distortion(images, labels, name: str, batch_size: int,
                    repeats: int) -> tuple[float, float, float]:
    """(compile seconds, median milliseconds per batch, min process CPU milliseconds per batch)
    of `train_batch` for one distortion. CPU time counts every thread of this process and none of
    other processes, so it moves much less than wall time on a loaded machine."""
    fn = jax.jit(functools.partial(pipeline.train_batch, batch_size=batch_size, distortion=name))
    start = time.perf_counter()
    jax.block_until_ready(fn(images, labels, 0, 0))
    compile_s = time.perf_counter() - start
    times, cpu = [], []
    for step in range(1, repeats + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(images, labels, 0, step))
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return compile_s, statistics.median(times), min(cpu)


def time_train_step(model_name: str, batch: dict, repeats: int) -> float:
    """Median milliseconds of one jitted SGD step of `model_name` on `batch` (affine ST)."""
    import optax
    from flax import nnx

    from stn.experiments.models import mnist

    model = mnist.create(model_name, batch["image"].shape[1:], rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    tx = optax.sgd(0.01)
    opt_state = tx.init(state)

    @jax.jit
    def step(state, opt_state, batch):
        def loss_fn(state):
            logits = nnx.merge(graphdef, state)(batch["image"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

        grads = jax.grad(loss_fn)(state)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state

    state, opt_state = jax.block_until_ready(step(state, opt_state, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, opt_state = jax.block_until_ready(step(state, opt_state, batch))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--source", default="sample")
    parser.add_argument("--distortions", default=",".join(distortions.NAMES))
    parser.add_argument("--model", default=None, help="e.g. st_cnn: also time its train step")
    args = parser.parse_args()
    digits = sources.load_digits(args.source)  # the training digits on device, as training has them
    images, labels = jax.device_put(digits.train_images), jax.device_put(digits.train_labels)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), batch {args.batch_size}, "
          f"{args.repeats} repeats, source {args.source}\n")
    extra = f" {args.model} step ms | data share |" if args.model else ""
    print("| distortion | canvas | compile s | ms / batch | images / s | CPU ms / batch |" + extra)
    print("| --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if args.model else ""))
    for name in args.distortions.split(","):
        compile_s, ms, cpu_ms = time_distortion(images, labels, name, args.batch_size,
                                                args.repeats)
        size = distortions.get(name).canvas_size
        row = f"| {name} | {size} | {compile_s:.2f} | {ms:.2f} | {args.batch_size / ms * 1e3:,.0f} | {cpu_ms:.2f} |"
        if args.model:
            batch = pipeline.train_batch(images, labels, 0, 0, batch_size=args.batch_size,
                                         distortion=name)
            step_ms = time_train_step(args.model, batch, args.repeats)
            row += f" {step_ms:.2f} | {ms / (ms + step_ms):.1%} |"
        print(row)


if __name__ == "__main__":
    main()
