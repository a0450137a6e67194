#!/usr/bin/env bash
# Fail if the committed wasm/pkg artifacts differ from a fresh build.
#   bash wasm/check_artifacts.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
bash "$HERE/build.sh" "$TMP" > /dev/null
status=0
for f in moe_edge_kernels.wasm moe_edge_kernels_bytes.ts moe_edge_kernels_relaxed.wasm moe_edge_kernels_relaxed_bytes.ts \
  moe_edge_kernels_mt.wasm moe_edge_kernels_mt_bytes.ts moe_edge_kernels_relaxed_mt.wasm moe_edge_kernels_relaxed_mt_bytes.ts; do
  if ! cmp -s "$TMP/$f" "$HERE/pkg/$f"; then
    echo "check_artifacts: wasm/pkg/$f is stale: it differs from a fresh build of wasm/kernels/src." >&2
    echo "  fresh:     $(sha256sum "$TMP/$f" | cut -d' ' -f1)" >&2
    if [ -f "$HERE/pkg/$f" ]; then
      echo "  committed: $(sha256sum "$HERE/pkg/$f" | cut -d' ' -f1)" >&2
    else
      echo "  committed: (missing)" >&2
    fi
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "check_artifacts: run 'bash wasm/build.sh' (or 'deno task build:wasm') and commit wasm/pkg/." >&2
  exit 1
fi
# The streaming store's SIMD hash (core/store/hash_wide.c) is embedded as base64 in hash_wide.ts:
# rebuild it with the command in its header and compare.
CLANG="${CLANG:-/usr/bin/clang-19}"
REPO="$(cd "$HERE/.." && pwd)"
"$CLANG" --target=wasm32 -O3 -msimd128 -nostdlib -Wl,--no-entry -Wl,--import-memory \
  -Wl,--strip-all -o "$TMP/hash_wide.wasm" "$REPO/core/store/hash_wide.c"
if ! grep -qF "\"$(base64 -w0 "$TMP/hash_wide.wasm")\"" "$REPO/core/store/hash_wide.ts"; then
  echo "check_artifacts: core/store/hash_wide.ts does not embed a fresh build of hash_wide.c" >&2
  echo "  (rebuild with the command in hash_wide.c's header and update WASM_B64)" >&2
  exit 1
fi
echo "check_artifacts: wasm/pkg matches a fresh build ($(cd "$HERE/pkg" && sha256sum moe_edge_kernels.wasm moe_edge_kernels_relaxed.wasm | cut -c1-16 | tr "\n" " "))"
