// Micro-kernel for the Memory64 decision (docs/memory.md): a q8_0 x q8_0
// matvec (llama.cpp block_q8_0: f16 scale + 32 int8), simd128, built twice from
// this one file: wasm32 and wasm64 (Memory64). Same code, same bytes; only the
// pointer width (and the engine's bounds-check strategy) differ.
#include <stdint.h>
#include <stddef.h>
#include <wasm_simd128.h>

#define QK 32
typedef struct {
  uint16_t d;
  int8_t qs[QK];
} __attribute__((packed)) block_q8_0;

extern unsigned char __heap_base;

static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t em = h & 0x7fff;
  union { uint32_t u; float f; } v;
  if (em >= 0x7c00) {
    v.u = sign | 0x7f800000 | ((em & 0x3ff) << 13);
  } else if (em >= 0x0400) {
    v.u = sign | ((em + (112 << 10)) << 13);
  } else {
    union { uint32_t u; float f; } m = {.u = 0x33800000u};  // 2^-24
    v.f = (float)em * m.f;
    v.u |= sign;
  }
  return v.f;
}

__attribute__((export_name("heap_base"))) size_t heap_base(void) {
  return (size_t)&__heap_base;
}

// Grow by `pages` 64 KiB pages; returns the old size in pages (or -1).
__attribute__((export_name("grow"))) size_t grow(size_t pages) {
  return __builtin_wasm_memory_grow(0, pages);
}

static inline v128_t dot16(v128_t w, v128_t x) {
  v128_t lo = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w), wasm_i16x8_extend_low_i8x16(x));
  v128_t hi = wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w), wasm_i16x8_extend_high_i8x16(x));
  return wasm_i32x4_add(lo, hi);
}

// out[r] = sum_b d_w[r,b] * d_x[b] * sum_i q_w[r,b,i] * q_x[b,i]
__attribute__((export_name("matvec"))) void matvec(const block_q8_0* w, const block_q8_0* x,
                                                   int rows, int cols, float* out) {
  const int nb = cols / QK;
  for (int r = 0; r < rows; r++) {
    const block_q8_0* wr = w + (size_t)r * (size_t)nb;
    v128_t acc = wasm_f32x4_splat(0.0f);
    for (int b = 0; b < nb; b++) {
      v128_t s = wasm_i32x4_add(dot16(wasm_v128_load(wr[b].qs), wasm_v128_load(x[b].qs)),
                                dot16(wasm_v128_load(wr[b].qs + 16), wasm_v128_load(x[b].qs + 16)));
      float d = f16_to_f32(wr[b].d) * f16_to_f32(x[b].d);
      acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_splat(d)));
    }
    out[r] = wasm_f32x4_extract_lane(acc, 0) + wasm_f32x4_extract_lane(acc, 1) +
             wasm_f32x4_extract_lane(acc, 2) + wasm_f32x4_extract_lane(acc, 3);
  }
}
