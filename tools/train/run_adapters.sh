#!/usr/bin/env bash
# Retrain the shipped adapters (see tools/train/README.md, "Adapters"):
#   data + dequantized base → MoLA (examples/mola-sea) and SMoRA (examples/smora-qa) on the frozen
#   default model, 1 CPU thread each, ≤ ~6.5 min wall each → deno fmt of the written JSON.
#
#   bash tools/train/run_adapters.sh            # both
#   bash tools/train/run_adapters.sh sea        # one (sea | qa)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
DENO=${DENO:-deno}
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
  echo "train: $PY has no torch/numpy. apt-get install -y --no-install-recommends python3-torch libopenblas0-pthread" >&2
  exit 1
fi
"$DENO" run --allow-read --allow-write tools/train/adapter_prepare.ts
for d in "${@:-sea qa}"; do
  for dom in $d; do
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$PY" tools/train/train_adapter.py "$dom" |
      tee "tools/train/out/adapters/train_$dom.log"
  done
done
"$DENO" fmt examples/mola-sea examples/smora-qa
