/*
 * Relaxed-SIMD kernels of the packed layouts defined in wasm/kernels/src/packed_*.rs
 * (Q6_K, Q2_K, Q3_K, MXFP4, Q5_K, IQ4_NL), built only into
 * moe_edge_kernels_relaxed*.wasm, next to relaxed.c. Each type is one block of
 * hooks on one shared skeleton (RX_KERNELS below; docs/quant-types.md).
 *
 * Q6_K, the pattern the K-quants share: per row and quad (64 elements) the
 * three packed vectors A, B, C give the four 6-bit vectors V0..V3 (V0..V2: low
 * 6 bits; V3: the top 2 bits of A, B, C). For each V_n:
 * i16x8.relaxed_dot_i8x16_i7x16_s(X_n, V_n) (pair sums; V_n is 7-bit, so the
 * instruction is exact and deterministic); the two vectors of a run pair (same
 * scales) are added in i16 with C'_m = −32·(the lanes' activation sums) (the
 * q − 32 offset), then one i32x4.dot_i16x8_s against the pair's scales
 * (s_2m, s_2m+1). The i32 lanes are the exact integers of tiles.rs `tile_q6k`;
 * they are converted and scaled in the same f32 order, so results are
 * bit-identical to the standard layout.
 *
 * Built with clang-19: -O3 -mcpu=mvp -msimd128 -mrelaxed-simd, no libc.
 */
#include <stdint.h>
#include <wasm_simd128.h>

/* Four finite f16 → f32x4 (group.rs `scales4`). */
static inline v128_t scales4(const uint8_t *p, v128_t m, v128_t k) {
  v128_t x = wasm_i32x4_load16x4(p);
  return wasm_f32x4_mul(wasm_v128_and(wasm_i32x4_shl(x, 13), m), k);
}

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

/* ---- The one skeleton of every packed type in this file (the types below
 * plug into it; see docs/quant-types.md). A type T defines:
 *   T_CONSTS()   its constants, z (i32x4 zero) included; pinned where loops reuse them;
 *   T_YB         bytes of one expanded activation block (the Rust `expand` of packed_*.rs);
 *   T_MINS       1 if the type subtracts mins: accm (lane r = row r) carries them;
 *   T_SCRATCH    per-call scratch declarations (or nothing);
 *   T_BLOCK(g, nb, i, yb, yd, is, dd, accm)
 *                decode: block i of the 4-row group at g (nb blocks per row) × the
 *                activation block yb (scale yd, an f32x4 splat): is[r] += row r's
 *                exact i32 lane sums, dd = the rows' f32 scales × yd, accm += mins;
 *   T_TILE_PREP(g, nb, i)           token tile: block i's weight values for all tokens;
 *   T_TILE_TOKEN(yb, yd, dd, accm)  token tile: one token (block yb, scale yd);
 *   T_TILE_ROW(r, NT, yt, is)       token tile: row r × NT tokens (token t's block at yt(t)).
 * RX_KERNELS(T) then defines rx_group_T (decode: one or two groups × one token)
 * and rx_tile_T (prefill: one group × 2..4 tokens, each weight block unpacked
 * once for all tokens). The f32 work is the same for every type, in the same
 * order as the standard-layout kernels: per row and block acc += f32(is)·dd,
 * then hsum(acc) − mins. */

/* Lane r of v in every lane (r a constant after unrolling). */
#define BCAST(v, r) ((r) == 0 ? B0(v) : (r) == 1 ? B1(v) : (r) == 2 ? B2(v) : B3(v))

/* o[r] = hsum(acc[r]) (− lane r of accm when the type has mins). */
static inline __attribute__((always_inline)) void store4(float *o, const v128_t *acc, v128_t accm, const int mins) {
  if (mins) {
    float mr[4] __attribute__((aligned(16)));
    wasm_v128_store(mr, accm);
    for (int r = 0; r < 4; r++) o[r] = hsum(acc[r]) - mr[r];
  } else {
    for (int r = 0; r < 4; r++) o[r] = hsum(acc[r]);
  }
}

/* Token t's activation block in a token tile. */
#define YT(t) (a + (t) * astride + yo + ybs * i)

#define RX_KERNELS(T)                                                                                      \
  static inline __attribute__((always_inline)) void T##_body(const uint8_t *g, uint32_t nb, const uint8_t *a, \
                                                             float *o) {                                  \
    const float *da = (const float *)a;                                                                    \
    const uint8_t *y = a + align16(4 * nb);                                                                \
    T##_CONSTS();                                                                                          \
    T##_SCRATCH;                                                                                           \
    v128_t acc[4], accm = wasm_f32x4_splat(0.0f);                                                          \
    for (int r = 0; r < 4; r++) acc[r] = accm;                                                             \
    for (uint32_t i = 0; i < nb; i++) {                                                                    \
      const uint8_t *yb = y + T##_YB * i;                                                                  \
      v128_t yd = wasm_f32x4_splat(da[i]), dd;                                                             \
      v128_t is[4] = {z, z, z, z};                                                                         \
      T##_BLOCK(g, nb, i, yb, yd, is, dd, accm);                                                           \
      for (int r = 0; r < 4; r++) acc[r] = acc_lane(acc[r], is[r], BCAST(dd, r));                          \
    }                                                                                                      \
    store4(o, acc, accm, T##_MINS);                                                                        \
  }                                                                                                        \
                                                                                                           \
  /* One group at a time (measured 2-7% faster than both groups per block: fewer live registers). */      \
  void rx_group_##T(const uint8_t *g0, const uint8_t *g1, uint32_t nb, const uint8_t *a, float *o0, float *o1) { \
    T##_body(g0, nb, a, o0);                                                                               \
    if (g1) T##_body(g1, nb, a, o1);                                                                       \
  }                                                                                                        \
                                                                                                           \
  static inline __attribute__((always_inline)) void T##_tile(const int NT, const uint8_t *g, uint32_t nb,     \
                                                             const uint8_t *a, uint32_t astride, float *o,  \
                                                             uint32_t ostride) {                            \
    T##_CONSTS();                                                                                          \
    T##_SCRATCH;                                                                                           \
    const uint32_t yo = align16(4 * nb), ybs = T##_YB;                                                     \
    v128_t acc[4][4], accm[4];                                                                             \
    for (int t = 0; t < NT; t++) {                                                                         \
      accm[t] = wasm_f32x4_splat(0.0f);                                                                    \
      for (int r = 0; r < 4; r++) acc[t][r] = accm[t];                                                     \
    }                                                                                                      \
    for (uint32_t i = 0; i < nb; i++) {                                                                    \
      T##_TILE_PREP(g, nb, i);                                                                             \
      v128_t dd[4];                                                                                        \
      for (int t = 0; t < NT; t++) {                                                                       \
        v128_t yd = wasm_f32x4_splat(((const float *)(a + t * astride))[i]);                              \
        T##_TILE_TOKEN(YT(t), yd, dd[t], accm[t]);                                                         \
      }                                                                                                    \
      for (int r = 0; r < 4; r++) {                                                                        \
        v128_t is[4];                                                                                      \
        for (int t = 0; t < NT; t++) is[t] = z;                                                            \
        T##_TILE_ROW(r, NT, YT, is);                                                                       \
        for (int t = 0; t < NT; t++) acc[t][r] = acc_lane(acc[t][r], is[t], BCAST(dd[t], r));             \
      }                                                                                                    \
    }                                                                                                      \
    for (int t = 0; t < NT; t++) store4(o + t * ostride, acc[t], accm[t], T##_MINS);                       \
  }                                                                                                        \
                                                                                                           \
  void rx_tile_##T(const uint8_t *g, uint32_t nb, const uint8_t *a, uint32_t astride, uint32_t NT, float *o, \
                   uint32_t ostride) {                                                                     \
    switch (NT) {                                                                                          \
    case 2: T##_tile(2, g, nb, a, astride, o, ostride); break;                                             \
    case 3: T##_tile(3, g, nb, a, astride, o, ostride); break;                                             \
    default: T##_tile(4, g, nb, a, astride, o, ostride); break;                                            \
    }                                                                                                      \
  }

/* ---- Q6_K */

#define GB 840u
#define QOFF 72u

/* One super-block's scales of the 4 rows of a group as i16 (row r at sc + 16r). */
static inline __attribute__((always_inline)) void scales_i16(const uint8_t *gb, int16_t *sc) {
  for (int r = 0; r < 4; r++) {
    v128_t v = wasm_v128_load(gb + 8 + 16 * r);
    wasm_v128_store(sc + 16 * r, wasm_i16x8_extend_low_i8x16(v));
    wasm_v128_store(sc + 16 * r + 8, wasm_i16x8_extend_high_i8x16(v));
  }
}

/* The four 6-bit vectors of one row-quad. */
#define UNPACK(q, V)                                                                             \
  do {                                                                                           \
    v128_t A_ = wasm_v128_load(q), B_ = wasm_v128_load((q) + 16), C_ = wasm_v128_load((q) + 32); \
    (V)[0] = wasm_v128_and(A_, m63);                                                             \
    (V)[1] = wasm_v128_and(B_, m63);                                                             \
    (V)[2] = wasm_v128_and(C_, m63);                                                             \
    (V)[3] = wasm_v128_or(wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(A_, 6), m03),                \
                                       wasm_v128_and(wasm_u16x8_shr(B_, 4), m0c)),               \
                          wasm_v128_and(wasm_u16x8_shr(C_, 2), m30));                            \
  } while (0)

/* is += Σ over the quad's 4 vectors (activations of the quad at p, scales of
 * the row at s). The two vectors of a run pair share their scales, so their
 * pair sums are added in i16 (each |·| ≤ 2·128·63; the sum plus C'_m is the
 * exact Σ(q − 32)·a of 4 elements, |·| ≤ 4·32·128 = 2^14: i16 wrap-around
 * leaves it exact) before one i32x4.dot_i16x8_s. */
#define QUAD(is, V, p, s)                                                                            \
  do {                                                                                               \
    v128_t M0_ = wasm_i16x8_add(wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load(p), (V)[0]), \
                                               wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 16), (V)[1])), \
                                wasm_v128_load((p) + 32));                                           \
    v128_t M1_ = wasm_i16x8_add(wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 48), (V)[2]), \
                                               wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 64), (V)[3])), \
                                wasm_v128_load((p) + 80));                                           \
    (is) = wasm_i32x4_add((is), wasm_i32x4_add(wasm_i32x4_dot_i16x8(M0_, wasm_v128_load32_splat(s)),   \
                                               wasm_i32x4_dot_i16x8(M1_, wasm_v128_load32_splat((s) + 2)))); \
  } while (0)

/* v through a volatile stack slot: computed once, kept (clang would otherwise
 * put v128.const inside the loops, which V8 builds from immediates each time). */
static inline v128_t pin(v128_t v) {
  volatile v128_t t = v;
  return t;
}

#define CONSTS()                                                                                \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f));   \
  const v128_t m63 = pin(wasm_i8x16_splat(63)), m03 = pin(wasm_i8x16_splat(3));                 \
  const v128_t m0c = pin(wasm_i8x16_splat(0x0c)), m30 = pin(wasm_i8x16_splat(0x30));            \
  const v128_t z = wasm_i32x4_splat(0)

#define q6_k_CONSTS CONSTS
#define q6_k_YB 384u
#define q6_k_MINS 0
#define q6_k_SCRATCH int16_t sc[64] __attribute__((aligned(16)))
#define q6_k_BLOCK(g, nb, i, yb, yd, is, dd, accm)                       \
  do {                                                                   \
    const uint8_t *gb_ = (g) + GB * (i);                                 \
    (dd) = wasm_f32x4_mul(scales4(gb_, sm, sk), (yd));                   \
    scales_i16(gb_, sc);                                                 \
    for (int q = 0; q < 4; q++)                                          \
      for (int r = 0; r < 4; r++) {                                      \
        v128_t V[4];                                                     \
        UNPACK(gb_ + QOFF + 192 * q + 48 * r, V);                        \
        QUAD((is)[r], V, (yb) + 96 * q, sc + 16 * r + 4 * q);            \
      }                                                                  \
  } while (0)
#define q6_k_TILE_PREP(g, nb, i)             \
  const uint8_t *gb = (g) + GB * (i);        \
  v128_t dw = scales4(gb, sm, sk);           \
  scales_i16(gb, sc)
#define q6_k_TILE_TOKEN(yb, yd, dd, accm) ((dd) = wasm_f32x4_mul(dw, (yd)))
#define q6_k_TILE_ROW(r, NT, yt, is)                                                            \
  for (int q = 0; q < 4; q++) {                                                                 \
    v128_t V[4];                                                                                \
    UNPACK(gb + QOFF + 192 * q + 48 * (r), V);                                                  \
    for (int t = 0; t < (NT); t++) QUAD((is)[t], V, yt(t) + 96 * q, sc + 16 * (r) + 4 * q);   \
  }
RX_KERNELS(q6_k)

/* ---- Q2_K (wasm/kernels/src/packed_q2k.rs): per row and quad one vector P
 * holds the four 2-bit vectors V_n at bits 2n; the two vectors of a run pair
 * are added in i16 (|·| ≤ 4·128·3) before one i32x4.dot_i16x8_s against the
 * pair's scales. Mins: the exact integer Σ min_u·bsum_u per row, scaled by
 * dmin·yd (lowbit.rs `tile_q23k`). Activations per super-block: bsums (i16 ×
 * 16), then the 16 vectors X_n. */

#define Q2GB 336u
#define Q2QOFF 80u

/* Row r's scales (low nibbles) as i16 at sc + 16r; returns the 4 rows'
 * Σ min_u·bsum_u (lane r). */
static inline __attribute__((always_inline)) v128_t q2_scales_mins(const uint8_t *gb, int16_t *sc, v128_t bs0,
                                                                  v128_t bs1, v128_t m0f) {
  v128_t t[4];
  for (int r = 0; r < 4; r++) {
    v128_t v = wasm_v128_load(gb + 16 + 16 * r);
    v128_t s = wasm_v128_and(v, m0f), mn = wasm_v128_and(wasm_u16x8_shr(v, 4), m0f);
    wasm_v128_store(sc + 16 * r, wasm_u16x8_extend_low_u8x16(s));
    wasm_v128_store(sc + 16 * r + 8, wasm_u16x8_extend_high_u8x16(s));
    t[r] = wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mn), bs0),
                          wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mn), bs1));
  }
  v128_t s01 = wasm_i32x4_add(wasm_i32x4_shuffle(t[0], t[1], 0, 4, 1, 5), wasm_i32x4_shuffle(t[0], t[1], 2, 6, 3, 7));
  v128_t s23 = wasm_i32x4_add(wasm_i32x4_shuffle(t[2], t[3], 0, 4, 1, 5), wasm_i32x4_shuffle(t[2], t[3], 2, 6, 3, 7));
  return wasm_i32x4_add(wasm_i32x4_shuffle(s01, s23, 0, 1, 4, 5), wasm_i32x4_shuffle(s01, s23, 2, 3, 6, 7));
}

#define Q2_UNPACK(q, V)                                     \
  do {                                                      \
    v128_t P_ = wasm_v128_load(q);                          \
    (V)[0] = wasm_v128_and(P_, m3);                         \
    (V)[1] = wasm_v128_and(wasm_u16x8_shr(P_, 2), m3);      \
    (V)[2] = wasm_v128_and(wasm_u16x8_shr(P_, 4), m3);      \
    (V)[3] = wasm_v128_and(wasm_u16x8_shr(P_, 6), m3);      \
  } while (0)

#define Q2_QUAD(is, V, p, s)                                                                          \
  do {                                                                                                \
    v128_t M0_ = wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load(p), (V)[0]),       \
                                wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 16), (V)[1])); \
    v128_t M1_ = wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 32), (V)[2]), \
                                wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 48), (V)[3])); \
    (is) = wasm_i32x4_add((is), wasm_i32x4_add(wasm_i32x4_dot_i16x8(M0_, wasm_v128_load32_splat(s)),    \
                                               wasm_i32x4_dot_i16x8(M1_, wasm_v128_load32_splat((s) + 2)))); \
  } while (0)

#define Q2_CONSTS()                                                                          \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f)); \
  const v128_t m3 = pin(wasm_i8x16_splat(3)), m0f = pin(wasm_i8x16_splat(0x0f));             \
  const v128_t z = wasm_i32x4_splat(0)

#define q2_k_CONSTS Q2_CONSTS
#define q2_k_YB 288u
#define q2_k_MINS 1
#define q2_k_SCRATCH int16_t sc[64] __attribute__((aligned(16)))
#define q2_k_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                                  \
  do {                                                                                              \
    const uint8_t *gb_ = (g) + Q2GB * (i);                                                          \
    v128_t bs0_ = wasm_v128_load(yb), bs1_ = wasm_v128_load((yb) + 16);                             \
    (dd) = wasm_f32x4_mul(scales4(gb_, sm, sk), (yd));                                              \
    v128_t dm_ = wasm_f32x4_mul(scales4(gb_ + 8, sm, sk), (yd));                                    \
    v128_t mins_ = q2_scales_mins(gb_, sc, bs0_, bs1_, m0f);                                        \
    (accm) = wasm_f32x4_add((accm), wasm_f32x4_mul(dm_, wasm_f32x4_convert_i32x4(mins_)));          \
    for (int q = 0; q < 4; q++)                                                                     \
      for (int r = 0; r < 4; r++) {                                                                 \
        v128_t V[4];                                                                                \
        Q2_UNPACK(gb_ + Q2QOFF + 64 * q + 16 * r, V);                                               \
        Q2_QUAD((is)[r], V, (yb) + 32 + 64 * q, sc + 16 * r + 4 * q);                               \
      }                                                                                             \
  } while (0)
#define q2_k_TILE_PREP(g, nb, i)         \
  const uint8_t *gb = (g) + Q2GB * (i);  \
  v128_t dw = scales4(gb, sm, sk), dmw = scales4(gb + 8, sm, sk)
#define q2_k_TILE_TOKEN(yb, yd, dd, accm)                                                                         \
  do {                                                                                                            \
    (dd) = wasm_f32x4_mul(dw, (yd));                                                                              \
    v128_t mins_ = q2_scales_mins(gb, sc, wasm_v128_load(yb), wasm_v128_load((yb) + 16), m0f);                    \
    (accm) = wasm_f32x4_add((accm), wasm_f32x4_mul(wasm_f32x4_mul(dmw, (yd)), wasm_f32x4_convert_i32x4(mins_)));  \
  } while (0)
#define q2_k_TILE_ROW(r, NT, yt, is)                                                                   \
  for (int q = 0; q < 4; q++) {                                                                        \
    v128_t V[4];                                                                                       \
    Q2_UNPACK(gb + Q2QOFF + 64 * q + 16 * (r), V);                                                     \
    for (int t = 0; t < (NT); t++) Q2_QUAD((is)[t], V, yt(t) + 32 + 64 * q, sc + 16 * (r) + 4 * q);  \
  }
RX_KERNELS(q2_k)

/* ---- Q3_K (wasm/kernels/src/packed_q3k.rs): u = q + 4 (3 bits); per row and
 * quad pair three vectors hold the eight V_n; the run-pair sums get
 * C'_m = −4·(activation sums) in i16 (the u − 4 offset) before one
 * i32x4.dot_i16x8_s against the pair's (scale − 32). The 4 rows' 6-bit scales
 * are three vectors per super-block (the Q6_K quad encoding). Activations: the
 * Q6_K expansion with −4 for −32. */

#define Q3GB 440u
#define Q3QOFF 56u

/* The 4 rows' scales − 32 as i16 (row r at sc + 16r). */
static inline __attribute__((always_inline)) void q3_scales(const uint8_t *gb, int16_t *sc, v128_t m63, v128_t m03,
                                                           v128_t m0c, v128_t m30, v128_t b32) {
  v128_t S[4];
  UNPACK(gb + 8, S);
  for (int r = 0; r < 4; r++) {
    v128_t s = wasm_i8x16_sub(S[r], b32);
    wasm_v128_store(sc + 16 * r, wasm_i16x8_extend_low_i8x16(s));
    wasm_v128_store(sc + 16 * r + 8, wasm_i16x8_extend_high_i8x16(s));
  }
}

#define Q3_UNPACK(q, V)                                                                                 \
  do {                                                                                                  \
    v128_t A_ = wasm_v128_load(q), B_ = wasm_v128_load((q) + 16), C_ = wasm_v128_load((q) + 32);        \
    (V)[0] = wasm_v128_and(A_, m7);                                                                     \
    (V)[1] = wasm_v128_and(wasm_u16x8_shr(A_, 3), m7);                                                  \
    (V)[2] = wasm_v128_and(B_, m7);                                                                     \
    (V)[3] = wasm_v128_and(wasm_u16x8_shr(B_, 3), m7);                                                  \
    (V)[4] = wasm_v128_and(C_, m7);                                                                     \
    (V)[5] = wasm_v128_and(wasm_u16x8_shr(C_, 3), m7);                                                  \
    (V)[6] = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(A_, 6), m03), wasm_v128_and(wasm_u16x8_shr(C_, 4), m04)); \
    (V)[7] = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(B_, 6), m03), wasm_v128_and(wasm_u16x8_shr(C_, 5), m04)); \
  } while (0)

#define Q3_CONSTS()                                                                             \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f));   \
  const v128_t m63 = pin(wasm_i8x16_splat(63)), m03 = pin(wasm_i8x16_splat(3));                 \
  const v128_t m0c = pin(wasm_i8x16_splat(0x0c)), m30 = pin(wasm_i8x16_splat(0x30));            \
  const v128_t m7 = pin(wasm_i8x16_splat(7)), m04 = pin(wasm_i8x16_splat(4));                   \
  const v128_t b32 = pin(wasm_i8x16_splat(32));                                                 \
  const v128_t z = wasm_i32x4_splat(0)

#define q3_k_CONSTS Q3_CONSTS
#define q3_k_YB 384u
#define q3_k_MINS 0
#define q3_k_SCRATCH int16_t sc[64] __attribute__((aligned(16)))
/* Decode: is += one row's quad pair (weights at q, activations at p; SPL(k):
 * the i16 scales of run pair k in every i32 lane), each run pair unpacked next
 * to its dots (the same integers as Q3_UNPACK + QUAD, summed in the same lanes). */
#define Q3_QPX(is, q, p, SPL)                                                                             \
  do {                                                                                                    \
    v128_t A_ = wasm_v128_load(q), B_ = wasm_v128_load((q) + 16), C_ = wasm_v128_load((q) + 32);          \
    v128_t M_ = wasm_i16x8_add(                                                                           \
        wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load(p), wasm_v128_and(A_, m7)),     \
                       wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 16),                      \
                                                          wasm_v128_and(wasm_u16x8_shr(A_, 3), m7))),    \
        wasm_v128_load((p) + 32));                                                                        \
    (is) = wasm_i32x4_add((is), wasm_i32x4_dot_i16x8(M_, SPL(0)));                    \
    M_ = wasm_i16x8_add(                                                                                  \
        wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 48), wasm_v128_and(B_, m7)), \
                       wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 64),                      \
                                                          wasm_v128_and(wasm_u16x8_shr(B_, 3), m7))),    \
        wasm_v128_load((p) + 80));                                                                        \
    (is) = wasm_i32x4_add((is), wasm_i32x4_dot_i16x8(M_, SPL(1)));              \
    M_ = wasm_i16x8_add(                                                                                  \
        wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 96), wasm_v128_and(C_, m7)), \
                       wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 112),                     \
                                                          wasm_v128_and(wasm_u16x8_shr(C_, 3), m7))),    \
        wasm_v128_load((p) + 128));                                                                       \
    (is) = wasm_i32x4_add((is), wasm_i32x4_dot_i16x8(M_, SPL(2)));              \
    v128_t V6_ = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(A_, 6), m03), wasm_v128_and(wasm_u16x8_shr(C_, 4), m04)); \
    v128_t V7_ = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(B_, 6), m03), wasm_v128_and(wasm_u16x8_shr(C_, 5), m04)); \
    M_ = wasm_i16x8_add(wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 144), V6_), \
                                       wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 160), V7_)), \
                        wasm_v128_load((p) + 176));                                                       \
    (is) = wasm_i32x4_add((is), wasm_i32x4_dot_i16x8(M_, SPL(3)));              \
  } while (0)

/* Compiler barrier at the top of the row loop of the decode block, which stays
 * a loop: the activations are loaded again for each row instead of being kept
 * live across the 4 rows (12 vectors; in the unrolled form V8 spilled them,
 * ~100 spill moves per block, and V8's own load elimination undoes a barrier in
 * straight-line code). The rows' scales and sums rotate through registers
 * (an indexed S_[r] / is[r] lives in linear memory, where V8 bounds-checks
 * every access with explicit compares in this Deno). */
#define Q3_FENCE() __asm__ volatile("" ::: "memory")

/* i32 lane k of a row's i16 scales − 32 (run pair k of the quad pair) in every
 * lane, from registers (one pshufd) instead of a load32_splat of a stored copy
 * (V8 bounds-checks every linear-memory access, the C stack included). */
#define Q3_SPL_LO(k) wasm_i32x4_shuffle(slo_, slo_, k, k, k, k)
#define Q3_SPL_HI(k) wasm_i32x4_shuffle(shi_, shi_, k, k, k, k)

#define q3_k_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                          \
  do {                                                                                      \
    const uint8_t *gb_ = (g) + Q3GB * (i);                                                  \
    (dd) = wasm_f32x4_mul(scales4(gb_, sm, sk), (yd));                                      \
    v128_t S_[4];                                                                           \
    UNPACK(gb_ + 8, S_);                                                                    \
    v128_t s0_ = S_[0], s1_ = S_[1], s2_ = S_[2], s3_ = S_[3];                              \
    v128_t i0_ = z, i1_ = z, i2_ = z, i3_ = z;                                              \
    const uint8_t *w_ = gb_ + Q3QOFF;                                                       \
    for (int r = 0; r < 4; r++, w_ += 48) {                                                 \
      Q3_FENCE();                                                                           \
      v128_t s8_ = wasm_i8x16_sub(s0_, b32), t_ = z;                                        \
      v128_t slo_ = wasm_i16x8_extend_low_i8x16(s8_), shi_ = wasm_i16x8_extend_high_i8x16(s8_); \
      Q3_QPX(t_, w_, (yb), Q3_SPL_LO);                                                      \
      Q3_QPX(t_, w_ + 192, (yb) + 192, Q3_SPL_HI);                                          \
      /* rotate: after the 4th row i0_..i3_ hold rows 0..3 */                              \
      s0_ = s1_; s1_ = s2_; s2_ = s3_;                                                      \
      i0_ = i1_; i1_ = i2_; i2_ = i3_; i3_ = t_;                                            \
    }                                                                                       \
    (is)[0] = i0_; (is)[1] = i1_; (is)[2] = i2_; (is)[3] = i3_;                             \
  } while (0)
#define q3_k_TILE_PREP(g, nb, i)         \
  const uint8_t *gb = (g) + Q3GB * (i);  \
  v128_t dw = scales4(gb, sm, sk);       \
  q3_scales(gb, sc, m63, m03, m0c, m30, b32)
#define q3_k_TILE_TOKEN(yb, yd, dd, accm) ((dd) = wasm_f32x4_mul(dw, (yd)))
#define q3_k_TILE_ROW(r, NT, yt, is)                                 \
  for (int qp = 0; qp < 2; qp++) {                                   \
    v128_t V[8];                                                     \
    Q3_UNPACK(gb + Q3QOFF + 192 * qp + 48 * (r), V);                 \
    for (int t = 0; t < (NT); t++) {                                 \
      const uint8_t *p_ = yt(t) + 192 * qp;                        \
      QUAD((is)[t], V, p_, sc + 16 * (r) + 8 * qp);                  \
      QUAD((is)[t], V + 4, p_ + 96, sc + 16 * (r) + 8 * qp + 4);     \
    }                                                                \
  }
RX_KERNELS(q3_k)

/* ---- MXFP4 (wasm/kernels/src/packed_mxfp4.rs): per block one contiguous 68-byte chunk
 * per group at 68i (e: u8[4], then the 4 rows' quant runs in the order f at 4 + 16r);
 * nibbles looked up in kvalues_mxfp4 + 12 (7-bit) with i8x16.relaxed_swizzle (indices
 * < 16: deterministic, one pshufb on x86), each block's dot started from c = −12·Σa per
 * lane. */

/* lowbit.rs `e8m0_half` of the 4 bytes at p → f32x4: e < 2 ? 2^21 << e : (e − 1) << 23,
 * as max_s((e − 1) << 23, (e + 1) << 21): for e ≥ 2 the first is the larger (4(e − 1) ≥
 * e + 1), for e = 1 it is 0, for e = 0 negative; the same bits for all 256 e, in 5
 * operations instead of 6, with `one` (i32 splat 1) pinned by the caller. */
static inline __attribute__((always_inline)) v128_t e8m0_half4(const uint8_t *p, v128_t one) {
  v128_t e = wasm_u32x4_extend_low_u16x8(wasm_u16x8_extend_low_u8x16(wasm_v128_load32_zero(p)));
  return wasm_i32x4_max(wasm_i32x4_shl(wasm_i32x4_sub(e, one), 23), wasm_i32x4_shl(wasm_i32x4_add(e, one), 21));
}

#define MX_CONSTS()                                                                                       \
  const v128_t m = pin(wasm_i8x16_splat(0x0f));                                                           \
  const v128_t kv = pin(wasm_i8x16_make(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));     \
  const v128_t one = pin(wasm_i32x4_splat(1)), one16 = pin(wasm_i16x8_splat(1));                          \
  const v128_t z = wasm_i32x4_splat(0)

/* Σ over the block's 32 elements per dot lane, plus c: the two halves' i16 pair
 * sums (|·| ≤ 2·127·24 each) added in i16, widened once by i32x4.dot_i16x8_s against
 * pinned ones (one pmaddwd; i32x4.extadd_pairwise costs V8 a constant load per use). */
#define MX_DOT(a0, w0, a1, w1, c)                                                            \
  wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_add(                                        \
                     wasm_i16x8_relaxed_dot_i8x16_i7x16((a0), (w0)),                         \
                     wasm_i16x8_relaxed_dot_i8x16_i7x16((a1), (w1))), one16),                \
                 (c))

#define mxfp4_CONSTS MX_CONSTS
#define mxfp4_YB 48u
#define mxfp4_MINS 0
#define mxfp4_SCRATCH
#define mxfp4_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                                   \
  do {                                                                                                \
    v128_t ylo_ = wasm_v128_load(yb), yhi_ = wasm_v128_load((yb) + 16), c_ = wasm_v128_load((yb) + 32); \
    const uint8_t *q_ = (g) + 68 * (i);                                                               \
    (dd) = wasm_f32x4_mul(e8m0_half4(q_, one), (yd));                                                 \
    for (int r = 0; r < 4; r++) {                                                                     \
      v128_t v_ = wasm_v128_load(q_ + 4 + 16 * r);                                                    \
      v128_t lo_ = wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and(v_, m));                              \
      v128_t hi_ = wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and(wasm_u16x8_shr(v_, 4), m));           \
      (is)[r] = MX_DOT(ylo_, lo_, yhi_, hi_, c_);                                                     \
    }                                                                                                 \
  } while (0)
#define mxfp4_TILE_PREP(g, nb, i)             \
  const uint8_t *qw = (g) + 68 * (i);         \
  v128_t dw = e8m0_half4(qw, one);            \
  qw += 4
#define mxfp4_TILE_TOKEN(yb, yd, dd, accm) ((dd) = wasm_f32x4_mul(dw, (yd)))
#define mxfp4_TILE_ROW(r, NT, yt, is)                                                                   \
  do {                                                                                                  \
    v128_t v_ = wasm_v128_load(qw + 16 * (r));                                                          \
    v128_t lo_ = wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and(v_, m));                                  \
    v128_t hi_ = wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and(wasm_u16x8_shr(v_, 4), m));               \
    for (int t = 0; t < (NT); t++)                                                                      \
      (is)[t] = MX_DOT(wasm_v128_load(yt(t)), lo_, wasm_v128_load(yt(t) + 16), hi_,                 \
                       wasm_v128_load(yt(t) + 32));                                                   \
  } while (0)
RX_KERNELS(mxfp4)

/* ---- Q5_K (wasm/kernels/src/packed_q5k.rs): per row and chunk pair five
 * vectors hold eight 5-bit vectors; the four vectors of a chunk (sub-blocks
 * 2c, 2c+1) are added in i16 before one i32x4.dot_i16x8_s against
 * (s_2c, s_2c+1). Scales/mins in the packed Q4_K planes; mins as there. */

#define Q5GB 704u
#define Q5QOFF 64u

#define Q5_UNPACK(q, V)                                                                                \
  do {                                                                                                 \
    v128_t A0_ = wasm_v128_load(q), A1_ = wasm_v128_load((q) + 16), A2_ = wasm_v128_load((q) + 32);    \
    v128_t A3_ = wasm_v128_load((q) + 48), A4_ = wasm_v128_load((q) + 64);                             \
    (V)[0] = wasm_v128_and(A0_, m31);                                                                  \
    (V)[1] = wasm_v128_and(A1_, m31);                                                                  \
    (V)[2] = wasm_v128_and(A2_, m31);                                                                  \
    (V)[3] = wasm_v128_and(A3_, m31);                                                                  \
    (V)[4] = wasm_v128_and(A4_, m31);                                                                  \
    (V)[5] = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(A0_, 5), m7), wasm_v128_and(wasm_u16x8_shr(A1_, 2), m18)); \
    (V)[6] = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(A2_, 5), m7), wasm_v128_and(wasm_u16x8_shr(A3_, 2), m18)); \
    (V)[7] = wasm_v128_or(wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(A4_, 5), m7),                      \
                                       wasm_v128_and(wasm_u16x8_shr(A1_, 4), m08)),                    \
                          wasm_v128_and(wasm_u16x8_shr(A3_, 3), m10));                                 \
  } while (0)

/* is += the chunk's 4 vectors (activations at p) · scale pair at s (2 bytes). */
#define Q5_CHUNK(is, V, p, s)                                                                                  \
  do {                                                                                                         \
    v128_t M_ = wasm_i16x8_add(                                                                                \
        wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load(p), (V)[0]),                         \
                       wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 16), (V)[1])),                 \
        wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 32), (V)[2]),                  \
                       wasm_i16x8_relaxed_dot_i8x16_i7x16(wasm_v128_load((p) + 48), (V)[3])));                \
    (is) = wasm_i32x4_add((is), wasm_i32x4_dot_i16x8(M_, wasm_u16x8_extend_low_u8x16(wasm_v128_load16_splat(s)))); \
  } while (0)

/* Scales of the 4 rows into scb (row r, sub-block sb at 8r + sb); returns the
 * rows' Σ m_sb·BS_sb (lane r). yb: Y_0..3 of the super-block. */
static inline __attribute__((always_inline)) v128_t q5_scales_mins(const uint8_t *gb, uint8_t *scb, const uint8_t *yb,
                                                                  v128_t m4, v128_t m30) {
  v128_t v0 = wasm_v128_load(gb + 16), v1 = wasm_v128_load(gb + 32), v2 = wasm_v128_load(gb + 48);
  v128_t sca = wasm_v128_or(wasm_v128_and(v0, m4), wasm_v128_and(wasm_i16x8_shl(v2, 4), m30));
  v128_t scbv = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(v0, 4), m4), wasm_v128_and(wasm_i16x8_shl(v2, 2), m30));
  v128_t mna = wasm_v128_or(wasm_v128_and(v1, m4), wasm_v128_and(v2, m30));
  v128_t mnb = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(v1, 4), m4), wasm_v128_and(wasm_u16x8_shr(v2, 2), m30));
  wasm_v128_store(scb, sca);
  wasm_v128_store(scb + 16, scbv);
  return wasm_i32x4_add(
      wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mna), wasm_v128_load(yb)),
                     wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mna), wasm_v128_load(yb + 16))),
      wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_u16x8_extend_low_u8x16(mnb), wasm_v128_load(yb + 32)),
                     wasm_i32x4_dot_i16x8(wasm_u16x8_extend_high_u8x16(mnb), wasm_v128_load(yb + 48))));
}

#define Q5_CONSTS()                                                                             \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f));   \
  const v128_t m31 = pin(wasm_i8x16_splat(31)), m7 = pin(wasm_i8x16_splat(7));                  \
  const v128_t m18 = pin(wasm_i8x16_splat(0x18)), m08 = pin(wasm_i8x16_splat(0x08));            \
  const v128_t m10 = pin(wasm_i8x16_splat(0x10));                                               \
  const v128_t m4 = pin(wasm_i8x16_splat(0x0f)), m30 = pin(wasm_i8x16_splat(0x30));                       \
  const v128_t z = wasm_i32x4_splat(0)

#define q5_k_CONSTS Q5_CONSTS
#define q5_k_YB 320u
#define q5_k_MINS 1
#define q5_k_SCRATCH uint8_t scb[32] __attribute__((aligned(16)))
#define q5_k_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                              \
  do {                                                                                          \
    const uint8_t *gb_ = (g) + Q5GB * (i);                                                      \
    (dd) = wasm_f32x4_mul(scales4(gb_, sm, sk), (yd));                                          \
    v128_t dm_ = wasm_f32x4_mul(scales4(gb_ + 8, sm, sk), (yd));                                \
    v128_t mins_ = q5_scales_mins(gb_, scb, (yb), m4, m30);                                     \
    (accm) = wasm_f32x4_add((accm), wasm_f32x4_mul(dm_, wasm_f32x4_convert_i32x4(mins_)));      \
    for (int cp = 0; cp < 2; cp++)                                                              \
      for (int r = 0; r < 4; r++) {                                                             \
        const uint8_t *p_ = (yb) + 64 + 128 * cp;                                               \
        v128_t V[8];                                                                            \
        Q5_UNPACK(gb_ + Q5QOFF + 320 * cp + 80 * r, V);                                         \
        Q5_CHUNK((is)[r], V, p_, scb + 8 * r + 4 * cp);                                         \
        Q5_CHUNK((is)[r], V + 4, p_ + 64, scb + 8 * r + 4 * cp + 2);                            \
      }                                                                                         \
  } while (0)
#define q5_k_TILE_PREP(g, nb, i)         \
  const uint8_t *gb = (g) + Q5GB * (i);  \
  v128_t dw = scales4(gb, sm, sk), dmw = scales4(gb + 8, sm, sk)
#define q5_k_TILE_TOKEN(yb, yd, dd, accm)                                                                         \
  do {                                                                                                            \
    (dd) = wasm_f32x4_mul(dw, (yd));                                                                              \
    v128_t mins_ = q5_scales_mins(gb, scb, (yb), m4, m30);                                                        \
    (accm) = wasm_f32x4_add((accm), wasm_f32x4_mul(wasm_f32x4_mul(dmw, (yd)), wasm_f32x4_convert_i32x4(mins_)));  \
  } while (0)
#define q5_k_TILE_ROW(r, NT, yt, is)                                  \
  for (int cp = 0; cp < 2; cp++) {                                    \
    v128_t V[8];                                                      \
    Q5_UNPACK(gb + Q5QOFF + 320 * cp + 80 * (r), V);                  \
    for (int t = 0; t < (NT); t++) {                                  \
      const uint8_t *p_ = yt(t) + 64 + 128 * cp;                    \
      Q5_CHUNK((is)[t], V, p_, scb + 8 * (r) + 4 * cp);               \
      Q5_CHUNK((is)[t], V + 4, p_ + 64, scb + 8 * (r) + 4 * cp + 2);  \
    }                                                                 \
  }
RX_KERNELS(q5_k)

/* ---- IQ4_NL (wasm/kernels/src/packed_iq4nl.rs): rows in lanes. Per block one
 * contiguous 72-byte chunk per group at 72i: d: f16[4], then four quant vectors
 * V_j at 8 + 16j whose bytes 4r..4r+3 are row r's standard quant bytes 4j..4j+3
 * (low nibbles: elements 4j..4j+3, high nibbles: 16+4j..16+4j+3). Nibbles looked
 * up in kvalues_iq4nl (relaxed_swizzle, indices < 16); the activation's sign moved
 * onto the weight as x = w ^ m (m = a < 0: x = −w − 1 there) and dotted with |a|
 * (7-bit) by i16x8.relaxed_dot_i8x16_i7x16_s (|pair| ≤ 2·127·127 < 2^15: exact)
 * against the expanded activation's 4-element group j brought to all four lanes
 * by v128.load32_splat (the expanded block stays 80 B: a 272-byte block with the
 * groups stored repeated measured slower, from L1 misses on 2816-wide rows);
 * each pair-sum vector widened by one i32x4.dot_i16x8_s against pinned ones and
 * added into one i32x4 that starts at c8 = Σ |a| over the block's negative
 * elements (Σ x·|a| + c8 = Σ w·a exactly). Lane r is then row r's exact block sum,
 * and one convert, multiply by (d_w·d_a) and add serve the four rows: ggml's
 * generic order (sumf += d·sumi per block), as tiles.rs for IQ4_NL and the scalar
 * twin — bit-identical to both. */
#define NL4_CONSTS()                                                                                       \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f));              \
  const v128_t m = pin(wasm_i8x16_splat(0x0f)), one16 = pin(wasm_i16x8_splat(1));                          \
  const v128_t kv = pin(wasm_i8x16_make(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113))

/* Bytes of one expanded activation block: |a| of the low run (elements 0..15) at 0,
 * its sign masks m at 16, the same of the high run (16..31) at 32 and 48, c8 (i32x4
 * splat) at 64. Element group j (4 bytes at 4j) reaches all four lanes by
 * v128.load32_splat (one vbroadcastss). */
#define NL4_YB 80u

/* s + the widened Σ x·|a| of weights w against group j of the run at p (|a| at p, m at p + 16). */
#define NL4_RUN(s, w, p, j)                                                                               \
  wasm_i32x4_add((s), wasm_i32x4_dot_i16x8(wasm_i16x8_relaxed_dot_i8x16_i7x16(                            \
                                               wasm_v128_xor((w), wasm_v128_load32_splat((p) + 16 + 4 * (j))), \
                                               wasm_v128_load32_splat((p) + 4 * (j))),                    \
                                           one16))
#define NL4_LO(v) wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and((v), m))
#define NL4_HI(v) wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and(wasm_u16x8_shr((v), 4), m))

/* Exact block sums of the 4 rows of chunk q × expanded block yb (lane r = row r).
 * The running sum is stored to a volatile stack slot after every second quant
 * vector: V8 otherwise hoists all of a block's loads to its top and spills
 * (measured: 60 spill moves per two-group block; with the stores 0.90–0.96× the time). */
#define NL4_BLOCK(s, q, yb, sink)                                                 \
  do {                                                                        \
    (s) = wasm_v128_load((yb) + 64);                                          \
    for (int j = 0; j < 4; j++) {                                             \
      v128_t v_ = wasm_v128_load((q) + 8 + 16 * j);                           \
      (s) = NL4_RUN((s), NL4_LO(v_), (yb), j);                                \
      (s) = NL4_RUN((s), NL4_HI(v_), (yb) + 32, j);                           \
      if (j & 1) *(sink) = (s);                                               \
    }                                                                         \
  } while (0)

/* Decode: groups g0 and (unless null) g1 × one token, block by block (two memory streams). */
static inline __attribute__((always_inline)) void nl4_body(const int G, const uint8_t *g0, const uint8_t *g1,
                                                          uint32_t nb, const uint8_t *a, float *o0, float *o1) {
  const float *da = (const float *)a;
  const uint8_t *y = a + align16(4 * nb);
  NL4_CONSTS();
  volatile v128_t sink0_; /* on this thread's stack: no store shared between threads */
  volatile v128_t *sink_ = &sink0_;
  v128_t acc0 = wasm_f32x4_splat(0.0f), acc1 = acc0;
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *yb = y + NL4_YB * i;
    v128_t yd = wasm_f32x4_splat(da[i]), s;
    const uint8_t *q0 = g0 + 72 * i;
    NL4_BLOCK(s, q0, yb, sink_);
    acc0 = wasm_f32x4_add(acc0, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_mul(scales4(q0, sm, sk), yd)));
    if (G == 2) {
      const uint8_t *q1 = g1 + 72 * i;
      NL4_BLOCK(s, q1, yb, sink_);
      acc1 = wasm_f32x4_add(acc1, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s), wasm_f32x4_mul(scales4(q1, sm, sk), yd)));
    }
  }
  wasm_v128_store(o0, acc0);
  if (G == 2) wasm_v128_store(o1, acc1);
}

void rx_group2_iq4_nl(const uint8_t *g0, const uint8_t *g1, uint32_t nb, const uint8_t *a, float *o0, float *o1) {
  if (g1) nl4_body(2, g0, g1, nb, a, o0, o1);
  else nl4_body(1, g0, 0, nb, a, o0, 0);
}

/* Prefill: one group × NT tokens, each quant vector unpacked once for all tokens. */
static inline __attribute__((always_inline)) void nl4_tile(const int NT, const uint8_t *g, uint32_t nb, const uint8_t *a,
                                                          uint32_t astride, float *o, uint32_t ostride) {
  NL4_CONSTS();
  v128_t acc[4];
  for (int t = 0; t < NT; t++) acc[t] = wasm_f32x4_splat(0.0f);
  const uint32_t yo = align16(4 * nb);
  for (uint32_t i = 0; i < nb; i++) {
    const uint8_t *q = g + 72 * i;
    v128_t s[4];
    for (int t = 0; t < NT; t++) s[t] = wasm_v128_load(a + t * astride + yo + NL4_YB * i + 64);
    for (int j = 0; j < 4; j++) {
      v128_t v = wasm_v128_load(q + 8 + 16 * j);
      v128_t lo = NL4_LO(v), hi = NL4_HI(v);
      for (int t = 0; t < NT; t++) {
        const uint8_t *p = a + t * astride + yo + NL4_YB * i;
        s[t] = NL4_RUN(s[t], lo, p, j);
        s[t] = NL4_RUN(s[t], hi, p + 32, j);
      }
    }
    v128_t dw = scales4(q, sm, sk);
    for (int t = 0; t < NT; t++) {
      v128_t yd = wasm_f32x4_splat(((const float *)(a + t * astride))[i]);
      acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(wasm_f32x4_convert_i32x4(s[t]), wasm_f32x4_mul(dw, yd)));
    }
  }
  for (int t = 0; t < NT; t++) wasm_v128_store(o + t * ostride, acc[t]);
}

void rx_tile_iq4_nl(const uint8_t *g, uint32_t nb, const uint8_t *a, uint32_t astride, uint32_t NT, float *o,
                    uint32_t ostride) {
  switch (NT) {
  case 2: nl4_tile(2, g, nb, a, astride, o, ostride); break;
  case 3: nl4_tile(3, g, nb, a, astride, o, ostride); break;
  default: nl4_tile(4, g, nb, a, astride, o, ostride); break;
  }
}

/* ---- Q4_1, Q5_0, Q5_1 (wasm/kernels/src/packed_legacy.rs): the packed Q4_0
 * layout (quant runs in the order f) with each block's scales next to its runs,
 * Q4_1/Q5_1 with the mins m too, Q5_0/Q5_1 with one 16-byte high-bit plane P per block of a group:
 * P byte n, bit 2r (2r+1) = the fifth bit of row r's element in the low (high)
 * nibble of quant byte n. Weights q (0..15 or 0..31: 7-bit) × a with
 * i16x8.relaxed_dot_i8x16_i7x16_s, the low and high halves added in i16
 * (|·| ≤ 2·2·128·31), widened once; Q5_0 adds c = −16·Σa per lane (the q − 16
 * offset); Q4_1/Q5_1 subtract m·s (Q8_1's s) per block from accm, which the
 * skeleton subtracts again: the standard kernels' Σ m·s exactly (f32 negation
 * is exact and the rows' hsum is never −0). */

#define LG_DOT(a0, w0, a1, w1, one)                                                                  \
  wasm_i32x4_dot_i16x8(wasm_i16x8_add(wasm_i16x8_relaxed_dot_i8x16_i7x16((a0), (w0)),               \
                                      wasm_i16x8_relaxed_dot_i8x16_i7x16((a1), (w1))),              \
                       (one))

/* Row r's fifth bits of the low / high nibbles as 0x10 bytes (r a constant). */
static inline __attribute__((always_inline)) v128_t q5_hlo(v128_t p, const int r, v128_t m10) {
  v128_t s = r == 0 ? wasm_i16x8_shl(p, 4) : r == 1 ? wasm_i16x8_shl(p, 2) : r == 2 ? p : wasm_u16x8_shr(p, 2);
  return wasm_v128_and(s, m10);
}
static inline __attribute__((always_inline)) v128_t q5_hhi(v128_t p, const int r, v128_t m10) {
  v128_t s = r == 0   ? wasm_i16x8_shl(p, 3)
             : r == 1 ? wasm_i16x8_shl(p, 1)
             : r == 2 ? wasm_u16x8_shr(p, 1)
                      : wasm_u16x8_shr(p, 3);
  return wasm_v128_and(s, m10);
}

#define LG_CONSTS()                                                                                \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f));       \
  const v128_t m = pin(wasm_i8x16_splat(0x0f)), m10 = pin(wasm_i8x16_splat(0x10));                  \
  const v128_t one = pin(wasm_i16x8_splat(1));                                                      \
  const v128_t z = wasm_i32x4_splat(0)

/* Q4_1 weights of quant run v. */
#define Q41_W(v, lo, hi)                                 \
  v128_t lo = wasm_v128_and((v), m);                     \
  v128_t hi = wasm_v128_and(wasm_u16x8_shr((v), 4), m)
/* Q5 weights of row r's quant run v with the block's plane p. */
#define Q5_W(v, p, r, lo, hi)                                                   \
  v128_t lo = wasm_v128_or(wasm_v128_and((v), m), q5_hlo((p), (r), m10));         \
  v128_t hi = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr((v), 4), m), q5_hhi((p), (r), m10))

/* Q4_1: per block 80 B at 80i: d[4], m[4], the runs. */
#define q4_1_CONSTS LG_CONSTS
#define q4_1_YB 48u
#define q4_1_MINS 1
#define q4_1_SCRATCH
#define q4_1_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                                      \
  do {                                                                                                  \
    v128_t ylo_ = wasm_v128_load(yb), yhi_ = wasm_v128_load((yb) + 16), ys_ = wasm_v128_load((yb) + 32); \
    const uint8_t *q_ = (g) + 80 * (i);                                                                 \
    (dd) = wasm_f32x4_mul(scales4(q_, sm, sk), (yd));                                                   \
    (accm) = wasm_f32x4_sub((accm), wasm_f32x4_mul(scales4(q_ + 8, sm, sk), ys_));                      \
    q_ += 16;                                                                                           \
    for (int r = 0; r < 4; r++) {                                                                       \
      Q41_W(wasm_v128_load(q_ + 16 * r), lo_, hi_);                                                     \
      (is)[r] = LG_DOT(ylo_, lo_, yhi_, hi_, one);                                                      \
    }                                                                                                   \
  } while (0)
#define q4_1_TILE_PREP(g, nb, i)                                                     \
  const uint8_t *qw = (g) + 80 * (i);                                                \
  v128_t dw = scales4(qw, sm, sk), mw = scales4(qw + 8, sm, sk);                     \
  qw += 16
#define q4_1_TILE_TOKEN(yb, yd, dd, accm)                                                    \
  do {                                                                                       \
    (dd) = wasm_f32x4_mul(dw, (yd));                                                         \
    (accm) = wasm_f32x4_sub((accm), wasm_f32x4_mul(mw, wasm_v128_load((yb) + 32)));          \
  } while (0)
#define q4_1_TILE_ROW(r, NT, yt, is)                                                                   \
  do {                                                                                                 \
    Q41_W(wasm_v128_load(qw + 16 * (r)), lo_, hi_);                                                    \
    for (int t = 0; t < (NT); t++)                                                                     \
      (is)[t] = LG_DOT(wasm_v128_load(yt(t)), lo_, wasm_v128_load(yt(t) + 16), hi_, one);              \
  } while (0)
RX_KERNELS(q4_1)

/* Q5_0: per block 88 B at 88i: d[4], P, the runs. */
#define q5_0_CONSTS LG_CONSTS
#define q5_0_YB 48u
#define q5_0_MINS 0
#define q5_0_SCRATCH
#define q5_0_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                                     \
  do {                                                                                                 \
    v128_t ylo_ = wasm_v128_load(yb), yhi_ = wasm_v128_load((yb) + 16), c_ = wasm_v128_load((yb) + 32); \
    const uint8_t *q_ = (g) + 88 * (i) + 8;                                                            \
    (dd) = wasm_f32x4_mul(scales4(q_ - 8, sm, sk), (yd));                                              \
    v128_t p_ = wasm_v128_load(q_);                                                                    \
    for (int r = 0; r < 4; r++) {                                                                      \
      Q5_W(wasm_v128_load(q_ + 16 + 16 * r), p_, r, lo_, hi_);                                         \
      (is)[r] = wasm_i32x4_add(LG_DOT(ylo_, lo_, yhi_, hi_, one), c_);                                 \
    }                                                                                                  \
  } while (0)
#define q5_0_TILE_PREP(g, nb, i)               \
  const uint8_t *qw = (g) + 88 * (i) + 8;        \
  v128_t dw = scales4(qw - 8, sm, sk);           \
  v128_t pw = wasm_v128_load(qw)
#define q5_0_TILE_TOKEN(yb, yd, dd, accm) ((dd) = wasm_f32x4_mul(dw, (yd)))
#define q5_0_TILE_ROW(r, NT, yt, is)                                                                     \
  do {                                                                                                   \
    Q5_W(wasm_v128_load(qw + 16 + 16 * (r)), pw, (r), lo_, hi_);                                         \
    for (int t = 0; t < (NT); t++)                                                                       \
      (is)[t] = wasm_i32x4_add(LG_DOT(wasm_v128_load(yt(t)), lo_, wasm_v128_load(yt(t) + 16), hi_, one), \
                               wasm_v128_load(yt(t) + 32));                                              \
  } while (0)
RX_KERNELS(q5_0)

/* Q5_1: per block 96 B at 96i: d[4], m[4], P, the runs. */
#define q5_1_CONSTS LG_CONSTS
#define q5_1_YB 48u
#define q5_1_MINS 1
#define q5_1_SCRATCH
#define q5_1_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                                      \
  do {                                                                                                  \
    v128_t ylo_ = wasm_v128_load(yb), yhi_ = wasm_v128_load((yb) + 16), ys_ = wasm_v128_load((yb) + 32); \
    const uint8_t *q_ = (g) + 96 * (i) + 16;                                                            \
    (dd) = wasm_f32x4_mul(scales4(q_ - 16, sm, sk), (yd));                                              \
    (accm) = wasm_f32x4_sub((accm), wasm_f32x4_mul(scales4(q_ - 8, sm, sk), ys_));                      \
    v128_t p_ = wasm_v128_load(q_);                                                                     \
    for (int r = 0; r < 4; r++) {                                                                       \
      Q5_W(wasm_v128_load(q_ + 16 + 16 * r), p_, r, lo_, hi_);                                          \
      (is)[r] = LG_DOT(ylo_, lo_, yhi_, hi_, one);                                                      \
    }                                                                                                   \
  } while (0)
#define q5_1_TILE_PREP(g, nb, i)                                                         \
  const uint8_t *qw = (g) + 96 * (i) + 16;                                               \
  v128_t dw = scales4(qw - 16, sm, sk), mw = scales4(qw - 8, sm, sk);                    \
  v128_t pw = wasm_v128_load(qw)
#define q5_1_TILE_TOKEN q4_1_TILE_TOKEN
#define q5_1_TILE_ROW(r, NT, yt, is)                                                                   \
  do {                                                                                                 \
    Q5_W(wasm_v128_load(qw + 16 + 16 * (r)), pw, (r), lo_, hi_);                                       \
    for (int t = 0; t < (NT); t++)                                                                     \
      (is)[t] = LG_DOT(wasm_v128_load(yt(t)), lo_, wasm_v128_load(yt(t) + 16), hi_, one);              \
  } while (0)
RX_KERNELS(q5_1)

/* ---- IQ4_XS (wasm/kernels/src/packed_iq4xs.rs): per super-block group the
 * 4 rows' d, the 32 six-bit scales in a 16-byte nibble plane L and an 8-byte
 * 2-bit plane H (scale v = 8r + ib), then per sub-block the 4 rows' quant runs
 * in the order f. Nibbles looked up in kvalues_iq4nl, the activation's sign
 * moved onto the weight and dotted with |a| (as IQ4_NL) by
 * i16x8.relaxed_dot_i8x16_i7x16_s (|pair| ≤ 2·127·127), each half's pair
 * sums scaled by one i32x4.dot_i16x8_s against its sub-block scale − 32: the
 * exact i32 lane sums of lowbit.rs `tile_iq4_xs`. */

#define XS_GB 544u

/* The 4 rows' scales − 32 as i16 (row r, sub-block ib at sc[8r + ib]). */
static inline __attribute__((always_inline)) void xs_scales(const uint8_t *gb, int16_t *sc, v128_t m, v128_t m30,
                                                           v128_t b32) {
  v128_t l = wasm_v128_load(gb + 8), h2 = wasm_v128_load64_splat(gb + 24);
  v128_t hs = wasm_i8x16_shuffle(h2, wasm_u16x8_shr(h2, 2), 0, 1, 2, 3, 4, 5, 6, 7, 24, 25, 26, 27, 28, 29, 30, 31);
  v128_t a = wasm_v128_or(wasm_v128_and(l, m), wasm_v128_and(wasm_i16x8_shl(hs, 4), m30));
  v128_t b = wasm_v128_or(wasm_v128_and(wasm_u16x8_shr(l, 4), m), wasm_v128_and(hs, m30));
  wasm_v128_store(sc, wasm_i16x8_sub(wasm_u16x8_extend_low_u8x16(a), b32));
  wasm_v128_store(sc + 8, wasm_i16x8_sub(wasm_u16x8_extend_high_u8x16(a), b32));
  wasm_v128_store(sc + 16, wasm_i16x8_sub(wasm_u16x8_extend_low_u8x16(b), b32));
  wasm_v128_store(sc + 24, wasm_i16x8_sub(wasm_u16x8_extend_high_u8x16(b), b32));
}

/* The looked-up weights (i8) of quant run v. */
#define XS_LOOK(v, lo, hi)                                                        \
  v128_t lo = wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and((v), m));             \
  v128_t hi = wasm_i8x16_relaxed_swizzle(kv, wasm_v128_and(wasm_u16x8_shr((v), 4), m))

/* is += one sub-block of one row: weights lo, hi, activations |a| (a0, a1),
 * their sign masks (m0, m1), scale at s. */
#define XS_SUB(is, lo, hi, a0, a1, m0, m1, s)                                                     \
  do {                                                                                            \
    v128_t l_ = wasm_i8x16_sub(wasm_v128_xor((lo), (m0)), (m0));                                  \
    v128_t h_ = wasm_i8x16_sub(wasm_v128_xor((hi), (m1)), (m1));                                  \
    v128_t s_ = wasm_v128_load16_splat(s);                                                        \
    (is) = wasm_i32x4_add((is), wasm_i32x4_add(                                                   \
                                    wasm_i32x4_dot_i16x8(wasm_i16x8_relaxed_dot_i8x16_i7x16(l_, (a0)), s_), \
                                    wasm_i32x4_dot_i16x8(wasm_i16x8_relaxed_dot_i8x16_i7x16(h_, (a1)), s_))); \
  } while (0)

#define XS_CONSTS()                                                                                        \
  const v128_t sm = pin(wasm_u32x4_splat(0x8fffffffu)), sk = pin(wasm_f32x4_splat(0x1p112f));              \
  const v128_t m = pin(wasm_i8x16_splat(0x0f)), m30 = pin(wasm_i8x16_splat(0x30));                         \
  const v128_t b32 = pin(wasm_i16x8_splat(32));                                                            \
  const v128_t kv = pin(wasm_i8x16_make(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)); \
  const v128_t z = wasm_i32x4_splat(0)

#define iq4_xs_CONSTS XS_CONSTS
#define iq4_xs_YB 512u
#define iq4_xs_MINS 0
#define iq4_xs_SCRATCH int16_t sc[32] __attribute__((aligned(16)))
#define iq4_xs_BLOCK(g, nb, i, yb, yd, is, dd, accm)                                              \
  do {                                                                                            \
    const uint8_t *gb_ = (g) + XS_GB * (i);                                                       \
    (dd) = wasm_f32x4_mul(scales4(gb_, sm, sk), (yd));                                            \
    xs_scales(gb_, sc, m, m30, b32);                                                              \
    for (int ib = 0; ib < 8; ib++) {                                                              \
      const uint8_t *p_ = (yb) + 64 * ib;                                                         \
      v128_t a0_ = wasm_v128_load(p_), a1_ = wasm_v128_load(p_ + 16);                             \
      v128_t m0_ = wasm_v128_load(p_ + 32), m1_ = wasm_v128_load(p_ + 48);                        \
      for (int r = 0; r < 4; r++) {                                                               \
        XS_LOOK(wasm_v128_load(gb_ + 32 + 64 * ib + 16 * r), lo_, hi_);                           \
        XS_SUB((is)[r], lo_, hi_, a0_, a1_, m0_, m1_, sc + 8 * r + ib);                           \
      }                                                                                           \
    }                                                                                             \
  } while (0)
#define iq4_xs_TILE_PREP(g, nb, i)               \
  const uint8_t *gb = (g) + XS_GB * (i);         \
  v128_t dw = scales4(gb, sm, sk);               \
  xs_scales(gb, sc, m, m30, b32)
#define iq4_xs_TILE_TOKEN(yb, yd, dd, accm) ((dd) = wasm_f32x4_mul(dw, (yd)))
#define iq4_xs_TILE_ROW(r, NT, yt, is)                                                             \
  for (int ib = 0; ib < 8; ib++) {                                                                 \
    XS_LOOK(wasm_v128_load(gb + 32 + 64 * ib + 16 * (r)), lo_, hi_);                               \
    for (int t = 0; t < (NT); t++) {                                                               \
      const uint8_t *p_ = yt(t) + 64 * ib;                                                         \
      XS_SUB((is)[t], lo_, hi_, wasm_v128_load(p_), wasm_v128_load(p_ + 16), wasm_v128_load(p_ + 32),    \
             wasm_v128_load(p_ + 48), sc + 8 * (r) + ib);                                          \
    }                                                                                              \
  }
RX_KERNELS(iq4_xs)

/* ---- Two groups per pass for the legacy 32-blocks, IQ4_XS, Q6_K and Q3_K (Q6_K on
 * DRAM-sized matrices: 0.81-0.83x the time of one group at a time): decode runs
 * groups g0 and g1 (half a matrix apart) block by block, so two weight
 * streams are in flight from DRAM (the Q4_0 / Q8_0 decode of relaxed.c does
 * the same); per group the operations and their order are those of T##_body
 * (bit-identical). */
#define RX_GROUP2(T)                                                                                       \
  static inline __attribute__((always_inline)) void T##_body2(const uint8_t *g0, const uint8_t *g1,          \
                                                              uint32_t nb, const uint8_t *a, float *o0,    \
                                                              float *o1) {                                 \
    const float *da = (const float *)a;                                                                    \
    const uint8_t *y = a + align16(4 * nb);                                                                \
    T##_CONSTS();                                                                                          \
    T##_SCRATCH;                                                                                           \
    v128_t acc0[4], acc1[4], accm0 = wasm_f32x4_splat(0.0f), accm1 = accm0;                                \
    for (int r = 0; r < 4; r++) acc0[r] = acc1[r] = accm0;                                                 \
    for (uint32_t i = 0; i < nb; i++) {                                                                    \
      const uint8_t *yb = y + T##_YB * i;                                                                  \
      v128_t yd = wasm_f32x4_splat(da[i]), dd;                                                             \
      v128_t is[4] = {z, z, z, z};                                                                         \
      T##_BLOCK(g0, nb, i, yb, yd, is, dd, accm0);                                                         \
      for (int r = 0; r < 4; r++) acc0[r] = acc_lane(acc0[r], is[r], BCAST(dd, r));                        \
      for (int r = 0; r < 4; r++) is[r] = z;                                                               \
      T##_BLOCK(g1, nb, i, yb, yd, is, dd, accm1);                                                         \
      for (int r = 0; r < 4; r++) acc1[r] = acc_lane(acc1[r], is[r], BCAST(dd, r));                        \
    }                                                                                                      \
    store4(o0, acc0, accm0, T##_MINS);                                                                     \
    store4(o1, acc1, accm1, T##_MINS);                                                                     \
  }                                                                                                        \
  void rx_group2_##T(const uint8_t *g0, const uint8_t *g1, uint32_t nb, const uint8_t *a, float *o0,       \
                     float *o1) {                                                                          \
    if (g1) T##_body2(g0, g1, nb, a, o0, o1);                                                              \
    else T##_body(g0, nb, a, o0);                                                                          \
  }
RX_GROUP2(q4_1)
RX_GROUP2(q5_0)
RX_GROUP2(q5_1)
RX_GROUP2(iq4_xs)
RX_GROUP2(mxfp4)
RX_GROUP2(q6_k)
RX_GROUP2(q3_k)
