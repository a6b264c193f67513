#!/usr/bin/env bash
# The appendix tables (MNIST addition, co-localisation) at their `reduced` presets, every run of
# both sweeps side by side on one GPU: the same configs as the CPU commands of
# docs/reports/appendix.md, on the embedded sample.
#
#     bash benchmarks/gpu/appendix.sh                  # on a machine with a GPU
#     TRAIN_SECONDS=600 OUT=runs/gpu_appendix bash benchmarks/gpu/appendix.sh
#     ADD_ARGS=,lrs=0.003,0.01 COLOC_ARGS=,crop_sizes=28 ADD_PARALLEL=14 COLOC_PARALLEL=10 \
#         bash benchmarks/gpu/appendix.sh              # the validation comparisons
#
# Runs still going after TRAIN_SECONDS are stopped by SIGTERM (each saves its checkpoint; rerun
# the script to resume them). Everything lands in $OUT: versions.txt, sweep.log, the two tables
# (markdown and PNG) and runs.tgz (every run's config, metrics, results and pictures).
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu_appendix}
work=${WORKDIR:-runs/gpu_work/appendix}
seconds=${TRAIN_SECONDS:-360}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $py -c "import sys, jax, flax; print(sys.version.split()[0], 'jax', jax.__version__, \
'flax', flax.__version__, jax.devices())"
  nproc
} | tee "$out/versions.txt"

start=$(date +%s)
{
  timeout -s TERM "$seconds" $py -m stn.experiments.sweeps --parallel="${ADD_PARALLEL:-7}" \
    --workdir="$work/addition" --sweep="configs/sweeps/addition.py:reduced${ADD_ARGS:-}" &
  timeout -s TERM "$seconds" $py -m stn.experiments.sweeps --parallel="${COLOC_PARALLEL:-8}" \
    --workdir="$work/colocalisation" --sweep="configs/sweeps/colocalisation.py:reduced${COLOC_ARGS:-}" &
  wait
} 2>&1 | tee "$out/sweep.log"
echo "training wall: $(( $(date +%s) - start )) s" | tee -a "$out/sweep.log"

$py -m stn.experiments.results --workdir="$work/addition" --table=addition --out_dir="$out" 2>&1 \
  | tail -20 | tee -a "$out/sweep.log"
$py -m stn.experiments.results --workdir="$work/colocalisation" --table=colocalisation --out_dir="$out" 2>&1 \
  | tail -30 | tee -a "$out/sweep.log"
tar czf "$out/runs.tgz" -C "$work" --exclude=checkpoints --exclude=tensorboard . 2>/dev/null
ls -la "$out"
