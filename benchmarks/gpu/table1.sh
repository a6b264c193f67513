#!/usr/bin/env bash
# Table 1's RTS column with the paper's recipe on one GPU, its 8 runs side by side, plus the
# RTS CNN and ST-CNN with the CPU recipe run long (the "one cell followed further" curves).
#
#     bash benchmarks/gpu/table1.sh                    # on a machine with a GPU
#     TRAIN_SECONDS=3600 OUT=runs/gpu_table1 bash benchmarks/gpu/table1.sh
#     PAPER_ARGS=,steps=30,eval_every=10 LONG_ARGS=:steps=20,batch=32 PARALLEL=2 \
#         TRAIN_SECONDS=60 bash benchmarks/gpu/table1.sh        # a smoke run of the script
#
# Paper recipe (configs/mnist.py defaults): SGD, batch 256, lr 0.01 / 10 every 50k, 150k steps,
# on the embedded sample (7,000 training digits, 1,000 held out for validation; the GPU machine
# cannot download full MNIST). Validation and test error every 10k steps. Runs still going after
# TRAIN_SECONDS are stopped by SIGTERM (each saves its checkpoint) and evaluated with eval.py,
# so the table says how far each got. Everything lands in $OUT: versions.txt, sweep.log,
# table1.md, table1.png, runs.tgz (every run's config, metrics, results and pictures).
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu_table1}
work=${WORKDIR:-runs/gpu_work/table1}
seconds=${TRAIN_SECONDS:-420}
py=${PYTHON:-python3}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $py -c "import sys, jax, flax, optax, orbax.checkpoint as o; print(sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', \
o.__version__, jax.devices())"
  nproc
} | tee "$out/versions.txt"

start=$(date +%s)
{
  timeout -s TERM "$seconds" $py -m stn.experiments.sweeps --parallel="${PARALLEL:-8}" \
    --workdir="$work/paper" --sweep="configs/sweeps/table1.py:data=sample,columns=rts,\
eval_every=10000,test_curves=true${PAPER_ARGS:-}" &
  timeout -s TERM "$seconds" $py -m stn.experiments.sweeps --parallel=2 --workdir="$work/cpu_recipe_long" \
    --sweep="configs/sweeps/table1_long.py${LONG_ARGS:-}" &
  wait
} 2>&1 | tee "$out/sweep.log"
echo "training wall: $(( $(date +%s) - start )) s" | tee -a "$out/sweep.log"

# Runs the time limit stopped: evaluate their last checkpoint on the test set, all at once.
for run in "$work"/*/*/; do
  [ -f "$run/results.json" ] || [ ! -d "$run/checkpoints" ] && continue
  name=$(basename "$run")
  echo "== $name stopped early at step $(ls "$run/checkpoints" | sort -n | tail -1)" \
    | tee -a "$out/sweep.log"
  timeout 150 $py eval.py --workdir="$run" > "$run/eval_stopped.log" 2>&1 &
done
wait
tail -n 2 "$work"/*/*/eval_stopped.log 2>/dev/null | tee -a "$out/sweep.log"

$py -m stn.experiments.results --workdir="$work/paper" --table=1 --out_dir="$out" 2>&1 | tail -20 \
  | tee -a "$out/sweep.log"
$py -m stn.experiments.results --workdir="$work" --table=curves --out_dir="$out" > /dev/null 2>&1
tar czf "$out/runs.tgz" -C "$work" --exclude=checkpoints --exclude=tensorboard . 2>/dev/null
ls -la "$out"
