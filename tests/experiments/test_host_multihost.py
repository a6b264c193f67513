"""Multi-host training: two real processes on localhost through `jax.distributed` (gloo
collectives on CPU), launched as SLURM would (its environment variables), two CPU devices each.

An ST model trains a few steps with evaluations and pictures; both processes finish, only
process 0 writes the run's files, and the result equals one process with four devices and the
same global batch.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import helpers

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import helpers
    from stn.experiments import training
    config = helpers.small_config({data!r}, steps=6, batch_size=32, checkpoint_every=3, eval_every=3,
                             num_images=4)
    config.distributed = {distributed!r}
    results = training.train_and_evaluate(config, {workdir!r})
    import jax
    print("RESULT", json.dumps({{"process": jax.process_index(),
                                "processes": jax.process_count(),
                                "devices": jax.device_count(),
                                "test_error": results["test_error"],
                                "test_loss": results["test_loss"]}}), flush=True)
""")


def _free_port_in_slurm_range() -> int:
    """A free TCP port among those jax's SLURM detection derives from the job id."""
    for port in range(65535 - 2**12 + 1 + 1000, 65535):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "XLA_FLAGS", "JAX_COORDINATOR", "JAX_NUM_PROC",
                                "JAX_PROCESS_ID"))}
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


def _launch_env(launcher: str, process: int, port: int) -> dict:
    """Process `process` of 2 as SLURM starts it, or with jax's variables set by hand."""
    if launcher == "slurm":  # jax derives the coordinator port from the job id
        return _env(2, SLURM_JOB_ID=str(port - (65535 - 2**12 + 1)),
                    SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
                    SLURM_PROCID=str(process), SLURM_LOCALID=str(process),
                    SLURM_STEP_NUM_NODES="1")
    return _env(2, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(process))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["slurm", "env"])
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, launcher):
    data = helpers.write_pattern_set(tmp_path / "data", n_train=400, n_test=100)
    port = _free_port_in_slurm_range()
    multi = tmp_path / "two_processes"
    script = SCRIPT.format(tests=os.path.dirname(helpers.__file__), data=data, workdir=str(multi),
                           distributed=True)
    procs = [subprocess.Popen(
        [sys.executable, "-c", script], cwd=helpers.ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=_launch_env(launcher, i, port))
        for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    results = [_result(out) for out in outputs]
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["processes"] == 2 and r["devices"] == 4 for r in results)
    assert results[0]["test_error"] == results[1]["test_error"]
    assert (multi / "images" / "transformer_step_0000003.png").exists()
    on_disk = json.loads((multi / "results.json").read_text())
    assert on_disk["num_processes"] == 2 and on_disk["num_devices"] == 4

    single = tmp_path / "one_process"
    script = SCRIPT.format(tests=os.path.dirname(helpers.__file__), data=data, workdir=str(single),
                           distributed=False)
    proc = subprocess.run([sys.executable, "-c", script], cwd=helpers.ROOT, capture_output=True,
                          text=True, env=_env(4), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = _result(proc.stdout)
    assert one["devices"] == 4 and one["processes"] == 1
    assert one["test_error"] == results[0]["test_error"]
    assert one["test_loss"] == pytest.approx(results[0]["test_loss"], rel=1e-5)
    config = helpers.small_config(data)
    for a, b in zip(helpers.final_params(multi, config), helpers.final_params(single, config)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
