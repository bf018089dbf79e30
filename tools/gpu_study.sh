#!/usr/bin/env bash
# Run a study on a GPU machine and keep only what it measured (histories, final evaluations,
# summary), not the weights.
#
#   tools/gpu_study.sh [STUDY] [DATASET] [KEEP]
#
# STUDY: a name from dynat_lite/study.py (default gpu: ResNet-18 DYNAT vs PGD-AT on all of
# CIFAR-10, sized for about 12 minutes on a large GPU); DATASET: cifar10 (default) or the path of
# an .npz; KEEP: the folder that receives the JSON and summary files (default results/STUDY).
# Try it first on a CPU with the smoke study: tools/gpu_study.sh smoke synthetic /tmp/smoke-study
set -euo pipefail
study=${1:-gpu}
dataset=${2:-cifar10}
keep=${3:-results/$study}
work=runs/study-$study
python=${PYTHON:-python}

"$python" -c "import torch; print('torch', torch.__version__, '| cuda:', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
"$python" -m dynat_lite study "$study" --out "$work" --dataset "$dataset"
mkdir -p "$keep"
cp "$work"/study.json "$work"/summary.* "$keep"/
for run in "$work"/*/; do
  name=$(basename "$run")
  mkdir -p "$keep/$name"
  cp "$run"/history.json "$run"/final.json "$keep/$name"/
done
echo "kept the histories and metrics of $study in $keep"
