"""Data parallelism over every device of every process: one mesh axis, `data`.

Parameters and optimizer state are replicated; every entry of a batch is sharded along its
first (batch) axis. Host-side numpy arrays become global arrays with `global_array`, which works
the same in a single process and in a multi-process (multi-host) run, provided every process
passes the same numpy array (all processes read the same data).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, axis `data`."""
    return Mesh(np.asarray(jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of arrays held whole on every device (parameters, optimizer state)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The sharding of batch arrays: split along axis 0 over the mesh's `data` axis."""
    return NamedSharding(mesh, P(AXIS))


def global_array(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array laid out as `sharding` from the same numpy array on every process."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def global_tree(tree: Any, sharding: NamedSharding) -> Any:
    """`global_array` on every leaf of a pytree of numpy arrays (e.g. a batch dict)."""
    return jax.tree.map(lambda x: global_array(x, sharding), tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of a pytree of fully replicated global arrays (any process can read them)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def padded_batch(batch: dict[str, np.ndarray], size: int) -> tuple[dict[str, np.ndarray],
                                                                  np.ndarray]:
    """`batch` padded with zeros along axis 0 to `size` examples, and the float32 `[size]` mask
    that is 1 for real examples and 0 for padding."""
    count = len(next(iter(batch.values())))
    pad = size - count
    mask = np.concatenate([np.ones(count, np.float32), np.zeros(pad, np.float32)])
    if not pad:
        return batch, mask
    padded = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
              for k, v in batch.items()}
    return padded, mask


def initialize_distributed() -> None:
    """`jax.distributed.initialize()` for a multi-process run.

    On SLURM, Open MPI, Kubernetes and TPU pods jax finds the coordinator, the process count
    and this process's id itself. Elsewhere set `JAX_COORDINATOR_ADDRESS` (read by jax) and
    `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (read here) on every process.
    """
    count, index = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    if count is None or index is None:
        jax.distributed.initialize()
        return
    try:
        jax.distributed.initialize(num_processes=int(count), process_id=int(index))
    except ValueError as e:
        raise ValueError(f"JAX_NUM_PROCESSES={count!r}, JAX_PROCESS_ID={index!r}: {e}") from None
