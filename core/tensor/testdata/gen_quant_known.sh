#!/usr/bin/env bash
# Regenerate quant_known_llamacpp.json from llama.cpp's ggml-quants.c and
# ggml-cpu/quants.c (generic dot kernels) (the
# version node-llama-cpp bundles), compiled without FP contraction (-ffp-contract=off,
# x86-64 baseline SSE2: no FMA), the evaluation the TS reference quantizers follow.
#   LLAMA_CPP=/work/llama.cpp bash core/tensor/testdata/gen_quant_known.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
L="${LLAMA_CPP:-/work/llama.cpp}/ggml"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
CFLAGS="-O2 -ffp-contract=off -std=gnu11 -I$L/include -I$L/src"
gcc $CFLAGS -c "$L/src/ggml-quants.c" -o "$TMP/q.o"
gcc $CFLAGS -I"$L/src/ggml-cpu" -c "$L/src/ggml-cpu/quants.c" -o "$TMP/cq.o"
gcc $CFLAGS -c "$HERE/gen_quant_known.c" -o "$TMP/g.o"
gcc "$TMP/g.o" "$TMP/q.o" "$TMP/cq.o" -lm -o "$TMP/gen"
"$TMP/gen" > "$HERE/quant_known_llamacpp.json"
echo "wrote $HERE/quant_known_llamacpp.json"
npx -y deno@2.9.6 fmt "$HERE/quant_known_llamacpp.json" > /dev/null 2>&1 || true
