// state_store / state_load for recurrent states (kernels/state_ops.py): fp32 [N, H, K, V] <->
// bf16, fp16 or int8 with one fp32 scale per (gk x gv) group. Plain C + OpenMP, one pass over
// memory; bit-for-bit the torch reference (same hash, same fp32 operations in the same order).
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { BF16 = 1, FP16 = 2, INT8 = 3 };

static inline float hash_u(uint32_t seed, uint64_t i) {  // lowbias32(i * 0x9E3779B9 + seed) -> [0, 1)
    uint32_t x = (uint32_t)i * 0x9E3779B9u + seed;
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return (float)(x >> 8) * 0x1p-24f;
}

static inline uint32_t bits_of(float x) { uint32_t b; memcpy(&b, &x, 4); return b; }
static inline float float_of(uint32_t b) { float x; memcpy(&x, &b, 4); return x; }

// The bf16/fp16 grid step at x: 2^(max(e, e_min) - mantissa).
static inline float grid_step(float x, int mantissa, int e_min) {
    int e = (int)((bits_of(x) >> 23) & 0xFF) - 127;
    if (e < e_min) e = e_min;
    return float_of((uint32_t)(e - mantissa + 127) << 23);
}

static inline float clampf(float x, float lim) { return x > lim ? lim : (x < -lim ? -lim : x); }

int state_store_f32(const float *state, void *values, float *scales, int64_t n, int64_t h, int64_t k,
                    int64_t v, int64_t gk, int64_t gv, int dtype, int stochastic, uint32_t seed,
                    int threads) {
    const int64_t total = n * h * k * v;
    if (dtype == BF16 || dtype == FP16) {
        const float lim = dtype == BF16 ? 3.38953139e38f : 65504.0f;
        const int mantissa = dtype == BF16 ? 7 : 10, e_min = dtype == BF16 ? -119 : -14;
        uint16_t *out = (uint16_t *)values;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < total; i++) {
            float x = clampf(state[i], lim);
            if (stochastic) {
                float ulp = grid_step(x, mantissa, e_min);
                x = clampf(floorf(x / ulp + hash_u(seed, (uint64_t)i)) * ulp, lim);
            }
            if (dtype == BF16) {
                uint32_t b = bits_of(x);
                out[i] = (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);  // round to nearest even
            } else {
                _Float16 f = (_Float16)x;
                memcpy(&out[i], &f, 2);
            }
        }
        return 0;
    }
    if (dtype != INT8) return 1;
    int8_t *out = (int8_t *)values;
    const int64_t kb = k / gk, vb = v / gv, groups = n * h * kb * vb;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t nh = g / (kb * vb), r0 = (g / vb) % kb * gk, c0 = g % vb * gv;
        const int64_t base = nh * k * v;
        float amax = 0.0f;
        for (int64_t r = r0; r < r0 + gk; r++)
            for (int64_t c = c0; c < c0 + gv; c++) amax = fmaxf(amax, fabsf(state[base + r * v + c]));
        const float scale = amax / 127.0f, safe = scale > 0.0f ? scale : 1.0f;
        scales[g] = scale;
        for (int64_t r = r0; r < r0 + gk; r++)
            for (int64_t c = c0; c < c0 + gv; c++) {
                const int64_t i = base + r * v + c;
                float y = floorf(state[i] / safe + (stochastic ? hash_u(seed, (uint64_t)i) : 0.5f));
                out[i] = (int8_t)clampf(y, 127.0f);
            }
    }
    return 0;
}

int state_load_f32(const void *values, const float *scales, float *state, int64_t n, int64_t h,
                   int64_t k, int64_t v, int64_t gk, int64_t gv, int dtype, int threads) {
    const int64_t total = n * h * k * v;
    if (dtype == BF16 || dtype == FP16) {
        const uint16_t *in = (const uint16_t *)values;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < total; i++) {
            if (dtype == BF16) {
                state[i] = float_of((uint32_t)in[i] << 16);
            } else {
                _Float16 f;
                memcpy(&f, &in[i], 2);
                state[i] = (float)f;
            }
        }
        return 0;
    }
    if (dtype != INT8) return 1;
    const int8_t *in = (const int8_t *)values;
    const int64_t kb = k / gk, vb = v / gv;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < total; i++) {
        const int64_t c = i % v, r = i / v % k, nh = i / (k * v);
        state[i] = (float)in[i] * scales[(nh * kb + r / gk) * vb + c / gv];
    }
    return 0;
}
