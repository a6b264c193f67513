"""`--launcher=slurm` without a cluster: stand-ins for `srun` and `sbatch` on PATH record the job
script that submitit writes, the test reads its `#SBATCH` lines, then runs each task of the
array as SLURM would (submitit's own entry point with SLURM's array variables), so the points
run end to end through the fake trainer."""
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from stn.experiments import sweeps

import helpers

ARRAY_ID = "4242"


@pytest.fixture
def slurm_bin(tmp_path):
    """A folder with `srun` (present: submitit checks for it) and an `sbatch` that keeps a copy
    of each script it is given in SBATCH_RECORD and answers as sbatch does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": "#!/bin/sh\nexit 0\n",
        "sbatch": f'#!/bin/sh\ncp "$1" "$SBATCH_RECORD"\necho "Submitted batch job {ARRAY_ID}"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _submit(tmp_path, slurm_bin, *args):
    env = dict(os.environ, PYTHONPATH=str(helpers.REPO), SBATCH_RECORD=str(tmp_path / "job.sh"),
               PATH=f"{slurm_bin}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "stn.experiments.sweeps", *args], cwd=helpers.REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def _sbatch_lines(script: str) -> dict[str, str]:
    """`#SBATCH --key=value` lines of a job script as {key: value} (flags without a value: '')."""
    lines = [line.split(None, 1)[1] for line in script.splitlines() if line.startswith("#SBATCH ")]
    return dict((line[2:].split("=", 1) + [""])[:2] for line in lines)


def _run_array_task(script: str, index: int) -> subprocess.CompletedProcess:
    """One task of the array as SLURM runs it: the script's command after `srun ...`, with the
    array's environment variables."""
    command = shlex.split(script.split("# command")[1].strip().splitlines()[-1])
    python = command.index(sys.executable)
    env = dict(os.environ, PYTHONPATH=str(helpers.REPO), SUBMITIT_EXECUTOR="slurm",
               SLURM_JOB_ID=str(5000 + index), SLURM_ARRAY_JOB_ID=ARRAY_ID,
               SLURM_ARRAY_TASK_ID=str(index), SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0")
    return subprocess.run(command[python:], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_slurm_submits_one_array_with_the_cluster_settings_and_its_tasks_run(tmp_path,
                                                                             slurm_bin):
    sweep = helpers.sweep_file(tmp_path, ["a", "b", "c"])
    workdir = tmp_path / "runs"
    out = _submit(tmp_path, slurm_bin, f"--sweep={sweep}", f"--workdir={workdir}",
                  f"--train_script={helpers.fake(tmp_path)}", "--launcher=slurm",
                  "--slurm_partition=gpu", "--slurm_time=90", "--slurm_gpus_per_task=2",
                  "--slurm_cpus_per_task=8", "--slurm_mem_gb=32",
                  "--slurm_array_parallelism=2", "--slurm_param=account=myproject",
                  "--slurm_param=constraint=a100", "--slurm_setup=module load cuda")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"submitted 3 point(s) to SLURM as job array {ARRAY_ID} (at most 2 at once)" in \
        out.stdout
    script = (tmp_path / "job.sh").read_text()
    options = _sbatch_lines(script)
    assert options["array"] == "0-2%2"  # one array of the three points, two at a time
    assert (options["partition"], options["time"], options["gres"]) == ("gpu", "90", "gpu:2")
    assert (options["cpus-per-task"], options["mem"]) == ("8", "32GB")
    assert (options["account"], options["constraint"]) == ("myproject", "a100")
    assert options["signal"] == "TERM@120"  # train.py saves a checkpoint on SIGTERM
    assert options["output"].startswith(str(workdir / sweeps.SUBMITIT_DIR))
    assert "\nmodule load cuda\n" in script.split("# command")[0]
    manifest = json.loads((workdir / sweeps.MANIFEST_FILE).read_text())
    assert [p["job"] for p in manifest["points"]] == [f"{ARRAY_ID}_{i}" for i in range(3)]
    assert helpers.calls(workdir) == []  # submitted, not run

    # The cluster runs the array: each task runs its own point's train.py command.
    for index in range(3):
        task = _run_array_task(script, index)
        assert task.returncode == 0, task.stdout + task.stderr
    assert sorted(helpers.calls(workdir)) == ["p0", "p1", "p2"]
    for i in range(3):
        result = json.loads((workdir / f"p{i}" / "results.json").read_text())
        assert result["config"]["seed"] == i
        assert "training p" in (workdir / f"p{i}" / "log.txt").read_text()
    # A rerun finds them finished and submits nothing.
    again = _submit(tmp_path, slurm_bin, f"--sweep={sweep}", f"--workdir={workdir}",
                    "--launcher=slurm")
    assert again.returncode == 0 and "0 done, 3 skipped" in again.stdout, again.stdout


def test_without_slurm_on_path_the_launcher_says_so_in_one_line(tmp_path):
    sweep = helpers.sweep_file(tmp_path, ["a"])
    env_path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                               if not os.path.exists(os.path.join(p, "srun")))
    out = subprocess.run([sys.executable, "-m", "stn.experiments.sweeps", f"--sweep={sweep}",
                          f"--workdir={tmp_path / 'runs'}", "--launcher=slurm"],
                         cwd=helpers.REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(helpers.REPO), PATH=env_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: --launcher=slurm needs SLURM's srun and sbatch on PATH (run it on the cluster's "
        "login node), or write the commands with --emit=FILE for another scheduler"]


def test_a_bad_slurm_param_is_one_line():
    with pytest.raises(ValueError, match=r"--slurm_param='account': expected KEY=VALUE"):
        sweeps.parse_params(["account"])
