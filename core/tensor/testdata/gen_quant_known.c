// Generates quant_known_llamacpp.json: llama.cpp's reference quantizers
// (quantize_row_*_ref, quantize_iq4_nl), dequantizers and generic vec_dot
// kernels (ggml-cpu/quants.c *_generic) run on inputs from a xorshift32
// generator that quant_known_test.ts reproduces bit for bit.
// Not part of the build or the test run; regenerate with:
//   bash core/tensor/testdata/gen_quant_known.sh
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "ggml.h"
#include "ggml-quants.h"

// ggml-quants.c references these; the reference quantizers never reach them.
void ggml_abort(const char * file, int line, const char * fmt, ...) { fprintf(stderr, "abort %s:%d\n", file, line); abort(); }
size_t ggml_row_size(enum ggml_type type, int64_t ne) { (void) type; (void) ne; abort(); }
const char * ggml_type_name(enum ggml_type type) { (void) type; return "?"; }
size_t ggml_type_size(enum ggml_type type) { (void) type; abort(); }

// ggml-cpu/quants.c: the generic dot kernels and the fp16 table they read.
float ggml_table_f32_f16[1 << 16];
typedef void (*vec_dot_t)(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void ggml_vec_dot_q2_K_q8_K_generic(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void ggml_vec_dot_q3_K_q8_K_generic(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void ggml_vec_dot_iq4_nl_q8_0_generic(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void ggml_vec_dot_iq4_xs_q8_K_generic(int, float *, size_t, const void *, size_t, const void *, size_t, int);
void ggml_vec_dot_mxfp4_q8_0_generic(int, float *, size_t, const void *, size_t, const void *, size_t, int);

// Exact f16 → f32 for the table (finite values incl. subnormals, ±inf, NaN).
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t) (h & 0x8000u) << 16, e = h & 0x7c00u, m = h & 0x3ffu, u;
    float f;
    if (e == 0x7c00u) {
        u = sign | 0x7f800000u | (m << 13);
        memcpy(&f, &u, 4);
        return f;
    }
    u = (uint32_t) (h & 0x7fffu) << 13;
    memcpy(&f, &u, 4);
    f *= 5.192296858534828e+33f; // 2^112
    memcpy(&u, &f, 4);
    u |= sign;
    memcpy(&f, &u, 4);
    return f;
}

#define N 512
static uint32_t s;
static float u(void) {
    s ^= s << 13; s ^= s >> 17; s ^= s << 5;
    return (float) (s >> 8) * (1.0f / 16777216.0f);
}
static float g(void) { float a = u(); float b = u(); float c = u(); float t = a + b; t = t + c; return t - 1.5f; }

// Case k of the input set (mirrored in quant_known_test.ts).
static void make_case(int k, float * x) {
    s = 0x9E3779B9u ^ (uint32_t) (k * 7919 + 1);
    for (int i = 0; i < N; i++) {
        float v = g();
        switch (k) {
            case 0: x[i] = v; break;
            case 1: x[i] = v * 0.001f; break;
            case 2: x[i] = (i % 37 == 5) ? v * 20.0f : v; break;
            case 3: x[i] = (v < 0 ? -v : v) + 0.1f; break;
            case 4: x[i] = -(v < 0 ? -v : v) - 0.05f; break;
            case 5: x[i] = i < 256 ? 0.0f : v; break;
            case 6: x[i] = (i / 32) % 2 ? 0.75f : v * 3.0f; break;
            case 7: x[i] = v * 1000.0f; break;
            default: x[i] = (i % 16 == 3) ? v * 1e-5f : v * 0.01f; break;
        }
    }
}

static uint32_t fnv(const float * y, int n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) {
        uint32_t b; memcpy(&b, &y[i], 4);
        for (int k = 0; k < 4; k++) { h ^= (b >> (8 * k)) & 0xff; h *= 16777619u; }
    }
    return h;
}

static void hex(const uint8_t * p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

#define NCASES 9
int main(void) {
    static float x[N], y[N];
    static uint8_t q[N * 4], act[N * 4];
    for (uint32_t h = 0; h < (1u << 16); h++) ggml_table_f32_f16[h] = half_to_float((uint16_t) h);
    const char * names[] = { "Q2_K", "Q3_K", "IQ4_NL", "IQ4_NL_SEARCH", "IQ4_XS", "MXFP4" };
    printf("{\n  \"n\": %d,\n  \"cases\": [\n", N);
    int first = 1;
    for (int t = 0; t < 6; t++) {
        for (int k = 0; k < NCASES; k++) {
            make_case(k, x);
            memset(q, 0, sizeof q);
            size_t bytes = 0;
            switch (t) {
                case 0: quantize_row_q2_K_ref(x, (block_q2_K *) q, N); bytes = N / 256 * 84;
                        dequantize_row_q2_K((block_q2_K *) q, y, N); break;
                case 1: quantize_row_q3_K_ref(x, (block_q3_K *) q, N); bytes = N / 256 * 110;
                        dequantize_row_q3_K((block_q3_K *) q, y, N); break;
                case 2: quantize_row_iq4_nl_ref(x, (block_iq4_nl *) q, N); bytes = N / 32 * 18;
                        dequantize_row_iq4_nl((block_iq4_nl *) q, y, N); break;
                case 3: quantize_iq4_nl(x, q, 1, N, NULL); bytes = N / 32 * 18;
                        dequantize_row_iq4_nl((block_iq4_nl *) q, y, N); break;
                case 4: quantize_row_iq4_xs_ref(x, (block_iq4_xs *) q, N); bytes = N / 256 * 136;
                        dequantize_row_iq4_xs((block_iq4_xs *) q, y, N); break;
                case 5: quantize_row_mxfp4_ref(x, (block_mxfp4 *) q, N); bytes = N / 32 * 17;
                        dequantize_row_mxfp4((block_mxfp4 *) q, y, N); break;
            }
            uint32_t dq = fnv(y, N);
            // weight row · activations of case (k + 3) % NCASES in the vec_dot_type
            // (Q8_K: quantize_row_q8_K_ref; Q8_0: quantize_row_q8_0_ref), generic kernel
            vec_dot_t dot = t == 0 ? ggml_vec_dot_q2_K_q8_K_generic : t == 1 ? ggml_vec_dot_q3_K_q8_K_generic
                          : t == 4 ? ggml_vec_dot_iq4_xs_q8_K_generic : t == 5 ? ggml_vec_dot_mxfp4_q8_0_generic
                          : ggml_vec_dot_iq4_nl_q8_0_generic;
            make_case((k + 3) % NCASES, y);
            memset(act, 0, sizeof act);
            if (t == 0 || t == 1 || t == 4) quantize_row_q8_K_ref(y, (block_q8_K *) act, N);
            else quantize_row_q8_0_ref(y, (block_q8_0 *) act, N);
            float dv = 0;
            dot(N, &dv, 0, q, 0, act, 0, 1);
            uint32_t db;
            memcpy(&db, &dv, 4);
            printf("%s    { \"type\": \"%s\", \"case\": %d, \"bytes\": \"", first ? "" : ",\n", names[t], k);
            hex(q, bytes);
            printf("\", \"dequant_fnv1a\": %u, \"dot_bits\": %u }", dq, db);
            first = 0;
        }
    }
    printf("\n  ]\n}\n");
    return 0;
}
