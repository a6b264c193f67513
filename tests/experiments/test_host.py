"""stn.experiments.host: process-wide XLA settings, each checked in a fresh interpreter (they act once)."""
import os
import subprocess
import sys
import textwrap

import pytest

from stn.experiments import host
from helpers import ROOT


def run_python(code: str, xla_flags: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_deterministic_gpu_ops_adds_the_flag_once_and_keeps_other_flags():
    proc = run_python("""
        import os
        import jax.numpy as jnp
        from stn.experiments import host
        host.deterministic_gpu_ops()
        host.deterministic_gpu_ops()
        print(os.environ["XLA_FLAGS"])
        print(float(jnp.ones(3).sum()))  # XLA starts with the flag (a no-op on CPU)
    """, xla_flags="--xla_force_host_platform_device_count=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    flags, total = proc.stdout.split("\n")[:2]
    assert flags.split() == ["--xla_force_host_platform_device_count=2",
                             "--xla_gpu_deterministic_ops=true"]
    assert total == "3.0"


def test_deterministic_gpu_ops_after_jax_started_is_a_clear_error():
    proc = run_python("""
        import jax.numpy as jnp
        from stn.experiments import host
        jnp.ones(1).block_until_ready()
        try:
            host.deterministic_gpu_ops()
        except ValueError as e:
            print(e)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "deterministic_gpu_ops() must run before JAX executes anything"


def test_split_cpu_rejects_zero_devices():
    proc = run_python("""
        from stn.experiments import host
        try:
            host.split_cpu(0)
        except ValueError as e:
            print(e)
    """)
    assert proc.stdout.strip() == "the number of CPU devices must be >= 1, got 0"


@pytest.mark.parametrize("cores, batch, distributed, expected", [
    (2, 64, False, 2), (8, 64, False, 8), (6, 64, False, 4), (3, 63, False, 3),
    (5, 7, False, 1), (1, 64, False, 1), (8, 64, True, 1)])
def test_default_cpu_devices_is_one_per_core_that_divides_the_batch(
        monkeypatch, cores, batch, distributed, expected):
    """train.py's default: one CPU device per usable core, as many as split the batch evenly;
    one per process of a multi-process run."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert host.default_cpu_devices(batch, distributed) == expected
