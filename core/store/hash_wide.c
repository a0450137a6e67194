/*
 * The body of hashWide (core/store/hash_wide.ts): 16 independent 32-bit
 * lanes, lane j taking word j of every 64-byte block, each round
 * acc = rotl(acc + w * P2, 13) * P1 (the hash64 round) — four v128
 * accumulators, so the multiply latency is hidden. The state (16 lanes) is
 * read from and written back to `state`; tails and the final fold are done
 * in TypeScript. Built (the bytes are embedded in hash_wide.ts):
 *
 *   clang-19 --target=wasm32 -O3 -msimd128 -nostdlib -Wl,--no-entry \
 *     -Wl,--import-memory -Wl,--strip-all -o hash_wide.wasm hash_wide.c
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define P1 0x9e3779b1u
#define P2 0x85ebca77u

static inline v128_t round4(v128_t acc, v128_t w, v128_t p1, v128_t p2) {
  acc = wasm_i32x4_add(acc, wasm_i32x4_mul(w, p2));
  acc = wasm_v128_or(wasm_i32x4_shl(acc, 13), wasm_u32x4_shr(acc, 19));
  return wasm_i32x4_mul(acc, p1);
}

__attribute__((export_name("lanes16")))
void lanes16(const uint8_t *p, uint32_t nblk, uint32_t *state) {
  v128_t a = wasm_v128_load(state), b = wasm_v128_load(state + 4);
  v128_t c = wasm_v128_load(state + 8), d = wasm_v128_load(state + 12);
  const v128_t p1 = wasm_i32x4_splat((int32_t)P1), p2 = wasm_i32x4_splat((int32_t)P2);
  for (uint32_t i = 0; i < nblk; i++, p += 64) {
    a = round4(a, wasm_v128_load(p), p1, p2);
    b = round4(b, wasm_v128_load(p + 16), p1, p2);
    c = round4(c, wasm_v128_load(p + 32), p1, p2);
    d = round4(d, wasm_v128_load(p + 48), p1, p2);
  }
  wasm_v128_store(state, a);
  wasm_v128_store(state + 4, b);
  wasm_v128_store(state + 8, c);
  wasm_v128_store(state + 12, d);
}
