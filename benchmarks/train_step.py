"""Images/second of one MNIST ST-CNN train step: stn (JAX/Flax NNX) vs the same net in PyTorch.

One step = forward, backward and an SGD update on a batch of 256 RTS-sized inputs (42x42x1):
the project's model from ``stn.experiments.models.mnist`` (affine transformer, conv localisation net, CNN
classifier) and a PyTorch model of the same architecture written here (torch columns only when
torch imports). Each side runs in its own subprocess; sides alternate over ``--rounds`` rounds and
the reported step time is the median over rounds of each process's median.

    python benchmarks/train_step.py                     # stn vs torch, 3 rounds
    python benchmarks/train_step.py --variants xla,patches --malloc tuned

JAX variants (``--variants``): ``xla`` (the model as it is), ``patches`` (every conv of the model
run as image patches + one matmul; forward and gradients are the same convolution), ``sharded2``
(the model as it is, the batch split over two XLA CPU devices, one per core, as
``train.py`` does over every device), ``nnx_pool`` (the max-pools through ``nnx.max_pool``
instead of ``stn.layers.max_pool``), ``lax`` (``nnx_pool`` and every conv through plain
``lax.conv_general_dilated`` instead of ``stn._xla_cpu.conv_general_dilated``: the step before
either XLA:CPU fix), ``deterministic`` (the model as it is under XLA's
``--xla_gpu_deterministic_ops=true``; a GPU's cost of bit-identical steps), ``jnp_sampler``
(the model as it is with ``STN_NATIVE=0``: the pure-jnp sampler instead of the native CPU one,
i.e. the step without the native sampler).
Also printed: peak RSS growth of the first step, or on an accelerator peak growth of its
allocated memory (and XLA's temp + output bytes for JAX).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampler import (TUNED_MALLOC_ENV, jax_peak_growth_mb, time_ms,  # noqa: E402
                     torch_peak_growth_mb)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, SIZE, CLASSES, LR = 256, 42, 10, 0.01


def make_batch(seed: int = 0):
    """A fixed random batch (NHWC float32 images in [0, 1], int labels); same on both sides."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(BATCH, SIZE, SIZE, 1)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=(BATCH,)).astype(np.int32)
    return images, labels


# ---------------------------------------------------------------- JAX side


def _patch_conv_class():
    """An nnx module that computes a VALID conv as patches + matmul with the same parameters."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class PatchConv(nnx.Module):
        """``nnx.Conv`` (VALID, stride 1) as im2col patches and one dot: same math, other kernel."""

        def __init__(self, conv: nnx.Conv):
            self.kernel = conv.kernel  # [kh, kw, in, out]
            self.bias = conv.bias

        def __call__(self, x):
            kh, kw, cin, cout = self.kernel.value.shape
            patches = jax.lax.conv_general_dilated_patches(
                x, (kh, kw), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            # Patch features come out ordered (in, kh, kw): reorder the kernel to match.
            weights = jnp.transpose(self.kernel.value, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)
            return patches @ weights + self.bias.value

    return PatchConv


def build_jax_model(variant: str):
    """The project's ST-CNN for 42x42x1 inputs; ``patches`` swaps its convs for PatchConv."""
    sys.path.insert(0, ROOT)
    from flax import nnx

    from stn.experiments.models import mnist

    model = mnist.create("st_cnn", (SIZE, SIZE, 1), transform="affine", rngs=nnx.Rngs(0))
    convs = [*model.transformer.loc_net.convs, model.classifier.conv1, model.classifier.conv2]
    if variant in ("lax", "nnx_pool"):  # the pools as plain nnx.max_pool (select-and-scatter)
        from stn import layers

        def nnx_max_pool(x, size=2, padding="VALID"):
            return nnx.max_pool(x, (size, size), strides=(size, size), padding=padding)

        layers.max_pool = nnx_max_pool  # mnist and the loc net look it up at call time
    if variant == "lax":
        import jax

        for conv in convs:
            conv.conv_general_dilated = jax.lax.conv_general_dilated
    if variant == "patches":
        patch_conv = _patch_conv_class()
        loc = model.transformer.loc_net
        loc.convs = nnx.List([patch_conv(c) for c in loc.convs])
        cls = model.classifier
        cls.conv1, cls.conv2 = patch_conv(cls.conv1), patch_conv(cls.conv2)
    return model


def worker_jax(variant: str) -> dict:
    """Median step time of a jitted functional train step (split/merge, donated state)."""
    if variant == "jnp_sampler":  # before stn is imported: the sampler's pure-jnp path
        os.environ["STN_NATIVE"] = "0"
    if variant == "sharded2":  # before JAX starts: two host devices, the batch split over them
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_force_host_platform_device_count=2")
    if variant == "deterministic":  # XLA:GPU's deterministic scatter and reductions
        sys.path.insert(0, ROOT)
        from stn.experiments import host

        host.deterministic_gpu_ops()
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    model = build_jax_model(variant)
    graphdef, state = nnx.split(model)
    tx = optax.sgd(LR)
    opt_state = tx.init(state)
    images, labels = (jnp.asarray(a) for a in make_batch())
    if variant == "sharded2":
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(jax.devices(), ("data",))
        state, opt_state = jax.device_put((state, opt_state), NamedSharding(mesh, PartitionSpec()))
        images, labels = jax.device_put((images, labels),
                                        NamedSharding(mesh, PartitionSpec("data")))

    def loss_fn(state, images, labels):
        logits = nnx.merge(graphdef, state)(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(state, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(state, images, labels)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        state, opt_state, images, labels).compile()
    memory = compiled.memory_analysis()
    xla_mb = None
    if memory is not None:
        xla_mb = (memory.temp_size_in_bytes + memory.output_size_in_bytes) / 2**20
    carry = [state, opt_state]

    def run():
        carry[0], carry[1], loss = compiled(carry[0], carry[1], images, labels)
        loss.block_until_ready()

    peak = jax_peak_growth_mb(run)
    ms = time_ms(run, min_runs=10, min_seconds=3.0)
    return {"step_ms": ms, "peak_mb": peak, "xla_mb": xla_mb,
            "device": jax.devices()[0].platform}


# ---------------------------------------------------------------- torch side


def build_torch_model():
    """The same ST-CNN in PyTorch (NCHW): loc net, affine grid + grid_sample, CNN classifier."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class STCNN(nn.Module):
        def __init__(self):
            super().__init__()
            # Localisation net on a 2x down-sampled input (as stn.layers.ConvLocNet).
            self.loc_conv1 = nn.Conv2d(1, 20, 5)
            self.loc_conv2 = nn.Conv2d(20, 20, 5)
            self.loc_fc = nn.Linear(20 * 4 * 4, 20)
            self.loc_out = nn.Linear(20, 6)
            nn.init.zeros_(self.loc_out.weight)
            with torch.no_grad():
                self.loc_out.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
            # Classifier (as stn.experiments.models.mnist.CNN): 9x9 conv, pool, 7x7 conv, pool, linear.
            self.conv1 = nn.Conv2d(1, 64, 9)
            self.conv2 = nn.Conv2d(64, 64, 7)
            self.fc = nn.Linear(64 * 5 * 5, CLASSES)

        def forward(self, x):
            h = F.avg_pool2d(x, 2)
            h = F.max_pool2d(F.relu(self.loc_conv1(h)), 2)
            h = F.relu(self.loc_conv2(h))
            h = F.relu(self.loc_fc(h.flatten(1)))
            theta = self.loc_out(h).view(-1, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
            h = F.max_pool2d(F.relu(self.conv1(x)), 2)
            h = F.max_pool2d(F.relu(self.conv2(h)), 2)
            return self.fc(h.flatten(1))

    return STCNN()


def worker_torch() -> dict:
    """Median step time of an eager PyTorch train step (zero_grad, forward, backward, SGD)."""
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_torch_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    images, labels = make_batch()
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    labels = torch.from_numpy(labels).long().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        sync()

    with torch.no_grad():
        model(images)  # start the thread pool before measuring memory
    peak = torch_peak_growth_mb(run, device)
    ms = time_ms(run, min_runs=10, min_seconds=3.0)
    return {"step_ms": ms, "peak_mb": peak, "xla_mb": None, "device": device}


# ---------------------------------------------------------------- driver


def run_worker(side: str, env: dict | None) -> dict:
    """One fresh subprocess for one side; returns its JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="xla", help="comma list of JAX variants")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--malloc", choices=("default", "tuned"), default="default")
    args = parser.parse_args()

    if args.worker:
        result = worker_torch() if args.worker == "torch" else worker_jax(args.worker)
        print(json.dumps(result))
        return

    sides = [v for v in args.variants.split(",") if v]
    has_torch = subprocess.run([sys.executable, "-c", "import torch"],
                               capture_output=True).returncode == 0
    if has_torch and not args.no_torch:
        sides.append("torch")
    elif not args.no_torch:
        print("torch is not importable: its column is skipped", file=sys.stderr)
    env = TUNED_MALLOC_ENV if args.malloc == "tuned" else None
    results = {side: [] for side in sides}
    for round_index in range(args.rounds):
        for side in (sides if round_index % 2 == 0 else sides[::-1]):
            try:
                results[side].append(run_worker(side, env))
            except RuntimeError as error:  # one broken side must not lose the others
                print(error, file=sys.stderr)

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; batch {BATCH}, "
          f"{SIZE}x{SIZE}x1, SGD; {args.rounds} rounds; malloc {args.malloc}\n")
    print("| side | device | step ms | images/s | vs torch | peak MiB | XLA MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    torch_ms = (statistics.median(r["step_ms"] for r in results["torch"])
                if results.get("torch") else None)
    for side in sides:
        runs = results[side]
        if not runs:
            print(f"| {side} | failed (see stderr) |")
            continue
        ms = statistics.median(r["step_ms"] for r in runs)
        ratio = f"{torch_ms / ms:.2f}" if torch_ms else "-"
        xla, peak = runs[-1]["xla_mb"], runs[-1]["peak_mb"]
        name = side if side == "torch" else f"stn[{side}]"
        print(f"| {name} | {runs[-1]['device']} | {ms:.1f} | {1e3 * BATCH / ms:.0f} | {ratio} | "
              f"{'-' if peak is None else f'{peak:.0f}'} | {'-' if xla is None else f'{xla:.0f}'} |")
    print("\nvs torch = images/s ratio (>1: stn faster). peak MiB: growth of peak RSS during the "
          "first step (accelerator: of its allocated memory); XLA MiB: temp + output bytes of "
          "the compiled step.")


if __name__ == "__main__":
    main()
