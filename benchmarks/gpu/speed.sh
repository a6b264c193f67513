#!/usr/bin/env bash
# The GPU checks in one command, sized for a short lease of one GPU:
#   1. benchmarks/sampler.py: stn.sampling.sample (and under XLA's deterministic-ops flag, and the
#      reference "gather" path) against torch CUDA grid_sample, with determinism and gradients;
#   2. benchmarks/train_step.py: the MNIST ST-CNN step against the same net in torch CUDA;
#   3. the paper's MNIST RTS ST-CNN recipe (configs/mnist.py:rts,st_cnn,affine: 150k SGD steps of
#      batch 256, lr / 10 every 50k) on the embedded sample. If the step time measured in 2 says
#      that 150k steps do not fit in TRAIN_SECONDS, the same recipe is compressed to the steps
#      that fit (lr / 10 after each third); a run still unfinished at TRAIN_SECONDS is stopped
#      (SIGTERM saves its checkpoint) and evaluated with eval.py.
# Everything lands in $OUT (default runs/gpu): sampler.md, train_step.md, train.log,
# results.json, metrics.jsonl, transformer.png, versions.txt.
#
#     bash benchmarks/gpu/speed.sh                               # on a machine with a GPU
#     ROUNDS=3 TRAIN_SECONDS=3600 OUT=runs/gpu bash benchmarks/gpu/speed.sh
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-runs/gpu}
workdir=${WORKDIR:-runs/gpu_work/speed}
rounds=${ROUNDS:-1}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python -c "import sys, jax, flax, optax, orbax.checkpoint as o; print(sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', \
o.__version__, jax.devices())"
  python -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} | tee "$out/versions.txt"

echo "== sampler"
timeout "${SAMPLER_SECONDS:-240}" python benchmarks/sampler.py --rounds "$rounds" \
  --sides stn,stn_det,torch --methods gather 2>&1 | tee "$out/sampler.md"
echo "== train step"
timeout "${STEP_SECONDS:-120}" python benchmarks/train_step.py --rounds "$rounds" \
  --variants xla,deterministic 2>&1 | tee "$out/train_step.md"

echo "== training"
train_seconds=${TRAIN_SECONDS:-330}
# Steps that fit: the bare step's ms (stn[xla] row) plus a margin for the batch, dispatch, a
# minute of compiling, evaluations and checkpoints. Multiples of 3000, at most the paper's 150k.
steps=$(python - "$out/train_step.md" "$train_seconds" <<'EOF'
import re, sys
text, seconds = open(sys.argv[1]).read(), float(sys.argv[2])
found = re.search(r"\| stn\[xla\] \| \w+ \| ([0-9.]+) \|", text)
per_step_s = (1.3 * float(found.group(1)) + 0.3) / 1e3 if found else 0.0
fit = int((seconds - 60) / per_step_s) // 3000 * 3000 if per_step_s else 150_000
print(max(3000, min(150_000, fit)))
EOF
)
echo "training for $steps steps (paper: 150000)" | tee "$out/train.log"
timeout -s TERM "$train_seconds" python train.py \
  --config=configs/mnist.py:rts,st_cnn,affine --config.data.source=sample \
  --config.train.steps="$steps" --config.train.lr_decay_every=$((steps / 3)) \
  --config.train.eval_every=$((steps / 5)) --config.train.checkpoint_every=$((steps / 5)) \
  --workdir="$workdir" ${TRAIN_ARGS:-} 2>&1 | tee -a "$out/train.log"
if [ ! -f "$workdir/results.json" ]; then  # stopped by the time limit: evaluate its checkpoint
  timeout 120 python eval.py --config=configs/mnist.py:rts,st_cnn,affine \
    --config.data.source=sample --workdir="$workdir" ${TRAIN_ARGS:-} 2>&1 | tee -a "$out/train.log"
fi
for f in results.json metrics.jsonl; do
  [ -f "$workdir/$f" ] && cp "$workdir/$f" "$out/"
done
[ -f "$workdir/images/transformer_latest.png" ] && cp "$workdir/images/transformer_latest.png" \
  "$out/transformer.png"
ls -la "$out"
