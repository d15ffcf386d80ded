#!/usr/bin/env bash
# One call on a CUDA machine: the CamVid selection study (benchmarks/segmentation_study.py) on fresh
# splits, the decoder trained on the GPU, many curves at once.
#
#   bash benchmarks/gpu_segmentation_study.sh CAMVID_DIR WEIGHTS [SECONDS]
#
# CAMVID_DIR holds train/ and test/ (../shared/data/camvid; val is not read), WEIGHTS the MobileNet V1
# checkpoint of ../shared/weights. Features are computed once on the device (cached), then every
# (strategy, split) curve and every split's full-pool reference runs as one job on WORKERS processes
# (default: cores - 2) of one torch thread each, the decoder on CUDA. Splits FIRST_SPLIT.. (default 22:
# splits 10-21 chose the defaults, so these are held out), budgets 5-160 masks, scored at half
# resolution as the CPU studies. No job starts after SECONDS (default 380) and the run is stopped 90 s
# later; rows are written as jobs finish, so a stopped run keeps every finished curve
# (benchmarks/results/segmentation_*_${TAG}.csv, TAG default gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
DATA=${1:?CAMVID_DIR}
WEIGHTS=${2:?WEIGHTS}
BUDGET=${3:-380}
WORKERS=${WORKERS:-$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))}
TAG=${TAG:-gpu}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
timeout -s INT $(( BUDGET + 90 )) $PY benchmarks/segmentation_study.py --data "$DATA" --weights "$WEIGHTS" \
    --strategies "${STRATEGIES:-random,class_targeted,coverage,oracle_classes,entropy,class_weighted}" \
    --budgets "${BUDGETS:-5,10,20,40,80,160}" --splits "${SPLITS:-16}" --first-split "${FIRST_SPLIT:-22}" --score-scale 2 \
    --threads 1 --workers "$WORKERS" --device "${DEVICE:-cuda}" --deadline "$BUDGET" --tag "$TAG"
rc=$?
# a stopped run writes no report: rebuild it from the rows it kept
[ -f "benchmarks/results/segmentation_study_${TAG}.md" ] || \
    $PY benchmarks/segmentation_study.py --report-from "$TAG" --tag "$TAG" --score-scale 2
exit $rc
