#!/usr/bin/env bash
# Build the moe-edge WASM kernels reproducibly and regenerate wasm/pkg/.
#
#   bash wasm/build.sh [OUT_DIR]      (default OUT_DIR: wasm/pkg)
#
# Two modules from one crate:
#   moe_edge_kernels.wasm          simd128 (runs everywhere wasm SIMD does)
#   moe_edge_kernels_relaxed.wasm  + relaxed SIMD group kernels (c/relaxed.c),
#                                  chosen at instantiate time when the engine
#                                  validates it; results are bit-identical
#   moe_edge_kernels_mt.wasm, moe_edge_kernels_relaxed_mt.wasm
#                                  the same two with +atomics,+bulk-memory over an
#                                  imported shared memory (max 4 GiB) and an
#                                  exported __stack_pointer: the thread pool
#                                  (wasm/threads.ts) runs one instance per Worker
#                                  over one memory; used only when threads > 1
#
# Uses Debian's rustc 1.63 (wasm32-unknown-unknown std from
# libstd-rust-dev-wasm32), never the rustup toolchain that may be first on
# PATH, and Debian's clang-19 for the relaxed-SIMD C file (rustc 1.63 has no
# relaxed-SIMD intrinsics); rust-lld links the clang object. Output is
# byte-identical across machines and checkout paths: source paths are
# remapped, symbols and custom sections are stripped (-C strip=symbols drops
# the `name` and `producers` sections), one codegen unit, no debug info.
# wasm/check_artifacts.sh verifies the committed bytes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${1:-$HERE/pkg}"
RUSTC="${RUSTC:-/usr/bin/rustc}"
CLANG="${CLANG:-/usr/bin/clang-19}"
EXPECTED_RUSTC="rustc 1.63.0"
EXPECTED_CLANG="19.1.7"

if [ ! -x "$RUSTC" ]; then
  echo "build.sh: $RUSTC not found; install with: apt-get install -y rustc libstd-rust-dev-wasm32" >&2
  exit 1
fi
if [ ! -x "$CLANG" ]; then
  echo "build.sh: $CLANG not found; install with: apt-get install -y clang-19" >&2
  exit 1
fi
ver="$("$RUSTC" --version | cut -d' ' -f1-2)"
cver="$("$CLANG" --version | head -1 | grep -o '[0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*' | head -1)"
if { [ "$ver" != "$EXPECTED_RUSTC" ] || [ "$cver" != "$EXPECTED_CLANG" ]; } && [ "${MOE_EDGE_ANY_RUSTC:-}" != "1" ]; then
  echo "build.sh: expected '$EXPECTED_RUSTC' and clang $EXPECTED_CLANG for reproducible output," >&2
  echo "          found '$ver' and clang $cver" >&2
  echo "          (set MOE_EDGE_ANY_RUSTC=1 to build anyway; the bytes will differ)" >&2
  exit 1
fi

mkdir -p "$OUT_DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The relaxed-SIMD kernels: one freestanding object, no libc, no FP
# contraction (the f32 order must match the Rust kernels exactly).
"$CLANG" --target=wasm32-unknown-unknown -mcpu=mvp -msimd128 -mrelaxed-simd \
  -O3 -ffp-contract=off -ffreestanding -nostdlib -fno-builtin -g0 \
  -ffile-prefix-map="$HERE=/moe-edge/wasm" \
  -c "$HERE/kernels/c/relaxed.c" -o "$TMP/relaxed.o"
"$CLANG" --target=wasm32-unknown-unknown -mcpu=mvp -msimd128 -mrelaxed-simd -matomics -mbulk-memory \
  -O3 -ffp-contract=off -ffreestanding -nostdlib -fno-builtin -g0 \
  -ffile-prefix-map="$HERE=/moe-edge/wasm" \
  -c "$HERE/kernels/c/relaxed.c" -o "$TMP/relaxed_mt.o"
# The packed K-quant kernels (c/relaxed_kquants.c: Q6_K, Q2_K), same flags, their own objects.
"$CLANG" --target=wasm32-unknown-unknown -mcpu=mvp -msimd128 -mrelaxed-simd \
  -O3 -ffp-contract=off -ffreestanding -nostdlib -fno-builtin -g0 \
  -ffile-prefix-map="$HERE=/moe-edge/wasm" \
  -c "$HERE/kernels/c/relaxed_kquants.c" -o "$TMP/relaxed_kquants.o"
"$CLANG" --target=wasm32-unknown-unknown -mcpu=mvp -msimd128 -mrelaxed-simd -matomics -mbulk-memory \
  -O3 -ffp-contract=off -ffreestanding -nostdlib -fno-builtin -g0 \
  -ffile-prefix-map="$HERE=/moe-edge/wasm" \
  -c "$HERE/kernels/c/relaxed_kquants.c" -o "$TMP/relaxed_kquants_mt.o"

# build NAME FEATURES IMPORTS [extra rustc args...]   (IMPORTS: none | memory)
build() {
  local name="$1" features="$2" imports="$3"
  shift 3
  "$RUSTC" \
    --edition 2021 \
    --crate-name moe_edge_kernels \
    --crate-type cdylib \
    --target wasm32-unknown-unknown \
    -C opt-level=3 \
    -C target-feature="$features" \
    -C codegen-units=1 \
    -C panic=abort \
    -C debuginfo=0 \
    -C strip=symbols \
    --remap-path-prefix="$HERE/kernels=/moe-edge/wasm/kernels" \
    --remap-path-prefix="$HERE=/moe-edge/wasm" \
    "$@" \
    -o "$TMP/$name.wasm" \
    "$HERE/kernels/src/lib.rs"

  # Refuse output that carries custom sections (id 0) or imports (id 2): the
  # former could embed paths, the latter would break instantiation.
  python3 - "$TMP/$name.wasm" "$imports" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
allow_memory = sys.argv[2] == "memory"
memory_import = b"\x03env\x06memory\x02"  # module "env", field "memory", kind memory
assert b[:4] == b"\0asm", "not a wasm module"
i = 8
def leb(i):
    r = s = 0
    while True:
        x = b[i]; i += 1; r |= (x & 0x7F) << s; s += 7
        if x < 0x80:
            return r, i
while i < len(b):
    sid = b[i]; i += 1
    size, i = leb(i)
    if sid == 0:
        sys.exit("build.sh: unexpected custom section in output")
    if sid == 2:
        body = b[i:i + size]
        if not (allow_memory and body[0] == 1 and body[1:1 + len(memory_import)] == memory_import):
            sys.exit("build.sh: unexpected import section in output")
    i += size
PY

  local wasm="$TMP/$name.wasm"
  local sha size
  sha="$(sha256sum "$wasm" | cut -d' ' -f1)"
  size="$(wc -c < "$wasm" | tr -d ' ')"
  {
    echo "// Generated by wasm/build.sh from wasm/kernels/ — do not edit."
    echo "// deno-lint-ignore-file"
    echo ""
    echo "/** SHA-256 (hex) of the kernel module bytes. */"
    echo "export const WASM_SHA256: string = \"$sha\";"
    echo ""
    echo "/** Size of the kernel module in bytes. */"
    echo "export const WASM_SIZE: number = $size;"
    echo ""
    echo "/** The kernel module (\`$name.wasm\`), base64-encoded. */"
    printf 'export const WASM_BASE64: string =\n  "%s";\n' "$(base64 -w0 "$wasm")"
  } > "$TMP/${name}_bytes.ts"
  cp "$wasm" "$OUT_DIR/$name.wasm"
  cp "$TMP/${name}_bytes.ts" "$OUT_DIR/${name}_bytes.ts"
  echo "built $OUT_DIR/$name.wasm ($size bytes, sha256 $sha)"
}

build moe_edge_kernels +simd128 none
build moe_edge_kernels_relaxed +simd128 none --cfg moe_relaxed -C link-arg="$TMP/relaxed.o" -C link-arg="$TMP/relaxed_kquants.o"
# Shared-memory builds. The prebuilt core library lacks the atomics feature
# (it never touches memory concurrently), hence --no-check-features.
MT_LINK=(-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296
  -C link-arg=--no-check-features -C link-arg=--export=__stack_pointer)
build moe_edge_kernels_mt +simd128,+atomics,+bulk-memory,+mutable-globals memory "${MT_LINK[@]}"
build moe_edge_kernels_relaxed_mt +simd128,+atomics,+bulk-memory,+mutable-globals memory --cfg moe_relaxed \
  "${MT_LINK[@]}" -C link-arg="$TMP/relaxed_mt.o" -C link-arg="$TMP/relaxed_kquants_mt.o"
