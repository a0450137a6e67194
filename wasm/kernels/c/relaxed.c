/*
 * Relaxed-SIMD group kernels of moe-edge (built only into
 * moe_edge_kernels_relaxed.wasm; see wasm/kernels/src/relaxed.rs).
 *
 * Each function is the twin of a simd128 kernel in wasm/kernels/src/group.rs
 * (same packed group, same i32 lane partials, same f32 order): it computes
 * 4 rows × 1 token of group g0 into o0[0..4] and, when g1 is not null, of
 * group g1 into o1[0..4] in the same pass (two independent memory streams
 * roughly double what one core pulls from DRAM). The only relaxed
 * instruction is i16x8.relaxed_dot_i8x16_i7x16_s, always with a 7-bit
 * second operand (nibbles or |a|), where it is deterministic and exact; its
 * i16 pair sums are widened to the same i32 lane partials with
 * i32x4.dot_i16x8_s against ones. (The fused i32x4 form is one vpdpbusd
 * only with AVX-VNNI; without it — Zen 4 has AVX512-VNNI only — V8 emits
 * pmaddubsw + a rebuilt ones vector + pmaddwd + paddd per call: measured
 * 1.2–1.5× slower for these kernels.)
 *
 * Built with clang-19: -O3 -mcpu=mvp -msimd128 -mrelaxed-simd, no libc.
 */
#include <stdint.h>
#include <wasm_simd128.h>

#define DOT(a, b, c) wasm_i32x4_relaxed_dot_i8x16_i7x16_add((a), (b), (c))

/* Which dot form the kernels use (both give the same i32 lane partials, so
 * the same bits): 0 = split (i16 dot + dot_i16x8 against ones; fastest where
 * V8 has no AVX-VNNI, e.g. Zen 4), 1 = fused i32x4.relaxed_dot_…_add_s (one
 * vpdpbusd with AVX-VNNI). The host picks by timing both
 * (wasm/pkg/moe_edge_kernels.ts); in the shared-memory build one store
 * serves every thread's instance. */
static volatile uint32_t rx_fused = 0;

void rx_set_fused(uint32_t f) { rx_fused = f ? 1u : 0u; }
uint32_t rx_get_fused(void) { return rx_fused; }

/* i16x8.relaxed_dot_i8x16_i7x16_s: adjacent byte pairs → i16 (x86: one
 * pmaddubsw; exact, no saturation, for a 7-bit second operand and |a| ≤ 128:
 * |pair| ≤ 2·127·128 < 2^15). The i32x4 form above costs V8 five
 * instructions without AVX-VNNI (it rebuilds the i16 ones each time). */
#define RD16(a, b) wasm_i16x8_relaxed_dot_i8x16_i7x16((a), (b))
/* i16 pairs → i32 lanes (x86: pmaddwd with a ones vector). */
#define PAIRS(v, one) wasm_i32x4_dot_i16x8((v), (one))

/* A splat of i16 1 the compiler cannot fold into a v128.const (V8 rebuilds
 * constants inside loops): read through a volatile slot once per call. */
static inline v128_t ones16(void) {
  volatile v128_t v = wasm_i16x8_splat(1);
  return v;
}

/* v through a volatile stack slot: computed once per call and kept (clang would
 * otherwise put v128.const inside the loops, which V8 rebuilds from immediates
 * on every iteration: measured 14% of the packed MXFP4 decode kernel). */
static inline v128_t pin(v128_t v) {
  volatile v128_t t = v;
  return t;
}

/* Four finite f16 → f32x4 (group.rs `scales4`). */
static inline v128_t scales4(const uint8_t *p, v128_t m, v128_t k) {
  v128_t x = wasm_i32x4_load16x4(p);
  return wasm_f32x4_mul(wasm_v128_and(wasm_i32x4_shl(x, 13), m), k);
}

/* acc += f32(s) · dd[r] (group.rs `accumulate4`). */
static inline v128_t acc_lane(v128_t acc, v128_t s, v128_t bcast) {
  return wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), bcast));
}
#define B0(v) wasm_i32x4_shuffle((v), (v), 0, 0, 0, 0)
#define B1(v) wasm_i32x4_shuffle((v), (v), 1, 1, 1, 1)
#define B2(v) wasm_i32x4_shuffle((v), (v), 2, 2, 2, 2)
#define B3(v) wasm_i32x4_shuffle((v), (v), 3, 3, 3, 3)

/* simd.rs `hsum_f32`: (l0 + l2) + (l1 + l3). */
static inline float hsum(v128_t v) {
  float a = wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 2);
  float b = wasm_f32x4_extract_lane(v, 1) + wasm_f32x4_extract_lane(v, 3);
  return a + b;
}

static inline uint32_t align16(uint32_t n) { return (n + 15u) & ~15u; }

/* acc[r] += f32(s[r]) · dd[r] for the 4 rows of a group. */
#define ACC4(acc, s, dd)                          \
  do {                                            \
    (acc)[0] = acc_lane((acc)[0], (s)[0], B0(dd)); \
    (acc)[1] = acc_lane((acc)[1], (s)[1], B1(dd)); \
    (acc)[2] = acc_lane((acc)[2], (s)[2], B2(dd)); \
    (acc)[3] = acc_lane((acc)[3], (s)[3], B3(dd)); \
  } while (0)

#define CONSTS()                                                                          \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f)); \
  const v128_t z = wasm_i32x4_splat(0);                                                   \
  (void)z

/* Q8_0: x = w ^ m (m = a < 0: x = −w − 1 there) times |a| (7-bit), plus the
 * block's c8 = Σ |a| over negative a per lane: Σ x·|a| + c8 = Σ w·a, exactly
 * (|x| ≤ 128, so each i16 pair sum stays below 2^15). */
static inline __attribute__((always_inline)) void q8_0_body(const int F, const int G, const uint8_t *const g[2], uint32_t nb,
                                                          const uint8_t *a, float *const o[2]) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  CONSTS();
  const v128_t one = ones16();
  v128_t acc[2][4];
  for (int k = 0; k < G; k++)
    for (int r = 0; r < 4; r++) acc[k][r] = wasm_f32x4_splat(0.0f);
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *yb = y + 80 * i;
    v128_t a0 = wasm_v128_load(yb), a1 = wasm_v128_load(yb + 16);
    v128_t m0 = wasm_v128_load(yb + 32), m1 = wasm_v128_load(yb + 48), c8 = wasm_v128_load(yb + 64);
    v128_t ds = wasm_f32x4_splat(da[i]);
    for (int k = 0; k < G; k++) {
      v128_t dd = wasm_f32x4_mul(scales4(g[k] + 8 * i, sm, sk), ds);
      const uint8_t *q = g[k] + 8 * nb + 128 * i;
      v128_t s[4];
      for (int r = 0; r < 4; r++) {
        v128_t w0 = wasm_v128_load(q + 32 * r), w1 = wasm_v128_load(q + 32 * r + 16);
        v128_t x0 = wasm_v128_xor(w0, m0), x1 = wasm_v128_xor(w1, m1);
        s[r] = F ? DOT(x1, a1, DOT(x0, a0, c8))
                 : wasm_i32x4_add(wasm_i32x4_add(PAIRS(RD16(x0, a0), one), c8), PAIRS(RD16(x1, a1), one));
      }
      ACC4(acc[k], s, dd);
    }
  }
  for (int k = 0; k < G; k++)
    for (int r = 0; r < 4; r++) o[k][r] = hsum(acc[k][r]);
}

/* Q4_0, rows in lanes (wasm/kernels/src/packed.rs, relaxed build): per block i one
 * contiguous 72-byte chunk per group at 72i: d: f16[4], then four quant vectors V_j at
 * 8 + 16j whose bytes 4r..4r+3 are row r's standard quant bytes 4j..4j+3 (low nibbles:
 * elements 4j..4j+3, high nibbles: 16+4j..16+4j+3; the packed IQ4_NL layout). The
 * unsigned nibbles (7-bit) are the i7 operand of i16x8.relaxed_dot_i8x16_i7x16_s
 * against the activation's 4-element group j brought to all four lanes by
 * v128.load32_splat; the eight pair-sum vectors of a block add up in i16 (|·| ≤
 * 16·15·128 < 2^15: exact), are widened once by i32x4.dot_i16x8_s against ones and
 * offset by c = −8·Σa (an i32x4 splat in the expanded block), so lane r is row r's
 * exact block sum Σ(q − 8)·a; one convert, one multiply by (d_w·d_a) and one add per
 * block serve the 4 rows: ggml's generic order (sumf += f32(sumi)·(d_w·d_a)), as
 * tiles.rs computes Q4_0 in this build (bit-identical). Per token and 4 rows × 32
 * elements: 8 dots, 7 i16 adds, 1 widen, 1 add, convert, 2 multiplies, 1 add — the
 * weight unpack (and, shift, and per V_j) is shared by every token of a tile. */
#define Q4R_YB 48u
/* p + the i16 pair sums of group j of the expanded block yb against nibbles lo / hi. */
#define Q4R_RUN(p, lo, hi, yb, j)                                                             \
  wasm_i16x8_add(wasm_i16x8_add((p), RD16(wasm_v128_load32_splat((yb) + 4 * (j)), (lo))),     \
                 RD16(wasm_v128_load32_splat((yb) + 16 + 4 * (j)), (hi)))
/* The same with the fused form: s (i32 lanes) + the dot products. */
#define Q4R_RUNF(s, lo, hi, yb, j) \
  DOT(wasm_v128_load32_splat((yb) + 16 + 4 * (j)), (hi), DOT(wasm_v128_load32_splat((yb) + 4 * (j)), (lo), (s)))

/* Exact block sums (lane r = row r) of the 4 rows whose quant vectors are V[0..4]
 * × expanded block yb. */
static inline __attribute__((always_inline)) v128_t q4r_block(const int F, const v128_t V[4], const uint8_t *yb, v128_t m,
                                                             v128_t one) {
  v128_t c = wasm_v128_load(yb + 32);
  if (F) {
    v128_t s = c;
    for (int j = 0; j < 4; j++) s = Q4R_RUNF(s, wasm_v128_and(V[j], m), wasm_v128_and(wasm_u16x8_shr(V[j], 4), m), yb, j);
    return s;
  }
  v128_t p = wasm_i16x8_splat(0);
  for (int j = 0; j < 4; j++) p = Q4R_RUN(p, wasm_v128_and(V[j], m), wasm_v128_and(wasm_u16x8_shr(V[j], 4), m), yb, j);
  return wasm_i32x4_add(PAIRS(p, one), c);
}

static inline __attribute__((always_inline)) void q4_0_body(const int F, const int G, const uint8_t *const g[2], uint32_t nb,
                                                          const uint8_t *a, float *const o[2]) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  CONSTS();
  const v128_t m = pin(wasm_i8x16_splat(0x0f));
  const v128_t one = ones16();
  v128_t acc[2];
  for (int k = 0; k < G; k++) acc[k] = wasm_f32x4_splat(0.0f);
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *yb = y + Q4R_YB * i;
    v128_t ds = wasm_f32x4_splat(da[i]);
    for (int k = 0; k < G; k++) {
      const uint8_t *q = g[k] + 72 * i;
      v128_t V[4];
      for (int j = 0; j < 4; j++) V[j] = wasm_v128_load(q + 8 + 16 * j);
      v128_t s = q4r_block(F, V, yb, m, one);
      acc[k] = acc_lane(acc[k], s, wasm_f32x4_mul(scales4(q, sm, sk), ds));
    }
  }
  for (int k = 0; k < G; k++) wasm_v128_store(o[k], acc[k]);
}

/* Q4_K: per chunk two sub-block partials, kept as i16 pair sums (|x| ≤
 * 4·15·128), each scaled by one i32x4.dot_i16x8_s against its splat 6-bit
 * scale (scales decoded once per super-block to u16); mins as in group.rs. */
static inline __attribute__((always_inline)) void q4_k_body(const int F, const int G, const uint8_t *const g[2], uint32_t nb,
                                                          const uint8_t *a, float *const o[2]) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  CONSTS();
  const v128_t m4 = pin(wasm_i8x16_splat(0x0f)), m30 = pin(wasm_i8x16_splat(0x30));
  const v128_t one = ones16();
  const v128_t lo16 = pin(wasm_u32x4_splat(0xffffu));
  v128_t acc[2][4], accm[2];
  uint16_t scb[2][32] __attribute__((aligned(16)));
  for (int k = 0; k < G; k++) {
    accm[k] = wasm_f32x4_splat(0.0f);
    for (int r = 0; r < 4; r++) acc[k][r] = accm[k];
  }
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *yb = y + 320 * i;
    v128_t yd = wasm_f32x4_splat(da[i]);
    v128_t dd[2], is[2][4];
    for (int k = 0; k < G; k++) {
      const uint8_t *gb = g[k] + 576 * i;
      dd[k] = wasm_f32x4_mul(scales4(gb, sm, sk), yd);
      v128_t dm = wasm_f32x4_mul(scales4(gb + 8, sm, sk), yd);
      v128_t v0 = wasm_v128_load(gb + 16), v1 = wasm_v128_load(gb + 32), v2 = wasm_v128_load(gb + 48);
      v128_t sca = wasm_v128_or(wasm_v128_and(v0, m4), wasm_v128_and(wasm_i16x8_shl(v2, 4), m30));
      v128_t scbv = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(v0, 4), m4), wasm_v128_and(wasm_i16x8_shl(v2, 2), m30));
      v128_t mna = wasm_v128_or(wasm_v128_and(v1, m4), wasm_v128_and(v2, m30));
      v128_t mnb = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(v1, 4), m4), wasm_v128_and(wasm_u16x8_shr(v2, 2), m30));
      wasm_v128_store(scb[k], wasm_u16x8_extend_low_u8x16(sca));
      wasm_v128_store(scb[k] + 8, wasm_u16x8_extend_high_u8x16(sca));
      wasm_v128_store(scb[k] + 16, wasm_u16x8_extend_low_u8x16(scbv));
      wasm_v128_store(scb[k] + 24, wasm_u16x8_extend_high_u8x16(scbv));
      v128_t mins = wasm_i32x4_add(
          wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mna), wasm_v128_load(yb)),
                         wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mna), wasm_v128_load(yb + 16))),
          wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mnb), wasm_v128_load(yb + 32)),
                         wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mnb), wasm_v128_load(yb + 48))));
      accm[k] = wasm_f32x4_add(accm[k], wasm_f32x4_mul(dm, wasm_f32x4_convert_i32x4(mins)));
      for (int r = 0; r < 4; r++) is[k][r] = z;
    }
    /* Group by group within the super-block: fewer live registers; both
     * streams still advance every super-block. */
    for (int k = 0; k < G; k++) {
      for (uint32_t c = 0; c < 4; c++) {
        const uint8_t *p = yb + 64 + 64 * c;
        v128_t l0 = wasm_v128_load(p), l1 = wasm_v128_load(p + 16);
        v128_t h0 = wasm_v128_load(p + 32), h1 = wasm_v128_load(p + 48);
        const uint8_t *run = g[k] + 576 * i + 64 + 128 * c;
        for (int r = 0; r < 4; r++) {
          v128_t w0 = wasm_v128_load(run + 32 * r), w1 = wasm_v128_load(run + 32 * r + 16);
          v128_t b0 = wasm_v128_and(w0, m4), b1 = wasm_v128_and(w1, m4);
          v128_t c0 = wasm_v128_and(wasm_u16x8_shr(w0, 4), m4), c1 = wasm_v128_and(wasm_u16x8_shr(w1, 4), m4);
          if (F) {
            /* (p0, p1) as i16 pairs per lane (|p| < 2^15), one dot against (sc0, sc1) */
            v128_t p0 = DOT(l1, b1, DOT(l0, b0, z)), p1 = DOT(h1, c1, DOT(h0, c0, z));
            v128_t pp = wasm_v128_or(wasm_v128_and(p0, lo16), wasm_i32x4_shl(p1, 16));
            is[k][r] = wasm_i32x4_add(is[k][r], wasm_i32x4_dot_i16x8(pp, wasm_v128_load32_splat(scb[k] + 8 * r + 2 * c)));
          } else {
            v128_t p0 = wasm_i16x8_add(RD16(l0, b0), RD16(l1, b1));
            v128_t p1 = wasm_i16x8_add(RD16(h0, c0), RD16(h1, c1));
            v128_t s0 = wasm_v128_load16_splat(scb[k] + 8 * r + 2 * c);
            v128_t s1 = wasm_v128_load16_splat(scb[k] + 8 * r + 2 * c + 1);
            is[k][r] = wasm_i32x4_add(is[k][r], wasm_i32x4_add(wasm_i32x4_dot_i16x8(p0, s0), wasm_i32x4_dot_i16x8(p1, s1)));
          }
        }
      }
    }
    for (int k = 0; k < G; k++) ACC4(acc[k], is[k], dd[k]);
  }
  for (int k = 0; k < G; k++) {
    float mr[4] __attribute__((aligned(16)));
    wasm_v128_store(mr, accm[k]);
    for (int r = 0; r < 4; r++) o[k][r] = hsum(acc[k][r]) - mr[r];
  }
}

#define EXPORT(name, body)                                                                           \
  void name(const uint8_t *g0, const uint8_t *g1, uint32_t nb, const uint8_t *a, float *o0, float *o1) { \
    const uint8_t *const g[2] = {g0, g1};                                                            \
    float *const o[2] = {o0, o1};                                                                    \
    if (rx_fused) {                                                                                  \
      if (g1)                                                                                        \
        body(1, 2, g, nb, a, o);                                                                     \
      else                                                                                           \
        body(1, 1, g, nb, a, o);                                                                     \
    } else if (g1)                                                                                   \
      body(0, 2, g, nb, a, o);                                                                       \
    else                                                                                             \
      body(0, 1, g, nb, a, o);                                                                       \
  }

EXPORT(rx_group_q8_0, q8_0_body)
EXPORT(rx_group_q4_0, q4_0_body)

/* Q4_K, split form: one group at a time (the packed-kernel A/B on 2048×2048
 * matrices: 0.92× the time of both groups per super-block; Q4_0 and Q8_0 are
 * 1.3–1.45× slower that way, so they keep EXPORT's two streams). */
void rx_group_q4_k(const uint8_t *g0, const uint8_t *g1, uint32_t nb, const uint8_t *a, float *o0, float *o1) {
  const uint8_t *const g[2] = {g0, g1};
  float *const o[2] = {o0, o1};
  if (rx_fused) {
    if (g1)
      q4_k_body(1, 2, g, nb, a, o);
    else
      q4_k_body(1, 1, g, nb, a, o);
  } else {
    q4_k_body(0, 1, g, nb, a, o);
    if (g1) q4_k_body(0, 1, g + 1, nb, a, o + 1);
  }
}

/* ---- token tiles (prefill): one group × T ≤ 4 tokens per call; the weight
 * nibbles are extracted once and reused for every token. Same per-(row,
 * token) order as the one-token kernels above. Activation row t is at
 * a + t·astride; output of row r, token t at o[t·ostride + r]. */

#define BCAST4(dst, v)   \
  do {                   \
    (dst)[0] = B0(v);    \
    (dst)[1] = B1(v);    \
    (dst)[2] = B2(v);    \
    (dst)[3] = B3(v);    \
  } while (0)

static inline __attribute__((always_inline)) void q4_0_tile(const int F, const int T, const uint8_t *g, uint32_t nb,
                                                          const uint8_t *a, uint32_t astride, float *o,
                                                          uint32_t ostride) {
  CONSTS();
  const v128_t m = pin(wasm_i8x16_splat(0x0f));
  const v128_t one = ones16();
  const uint32_t yo = align16(4 * nb);
  v128_t acc[4];
  for (int t = 0; t < T; t++) acc[t] = wasm_f32x4_splat(0.0f);
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *q = g + 72 * i;
    v128_t s[4];
    for (int t = 0; t < T; t++) s[t] = F ? wasm_v128_load(a + t * astride + yo + Q4R_YB * i + 32) : wasm_i16x8_splat(0);
    for (int j = 0; j < 4; j++) {
      v128_t v = wasm_v128_load(q + 8 + 16 * j);
      v128_t lo = wasm_v128_and(v, m), hi = wasm_v128_and(wasm_u16x8_shr(v, 4), m);
      for (int t = 0; t < T; t++) {
        const uint8_t *yb = a + t * astride + yo + Q4R_YB * i;
        s[t] = F ? Q4R_RUNF(s[t], lo, hi, yb, j) : Q4R_RUN(s[t], lo, hi, yb, j);
      }
    }
    v128_t dw = scales4(q, sm, sk);
    for (int t = 0; t < T; t++) {
      const uint8_t *at = a + t * astride;
      v128_t st = F ? s[t] : wasm_i32x4_add(PAIRS(s[t], one), wasm_v128_load(at + yo + Q4R_YB * i + 32));
      acc[t] = acc_lane(acc[t], st, wasm_f32x4_mul(dw, wasm_f32x4_splat(((const float *)at)[i])));
    }
  }
  for (int t = 0; t < T; t++) wasm_v128_store(o + t * ostride, acc[t]);
}

static inline __attribute__((always_inline)) void q4_k_tile(const int F, const int T, const uint8_t *g, uint32_t nb,
                                                          const uint8_t *a, uint32_t astride, float *o,
                                                          uint32_t ostride) {
  CONSTS();
  const v128_t m4 = pin(wasm_i8x16_splat(0x0f)), m30 = pin(wasm_i8x16_splat(0x30));
  const uint32_t yo = align16(4 * nb);
  const v128_t lo16 = pin(wasm_u32x4_splat(0xffffu));
  v128_t acc[4][4], accm[4];
  uint16_t scb[32] __attribute__((aligned(16)));
  for (int t = 0; t < T; t++) {
    accm[t] = wasm_f32x4_splat(0.0f);
    for (int r = 0; r < 4; r++) acc[t][r] = accm[t];
  }
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *gb = g + 576 * i;
    v128_t dw = scales4(gb, sm, sk), dmw = scales4(gb + 8, sm, sk);
    v128_t v0 = wasm_v128_load(gb + 16), v1 = wasm_v128_load(gb + 32), v2 = wasm_v128_load(gb + 48);
    v128_t sca = wasm_v128_or(wasm_v128_and(v0, m4), wasm_v128_and(wasm_i16x8_shl(v2, 4), m30));
    v128_t scbv = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(v0, 4), m4), wasm_v128_and(wasm_i16x8_shl(v2, 2), m30));
    v128_t mna = wasm_v128_or(wasm_v128_and(v1, m4), wasm_v128_and(v2, m30));
    v128_t mnb = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(v1, 4), m4), wasm_v128_and(wasm_u16x8_shr(v2, 2), m30));
    wasm_v128_store(scb, wasm_u16x8_extend_low_u8x16(sca));
    wasm_v128_store(scb + 8, wasm_u16x8_extend_high_u8x16(sca));
    wasm_v128_store(scb + 16, wasm_u16x8_extend_low_u8x16(scbv));
    wasm_v128_store(scb + 24, wasm_u16x8_extend_high_u8x16(scbv));
    v128_t x0 = wasm_u16x8_extend_low_u8x16(mna), x1 = wasm_u16x8_extend_high_u8x16(mna);
    v128_t x2 = wasm_u16x8_extend_low_u8x16(mnb), x3 = wasm_u16x8_extend_high_u8x16(mnb);
    v128_t ddb[4][4];
    for (int t = 0; t < T; t++) {
      const uint8_t *yb = a + t * astride + yo + 320 * i;
      v128_t yd = wasm_f32x4_splat(((const float *)(a + t * astride))[i]);
      v128_t dd = wasm_f32x4_mul(dw, yd);
      v128_t dm = wasm_f32x4_mul(dmw, yd);
      BCAST4(ddb[t], dd);
      v128_t mins = wasm_i32x4_add(
          wasm_i32x4_add(wasm_i32x4_dot_i16x8(x0, wasm_v128_load(yb)), wasm_i32x4_dot_i16x8(x1, wasm_v128_load(yb + 16))),
          wasm_i32x4_add(wasm_i32x4_dot_i16x8(x2, wasm_v128_load(yb + 32)), wasm_i32x4_dot_i16x8(x3, wasm_v128_load(yb + 48))));
      accm[t] = wasm_f32x4_add(accm[t], wasm_f32x4_mul(dm, wasm_f32x4_convert_i32x4(mins)));
    }
    for (int r = 0; r < 4; r++) {
      v128_t is[4];
      for (int t = 0; t < T; t++) is[t] = z;
      for (uint32_t c = 0; c < 4; c++) {
        const uint8_t *run = gb + 64 + 128 * c + 32 * r;
        v128_t w0 = wasm_v128_load(run), w1 = wasm_v128_load(run + 16);
        v128_t lo0 = wasm_v128_and(w0, m4), lo1 = wasm_v128_and(w1, m4);
        v128_t hi0 = wasm_v128_and(wasm_u16x8_shr(w0, 4), m4), hi1 = wasm_v128_and(wasm_u16x8_shr(w1, 4), m4);
        v128_t s0 = wasm_v128_load16_splat(scb + 8 * r + 2 * c);
        v128_t s1 = wasm_v128_load16_splat(scb + 8 * r + 2 * c + 1);
        v128_t s01 = wasm_v128_load32_splat(scb + 8 * r + 2 * c);
        for (int t = 0; t < T; t++) {
          const uint8_t *p = a + t * astride + yo + 320 * i + 64 + 64 * c;
          if (F) {
            v128_t p0 = DOT(wasm_v128_load(p + 16), lo1, DOT(wasm_v128_load(p), lo0, z));
            v128_t p1 = DOT(wasm_v128_load(p + 48), hi1, DOT(wasm_v128_load(p + 32), hi0, z));
            v128_t pp = wasm_v128_or(wasm_v128_and(p0, lo16), wasm_i32x4_shl(p1, 16));
            is[t] = wasm_i32x4_add(is[t], wasm_i32x4_dot_i16x8(pp, s01));
          } else {
            v128_t p0 = wasm_i16x8_add(RD16(wasm_v128_load(p), lo0), RD16(wasm_v128_load(p + 16), lo1));
            v128_t p1 = wasm_i16x8_add(RD16(wasm_v128_load(p + 32), hi0), RD16(wasm_v128_load(p + 48), hi1));
            is[t] = wasm_i32x4_add(is[t], wasm_i32x4_add(wasm_i32x4_dot_i16x8(p0, s0), wasm_i32x4_dot_i16x8(p1, s1)));
          }
        }
      }
      for (int t = 0; t < T; t++) acc[t][r] = acc_lane(acc[t][r], is[t], ddb[t][r]);
    }
  }
  for (int t = 0; t < T; t++) {
    float mr[4] __attribute__((aligned(16)));
    wasm_v128_store(mr, accm[t]);
    for (int r = 0; r < 4; r++) o[t * ostride + r] = hsum(acc[t][r]) - mr[r];
  }
}

#define TILE_T(F, body)                                 \
  switch (T) {                                          \
  case 2: body(F, 2, g, nb, a, astride, o, ostride); break; \
  case 3: body(F, 3, g, nb, a, astride, o, ostride); break; \
  default: body(F, 4, g, nb, a, astride, o, ostride); break; \
  }
#define EXPORT_TILE(name, body)                                                                   \
  void name(const uint8_t *g, uint32_t nb, const uint8_t *a, uint32_t astride, uint32_t T, float *o, \
            uint32_t ostride) {                                                                   \
    if (rx_fused) {                                                                               \
      TILE_T(1, body)                                                                             \
    } else {                                                                                      \
      TILE_T(0, body)                                                                             \
    }                                                                                             \
  }

EXPORT_TILE(rx_tile_q4_0, q4_0_tile)
EXPORT_TILE(rx_tile_q4_k, q4_k_tile)

/* ---- standard-layout (unpacked) decode kernels: 4 consecutive rows of the
 * standard GGUF block layout × 1 token per group, two groups (g0, g1; g1 may
 * be null) per call, reading the same expanded activations as the packed
 * kernels above (relaxed.rs `expand_t`). They are the packed group kernels
 * with the repack done in registers: the 4 rows' f16 scales are gathered
 * into one vector (4 × load16_lane; inf/NaN handled exactly, see
 * `scales_std`: unpacked weights are not screened as packing screens them),
 * and each 16-byte quant run is permuted by `f` (packed.rs) with one
 * i8x16.relaxed_swizzle, so dot lane j sums exactly the standard lane-j
 * element set: the same i32 lane partials and the same f32 order per row as
 * tiles.rs `tile_legacy` / `tile_q45k` with one token (bit-identical). Row k
 * of a set starts k·rs bytes after g[k's set], its output is o[set][k·os]:
 * matmul.rs runs rows an eighth of the matrix apart (eight memory streams;
 * with 4 adjacent rows per set a 26 MB Q4_K matrix took 2.2x as long, as
 * the four streams of a set share pages), or 4 adjacent rows per set when
 * rows % 8 != 0. */

/* f16 bits zero-extended in u32 lanes → f32x4, exact for every f16 (simd.rs `f16x4_to_f32`). */
static inline v128_t f16x4_full(v128_t h) {
  v128_t sign = wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16);
  v128_t em = wasm_v128_and(h, wasm_i32x4_splat(0x7fff));
  v128_t sh = wasm_i32x4_shl(em, 13);
  v128_t norm = wasm_f32x4_mul(sh, wasm_f32x4_splat(0x1p112f));
  v128_t infnan = wasm_v128_or(sh, wasm_i32x4_splat(0x7f800000));
  v128_t big = wasm_i32x4_ge(em, wasm_i32x4_splat(0x7c00));
  return wasm_v128_or(wasm_v128_bitselect(infnan, norm, big), sign);
}

/* The f16 at p + k·rs (k = 0..3) in the high halves of u32 lanes (f16 << 16). */
static inline v128_t gather_f16x4(const uint8_t *p, uint32_t rs) {
  v128_t v = wasm_i32x4_splat(0);
  v = wasm_v128_load16_lane(p, v, 1);
  v = wasm_v128_load16_lane(p + rs, v, 3);
  v = wasm_v128_load16_lane(p + 2 * rs, v, 5);
  v = wasm_v128_load16_lane(p + 3 * rs, v, 7);
  return v;
}

/* Gathered f16 (`gather_f16x4`) → f32x4. X = 0: the `scales4` conversion
 * (exact for finite f16: an arithmetic shift puts sign copies in bits 28..30,
 * `sm` clears them, `sk` = 2^112 rebiases), and `*hx` keeps the lane-wise
 * max of the unsigned |f16| << 17 so the caller can tell afterwards whether
 * an inf/NaN scale was seen (then it reruns with X = 1). X = 1: exact for
 * every f16. */
static inline __attribute__((always_inline)) v128_t scales_std(const int X, v128_t v, v128_t sm, v128_t sk, v128_t *hx) {
  if (X) return f16x4_full(wasm_u32x4_shr(v, 16));
  *hx = wasm_u32x4_max(*hx, wasm_i32x4_shl(v, 1));
  return wasm_f32x4_mul(wasm_v128_and(wasm_i32x4_shr(v, 3), sm), sk);
}

/* Whether `hx` saw an f16 with exponent 31 (inf/NaN): |f16| << 17 ≥ 0x7c00 << 17. */
static inline int saw_infnan(v128_t hx) {
  return !wasm_i32x4_all_true(wasm_u32x4_lt(hx, wasm_u32x4_splat(0xf8000000u)));
}

/* f as a byte-index vector for i8x16.relaxed_swizzle (one pshufb; indices
 * 0..15 are deterministic), read through a volatile slot once per call: a
 * constant i8x16.shuffle costs V8 a mask rebuilt from immediates each time. */
static inline v128_t perm_f(void) {
  volatile v128_t v = wasm_i8x16_make(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
  return v;
}
#define PERM_F(v) wasm_i8x16_relaxed_swizzle((v), pf)

/* Returns 1 (outputs not final) when X = 0 met an inf/NaN scale. */
static inline __attribute__((always_inline)) int q4_0_std_body(const int F, const int G, const int X, const uint8_t *const g[2],
                                                             uint32_t nb, const uint8_t *a, float *const o[2], uint32_t rs,
                                                             uint32_t os) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  CONSTS();
  const v128_t m = pin(wasm_i8x16_splat(0x0f));
  const v128_t one = ones16();
  v128_t acc[2], hx = z;
  for (int k = 0; k < G; k++) acc[k] = wasm_f32x4_splat(0.0f);
#define Q4_0_STD_BLOCK(i)                                                                                   \
  do {                                                                                                      \
    const uint8_t *yb = y + Q4R_YB * (i);                                                                   \
    v128_t ds = wasm_f32x4_splat(da[i]);                                                                    \
    for (int k = 0; k < G; k++) {                                                                           \
      const uint8_t *b = g[k] + 18 * (i);                                                                   \
      v128_t dd = wasm_f32x4_mul(scales_std(X, gather_f16x4(b, rs), sm, sk, &hx), ds);                      \
      /* the 4 rows' quant words transposed: V[j] lane r = row r's bytes 4j..4j+3 */                        \
      v128_t r0 = wasm_v128_load(b + 2), r1 = wasm_v128_load(b + rs + 2);                                   \
      v128_t r2 = wasm_v128_load(b + 2 * rs + 2), r3 = wasm_v128_load(b + 3 * rs + 2);                      \
      v128_t u0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5), u1 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5);      \
      v128_t u2 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7), u3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);      \
      v128_t V[4] = {wasm_i64x2_shuffle(u0, u1, 0, 2), wasm_i64x2_shuffle(u0, u1, 1, 3),                    \
                     wasm_i64x2_shuffle(u2, u3, 0, 2), wasm_i64x2_shuffle(u2, u3, 1, 3)};                   \
      acc[k] = acc_lane(acc[k], q4r_block(F, V, yb, m, one), dd);                                           \
    }                                                                                                       \
  } while (0)
  /* Blocks in runs of 4, so each load instruction strides 72 bytes (past a
   * cache line) per step, then the tail; each row still takes its blocks
   * in order. */
  uint32_t i = 0;
  for (; i + 4 <= nb; i += 4) {
    Q4_0_STD_BLOCK(i);
    Q4_0_STD_BLOCK(i + 1);
    Q4_0_STD_BLOCK(i + 2);
    Q4_0_STD_BLOCK(i + 3);
  }
  for (; i < nb; i++) Q4_0_STD_BLOCK(i);
#undef Q4_0_STD_BLOCK
  if (!X && saw_infnan(hx)) return 1;
  for (int k = 0; k < G; k++) {
    float v[4] __attribute__((aligned(16)));
    wasm_v128_store(v, acc[k]);
    for (int r = 0; r < 4; r++) o[k][r * os] = v[r];
  }
  return 0;
}

/* Standard-layout export: the fast scale conversion first, the exact one
 * only for a group pair that holds an inf/NaN scale. */
#define EXPORT_STD(name, body)                                                                       \
  void name(const uint8_t *g0, const uint8_t *g1, uint32_t nb, const uint8_t *a, float *o0, float *o1,  \
            uint32_t rs, uint32_t os) {                                                              \
    const uint8_t *const g[2] = {g0, g1};                                                            \
    float *const o[2] = {o0, o1};                                                                    \
    if (rx_fused) {                                                                                  \
      if (g1 ? body(1, 2, 0, g, nb, a, o, rs, os) : body(1, 1, 0, g, nb, a, o, rs, os))              \
        g1 ? body(1, 2, 1, g, nb, a, o, rs, os) : body(1, 1, 1, g, nb, a, o, rs, os);                \
    } else if (g1 ? body(0, 2, 0, g, nb, a, o, rs, os) : body(0, 1, 0, g, nb, a, o, rs, os)) {       \
      g1 ? body(0, 2, 1, g, nb, a, o, rs, os) : body(0, 1, 1, g, nb, a, o, rs, os);                  \
    }                                                                                                \
  }

EXPORT_STD(rx_std_q4_0, q4_0_std_body)

/* Q8_0 over standard rows (34-byte blocks), the arithmetic of `q8_0_body`:
 * x = w ^ m times |a|, plus c8. A quant of -128 is exact here too (x is the
 * signed operand: |pair| ≤ 2·128·127 < 2^15), so unlike packing nothing is
 * refused. Blocks in runs of 2 (68-byte strides per load instruction). */
static inline __attribute__((always_inline)) int q8_0_std_body(const int F, const int G, const int X, const uint8_t *const g[2],
                                                             uint32_t nb, const uint8_t *a, float *const o[2], uint32_t rs,
                                                             uint32_t os) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  CONSTS();
  const v128_t one = ones16(), pf = perm_f();
  v128_t acc[2][4], hx = z;
  for (int k = 0; k < G; k++)
    for (int r = 0; r < 4; r++) acc[k][r] = wasm_f32x4_splat(0.0f);
#define Q8_0_STD_BLOCK(i)                                                                                   \
  do {                                                                                                      \
    const uint8_t *yb = y + 80 * (i);                                                                       \
    v128_t a0 = wasm_v128_load(yb), a1 = wasm_v128_load(yb + 16);                                           \
    v128_t m0 = wasm_v128_load(yb + 32), m1 = wasm_v128_load(yb + 48), c8 = wasm_v128_load(yb + 64);        \
    v128_t ds = wasm_f32x4_splat(da[i]);                                                                    \
    for (int k = 0; k < G; k++) {                                                                           \
      const uint8_t *b = g[k] + 34 * (i);                                                                   \
      v128_t dd = wasm_f32x4_mul(scales_std(X, gather_f16x4(b, rs), sm, sk, &hx), ds);                      \
      v128_t s[4];                                                                                          \
      for (int r = 0; r < 4; r++) {                                                                         \
        v128_t w0 = PERM_F(wasm_v128_load(b + r * rs + 2)), w1 = PERM_F(wasm_v128_load(b + r * rs + 18));  \
        v128_t x0 = wasm_v128_xor(w0, m0), x1 = wasm_v128_xor(w1, m1);                                      \
        s[r] = F ? DOT(x1, a1, DOT(x0, a0, c8))                                                             \
                 : wasm_i32x4_add(wasm_i32x4_add(PAIRS(RD16(x0, a0), one), c8), PAIRS(RD16(x1, a1), one));  \
      }                                                                                                     \
      ACC4(acc[k], s, dd);                                                                                  \
    }                                                                                                       \
  } while (0)
  uint32_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    Q8_0_STD_BLOCK(i);
    Q8_0_STD_BLOCK(i + 1);
  }
  for (; i < nb; i++) Q8_0_STD_BLOCK(i);
#undef Q8_0_STD_BLOCK
  if (!X && saw_infnan(hx)) return 1;
  for (int k = 0; k < G; k++)
    for (int r = 0; r < 4; r++) o[k][r * os] = hsum(acc[k][r]);
  return 0;
}

EXPORT_STD(rx_std_q8_0, q8_0_std_body)

/* Q4_K over standard rows (144-byte super-blocks, rs = 144·nb): per group
 * and super-block, d | dmin << 16 of the 4 rows is gathered as one u32x4,
 * and the 4 rows' 12 scale bytes (three u32 words each, loaded as one v128
 * per row and transposed so that lane r holds row r's word) are decoded
 * with ggml's kmask steps lane-wise into scales and mins of sub-blocks 0..3
 * and 4..7, then arranged as the packed planes decode (`sca`/`scbv`:
 * index 8r + sb; mins: 8(sb/2) + 2r + sb%2). The rest is `q4_k_body`. */
static inline v128_t perm_mins(void) {
  volatile v128_t v = wasm_i8x16_make(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  return v;
}

static inline __attribute__((always_inline)) int q4_k_std_body(const int F, const int G, const int X, const uint8_t *const g[2],
                                                             uint32_t nb, const uint8_t *a, float *const o[2], uint32_t rs,
                                                             uint32_t os) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  CONSTS();
  const v128_t m4 = pin(wasm_i8x16_splat(0x0f)), m3f = pin(wasm_i8x16_splat(0x3f)), m03 = pin(wasm_i8x16_splat(0x03));
  const v128_t one = ones16(), pf = perm_f(), pm = perm_mins();
  const v128_t lo16 = pin(wasm_u32x4_splat(0xffffu)), hi16 = pin(wasm_u32x4_splat(0xffff0000u));
  v128_t acc[2][4], accm[2], hx = z;
  uint16_t scb[2][32] __attribute__((aligned(16)));
  for (int k = 0; k < G; k++) {
    accm[k] = wasm_f32x4_splat(0.0f);
    for (int r = 0; r < 4; r++) acc[k][r] = accm[k];
  }
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *yb = y + 320 * i;
    v128_t yd = wasm_f32x4_splat(da[i]);
    v128_t dd[2], is[2][4];
    for (int k = 0; k < G; k++) {
      const uint8_t *gb = g[k] + 144 * i;
      v128_t dv = wasm_i32x4_splat(0);
      dv = wasm_v128_load32_lane(gb, dv, 0);
      dv = wasm_v128_load32_lane(gb + rs, dv, 1);
      dv = wasm_v128_load32_lane(gb + 2 * rs, dv, 2);
      dv = wasm_v128_load32_lane(gb + 3 * rs, dv, 3);
      dd[k] = wasm_f32x4_mul(scales_std(X, wasm_i32x4_shl(dv, 16), sm, sk, &hx), yd);
      v128_t dm = wasm_f32x4_mul(scales_std(X, wasm_v128_and(dv, hi16), sm, sk, &hx), yd);
      /* words q0, q1, q2 of the 4 rows' scale bytes, lane r = row r */
      v128_t t0 = wasm_v128_load(gb + 4), t1 = wasm_v128_load(gb + rs + 4);
      v128_t t2 = wasm_v128_load(gb + 2 * rs + 4), t3 = wasm_v128_load(gb + 3 * rs + 4);
      v128_t u0 = wasm_i32x4_shuffle(t0, t1, 0, 4, 1, 5), u1 = wasm_i32x4_shuffle(t2, t3, 0, 4, 1, 5);
      v128_t u2 = wasm_i32x4_shuffle(t0, t1, 2, 6, 3, 7), u3 = wasm_i32x4_shuffle(t2, t3, 2, 6, 3, 7);
      v128_t q0 = wasm_i64x2_shuffle(u0, u1, 0, 2), q1 = wasm_i64x2_shuffle(u0, u1, 1, 3);
      v128_t q2 = wasm_i64x2_shuffle(u2, u3, 0, 2);
      v128_t sclo = wasm_v128_and(q0, m3f), mnlo = wasm_v128_and(q1, m3f);
      v128_t schi = wasm_v128_or(wasm_v128_and(q2, m4), wasm_i32x4_shl(wasm_v128_and(wasm_u32x4_shr(q0, 6), m03), 4));
      v128_t mnhi = wasm_v128_or(wasm_v128_and(wasm_u32x4_shr(q2, 4), m4), wasm_i32x4_shl(wasm_v128_and(wasm_u32x4_shr(q1, 6), m03), 4));
      v128_t sca = wasm_i32x4_shuffle(sclo, schi, 0, 4, 1, 5), scbv = wasm_i32x4_shuffle(sclo, schi, 2, 6, 3, 7);
      v128_t mna = wasm_i8x16_relaxed_swizzle(mnlo, pm), mnb = wasm_i8x16_relaxed_swizzle(mnhi, pm);
      wasm_v128_store(scb[k], wasm_u16x8_extend_low_u8x16(sca));
      wasm_v128_store(scb[k] + 8, wasm_u16x8_extend_high_u8x16(sca));
      wasm_v128_store(scb[k] + 16, wasm_u16x8_extend_low_u8x16(scbv));
      wasm_v128_store(scb[k] + 24, wasm_u16x8_extend_high_u8x16(scbv));
      v128_t mins = wasm_i32x4_add(
          wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mna), wasm_v128_load(yb)),
                         wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mna), wasm_v128_load(yb + 16))),
          wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mnb), wasm_v128_load(yb + 32)),
                         wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mnb), wasm_v128_load(yb + 48))));
      accm[k] = wasm_f32x4_add(accm[k], wasm_f32x4_mul(dm, wasm_f32x4_convert_i32x4(mins)));
      for (int r = 0; r < 4; r++) is[k][r] = z;
    }
    for (int k = 0; k < G; k++) {
      for (uint32_t c = 0; c < 4; c++) {
        const uint8_t *p = yb + 64 + 64 * c;
        v128_t l0 = wasm_v128_load(p), l1 = wasm_v128_load(p + 16);
        v128_t h0 = wasm_v128_load(p + 32), h1 = wasm_v128_load(p + 48);
        const uint8_t *run = g[k] + 144 * i + 16 + 32 * c;
        for (int r = 0; r < 4; r++) {
          v128_t w0 = PERM_F(wasm_v128_load(run + r * rs)), w1 = PERM_F(wasm_v128_load(run + r * rs + 16));
          v128_t b0 = wasm_v128_and(w0, m4), b1 = wasm_v128_and(w1, m4);
          v128_t c0 = wasm_v128_and(wasm_u16x8_shr(w0, 4), m4), c1 = wasm_v128_and(wasm_u16x8_shr(w1, 4), m4);
          if (F) {
            v128_t p0 = DOT(l1, b1, DOT(l0, b0, z)), p1 = DOT(h1, c1, DOT(h0, c0, z));
            v128_t pp = wasm_v128_or(wasm_v128_and(p0, lo16), wasm_i32x4_shl(p1, 16));
            is[k][r] = wasm_i32x4_add(is[k][r], wasm_i32x4_dot_i16x8(pp, wasm_v128_load32_splat(scb[k] + 8 * r + 2 * c)));
          } else {
            v128_t p0 = wasm_i16x8_add(RD16(l0, b0), RD16(l1, b1));
            v128_t p1 = wasm_i16x8_add(RD16(h0, c0), RD16(h1, c1));
            v128_t s0 = wasm_v128_load16_splat(scb[k] + 8 * r + 2 * c);
            v128_t s1 = wasm_v128_load16_splat(scb[k] + 8 * r + 2 * c + 1);
            is[k][r] = wasm_i32x4_add(is[k][r], wasm_i32x4_add(wasm_i32x4_dot_i16x8(p0, s0), wasm_i32x4_dot_i16x8(p1, s1)));
          }
        }
      }
    }
    for (int k = 0; k < G; k++) ACC4(acc[k], is[k], dd[k]);
  }
  if (!X && saw_infnan(hx)) return 1;
  for (int k = 0; k < G; k++) {
    float mr[4] __attribute__((aligned(16)));
    wasm_v128_store(mr, accm[k]);
    for (int r = 0; r < 4; r++) o[k][r * os] = hsum(acc[k][r]) - mr[r];
  }
  return 0;
}

EXPORT_STD(rx_std_q4_k, q4_k_std_body)

/* Packed F16 decode, two rows (packed_f16.rs `dot_f16p::<2>`): the 16-element main loop over
 * `n16` elements (a multiple of 16), its eight accumulators written to `acc` (row r's four at
 * acc[4r..4r+4]) in the order the Rust twin keeps them; the tails stay in Rust. Each product
 * (w·2^-112)·(a·2^112) of an f16 weight and an f16-rounded activation has at most 22
 * significant bits and lies in f32's normal range, so it is exact: `relaxed_madd`, fused or
 * not, rounds once per add like the twin's `mul` + `add`, and the bits are the same. */
void rx_f16p_x2(const uint8_t *w0, const uint8_t *w1, const float *sa, uint32_t n16, float *acc) {
  const v128_t m = pin(wasm_u32x4_splat(0x8fffe000u));
  v128_t a0[4], a1[4];
  for (int j = 0; j < 4; j++) a0[j] = a1[j] = wasm_f32x4_splat(0.0f);
  for (uint32_t i = 0; i < n16; i += 16) {
    for (int h = 0; h < 2; h++) {
      v128_t x0 = wasm_v128_load(sa + i + 8 * h), x1 = wasm_v128_load(sa + i + 8 * h + 4);
      v128_t v = wasm_v128_load(w0 + 2 * i + 16 * h);
      v128_t lo = wasm_v128_and(wasm_i32x4_shr(wasm_i32x4_shl(v, 16), 3), m);
      v128_t hi = wasm_v128_and(wasm_i32x4_shr(v, 3), m);
      a0[2 * h] = wasm_f32x4_relaxed_madd(lo, x0, a0[2 * h]);
      a0[2 * h + 1] = wasm_f32x4_relaxed_madd(hi, x1, a0[2 * h + 1]);
      v = wasm_v128_load(w1 + 2 * i + 16 * h);
      lo = wasm_v128_and(wasm_i32x4_shr(wasm_i32x4_shl(v, 16), 3), m);
      hi = wasm_v128_and(wasm_i32x4_shr(v, 3), m);
      a1[2 * h] = wasm_f32x4_relaxed_madd(lo, x0, a1[2 * h]);
      a1[2 * h + 1] = wasm_f32x4_relaxed_madd(hi, x1, a1[2 * h + 1]);
    }
  }
  for (int j = 0; j < 4; j++) {
    wasm_v128_store(acc + 4 * j, a0[j]);
    wasm_v128_store(acc + 16 + 4 * j, a1[j]);
  }
}
