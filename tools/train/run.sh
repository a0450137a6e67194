#!/usr/bin/env bash
# Retrain and re-embed the default model (see tools/train/README.md):
#   corpus + vocabulary + token ids → training (1 CPU thread, ≤ ~11 min) → GGUF + embedded module
# then check it against llama.cpp when the oracle is installed.
#
#   bash tools/train/run.sh            # Q8_0 (the committed default)
#   TYPE=F16 bash tools/train/run.sh   # F16 weights (≈ 3.9 MB)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
DENO=${DENO:-deno}
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
  echo "train: $PY has no torch/numpy. apt-get install -y python3-torch libopenblas0-pthread" >&2
  exit 1
fi

"$DENO" run --allow-read --allow-write tools/train/prepare.ts
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$PY" tools/train/train.py | tee tools/train/out/train_stdout.log
"$DENO" run --allow-read --allow-write tools/train/export.ts --type "${TYPE:-Q8_0}"
if [ -d tests/oracle/node_modules/node-llama-cpp ]; then
  "$DENO" run -A tools/train/check.ts
else
  echo "train: llama.cpp oracle not installed (npm ci --prefix tests/oracle): check skipped"
fi
