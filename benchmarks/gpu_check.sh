#!/usr/bin/env bash
# The GPU checks and the measurements of docs/performance.md's benchmark tables, in one go (under 11 minutes on one
# GPU): first cuda_paths.py, a PASS / FAIL / SKIP line for each CUDA-only code path (--deterministic's networks and
# probe, this GPU's random state, faiss k-means on this GPU, a --deterministic run, the losses' learned parameters);
# then train_speed.py with and without --amp (all cores as DataLoader workers, CUB-size JPEGs), and eval_speed.py
# with --evaluate_on_gpu (faiss-gpu k-means). Results go to $OUT (default ./gpu_check); the exit status is 1 where a
# CUDA path failed.
#
#   bash benchmarks/gpu_check.sh                      # on a GPU machine
#   GPU_CHECK_PATHS_ONLY=1 bash benchmarks/gpu_check.sh   # the CUDA paths alone (about 2 minutes)
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh      # a few minutes' dry check of the script itself, on the CPU
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
WORKERS=$(nproc)

if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
    echo "dry check on the CPU: tiny settings, the numbers mean nothing"
    DEVICE=cpu
    SPEED=(--arch resnet18_normalize --image_size 32 --bs 8 --seconds 0.2 --photos 4 --photo_sizes 500x375
           --epoch_image_size 32 --epoch_per_class 2 --epoch_repeat 1 --workers 1 --threads 1)
    EVAL=(--quick)
    PATHS=(--cpu)
    LIMITS=(300 300 300 400)
else
    DEVICE=cuda
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    SPEED=(--arch resnet50_frozen_normalize --image_size 224 --bs 112 --seconds 6 --photos 48
           --photo_sizes 500x375 1200x900 --epoch_image_size 224 --epoch_repeat 6 --workers "$WORKERS")
    EVAL=()
    PATHS=()
    LIMITS=(200 150 100 180)  # seconds per step: 10.5 minutes at most in all
fi
"$PYTHON" -c "import torch, faiss; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(),
'| faiss GPUs', faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0)"

echo "== cuda paths (one PASS / FAIL / SKIP line each)"
PATHS_STATUS=0
timeout "${LIMITS[3]}" "$PYTHON" benchmarks/cuda_paths.py "${PATHS[@]}" 2> "$OUT/cuda_paths.err" \
    | tee "$OUT/cuda_paths.txt" || PATHS_STATUS=$?
if [[ "$PATHS_STATUS" != 0 ]]; then
    echo "cuda paths FAILED (exit $PATHS_STATUS; tracebacks in $OUT/cuda_paths.err)"
fi
if [[ "${GPU_CHECK_PATHS_ONLY:-0}" == 1 ]]; then
    exit "$PATHS_STATUS"
fi

echo "== train_speed --amp (pipeline, steps, epoch)"
timeout "${LIMITS[0]}" "$PYTHON" benchmarks/train_speed.py --device "$DEVICE" --amp "${SPEED[@]}" \
    --json "$OUT/train_speed_amp.json"
echo "== train_speed float32 (steps, epoch)"
timeout "${LIMITS[1]}" "$PYTHON" benchmarks/train_speed.py --device "$DEVICE" --parts steps epoch "${SPEED[@]}" \
    --json "$OUT/train_speed_fp32.json"
echo "== eval_speed --evaluate_on_gpu"
timeout "${LIMITS[2]}" "$PYTHON" benchmarks/eval_speed.py --evaluate_on_gpu "${EVAL[@]}" --json "$OUT/eval_speed_gpu.json"
echo "results in $OUT"
exit "$PATHS_STATUS"
