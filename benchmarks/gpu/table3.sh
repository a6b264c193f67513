#!/usr/bin/env bash
# Table 3 (CUB-200-2011) on one GPU: the four rows (CNN, 2xST-CNN 224, 2xST-CNN 448, 4xST-CNN
# 448) of configs/sweeps/table3.py one after another, then the table beside the paper's numbers.
# It downloads nothing: give it the official CUB_200_2011 folder and timm's inception_v3.tv_in1k
# weights (https://huggingface.co/timm/inception_v3.tv_in1k, model.safetensors).
#
#     bash benchmarks/gpu/table3.sh /data/CUB_200_2011 /weights/model.safetensors
#     OUT=runs/gpu_table3 SWEEP_ARGS=,steps=200,validation_size=0 \
#         bash benchmarks/gpu/table3.sh DATA WEIGHTS          # a short check of the script
#     SWEEP_ARGS=,smoke=true bash benchmarks/gpu/table3.sh x x   # no data at all: smoke rows
#
# Everything lands in $OUT: versions.txt, sweep.log, table3.md, table3.png, runs.tgz (each run's
# config, metrics, results and box pictures; no checkpoints).
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 CUB_200_2011_DIR INCEPTION_V3_SAFETENSORS" >&2
  exit 2
fi
data=$1
weights=$2
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu_table3}
work=${WORKDIR:-runs/gpu_work/table3}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
case "${SWEEP_ARGS:-}" in
  *smoke=true*) args="${SWEEP_ARGS#,}" ;;
  *) [ -d "$data" ] || { echo "no folder $data" >&2; exit 2; }
     [ -f "$weights" ] || { echo "no file $weights" >&2; exit 2; }
     args="data=$data,weights=$weights${SWEEP_ARGS:-}" ;;
esac

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $py -c "import sys, jax, flax; print(sys.version.split()[0], 'jax', jax.__version__, \
'flax', flax.__version__, jax.devices())"
} | tee "$out/versions.txt"

start=$(date +%s)
$py -m stn.experiments.sweeps --parallel=1 --workdir="$work" --sweep="configs/sweeps/table3.py:$args" \
  2>&1 | tee "$out/sweep.log"
echo "training wall: $(( $(date +%s) - start )) s" | tee -a "$out/sweep.log"
$py -m stn.experiments.results --workdir="$work" --table=3 --out_dir="$out" 2>&1 | tail -20 \
  | tee -a "$out/sweep.log"
tar czf "$out/runs.tgz" -C "$work" --exclude=checkpoints --exclude=tensorboard . 2>/dev/null
ls -la "$out"
