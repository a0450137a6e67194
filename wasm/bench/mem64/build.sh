#!/usr/bin/env bash
# Build the Memory64 micro-benchmark kernel (matvec.c) for wasm32 and wasm64
# with clang-19 + lld-19. Not part of the CI build (wasm/build.sh); the
# outputs are committed next to this script so bench.ts runs without a
# toolchain.  Usage: bash wasm/bench/mem64/build.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLANG="${CLANG:-/usr/bin/clang-19}"
FLAGS=(-O3 -msimd128 -ffreestanding -nostdlib -fno-builtin -g0 -ffp-contract=off
  -Wl,--no-entry -Wl,--strip-all -Wl,--growable-table)
"$CLANG" --target=wasm32-unknown-unknown "${FLAGS[@]}" \
  -Wl,--max-memory=4294967296 -o "$HERE/matvec32.wasm" "$HERE/matvec.c"
"$CLANG" --target=wasm64-unknown-unknown "${FLAGS[@]}" \
  -Wl,--max-memory=17179869184 -o "$HERE/matvec64.wasm" "$HERE/matvec.c"
ls -l "$HERE"/matvec32.wasm "$HERE"/matvec64.wasm
