// state_store / state_load for recurrent states (kernels/state/ops.py): fp32 [N, H, K, V] <->
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
        // One loop per case, branch-free inside, so each vectorizes.
        if (stochastic) {
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 65536)
            for (int64_t i = 0; i < total; i++) {
                float x = clampf(state[i], lim);
                float ulp = grid_step(x, mantissa, e_min);
                x = clampf(floorf(x / ulp + hash_u(seed, (uint64_t)i)) * ulp, lim);
                if (dtype == BF16) {
                    out[i] = (uint16_t)(bits_of(x) >> 16);  // exact: x is on bf16's grid
                } else {
                    _Float16 f = (_Float16)x;
                    memcpy(&out[i], &f, 2);
                }
            }
        } else if (dtype == BF16) {
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 65536)
            for (int64_t i = 0; i < total; i++) {
                uint32_t b = bits_of(clampf(state[i], lim));
                out[i] = (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);  // round to nearest even
            }
        } else {
            _Float16 *half = (_Float16 *)values;
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 65536)
            for (int64_t i = 0; i < total; i++) half[i] = (_Float16)clampf(state[i], lim);
        }
        return 0;
    }
    if (dtype != INT8) return 1;
    int8_t *out = (int8_t *)values;
    const int64_t kb = k / gk, vb = v / gv, groups = n * h * kb * vb;
#pragma omp parallel for num_threads(threads) schedule(static) if (groups * gk * gv > 65536)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t nh = g / (kb * vb), r0 = (g / vb) % kb * gk, c0 = g % vb * gv;
        const float *src = state + nh * k * v + r0 * v + c0;
        float amax = 0.0f;
        for (int64_t r = 0; r < gk; r++)
            for (int64_t c = 0; c < gv; c++) {
                const float a = fabsf(src[r * v + c]);
                amax = a > amax ? a : amax;
            }
        const float scale = amax / 127.0f, safe = scale > 0.0f ? scale : 1.0f;
        scales[g] = scale;
        const int64_t base = src - state;
        for (int64_t r = 0; r < gk; r++) {
            const float *x = src + r * v;
            int8_t *q = out + base + r * v;
            if (stochastic) {
                for (int64_t c = 0; c < gv; c++)
                    q[c] = (int8_t)clampf(floorf(x[c] / safe + hash_u(seed, (uint64_t)(base + r * v + c))), 127.0f);
            } else {
                for (int64_t c = 0; c < gv; c++) q[c] = (int8_t)clampf(floorf(x[c] / safe + 0.5f), 127.0f);
            }
        }
    }
    return 0;
}

int state_load_f32(const void *values, const float *scales, float *state, int64_t n, int64_t h,
                   int64_t k, int64_t v, int64_t gk, int64_t gv, int dtype, int threads) {
    const int64_t total = n * h * k * v;
    if (dtype == BF16) {
        const uint16_t *in = (const uint16_t *)values;
        uint32_t *out = (uint32_t *)state;
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 65536)
        for (int64_t i = 0; i < total; i++) out[i] = (uint32_t)in[i] << 16;
        return 0;
    }
    if (dtype == FP16) {
        const _Float16 *in = (const _Float16 *)values;
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 65536)
        for (int64_t i = 0; i < total; i++) state[i] = (float)in[i];
        return 0;
    }
    if (dtype != INT8) return 1;
    const int8_t *in = (const int8_t *)values;
    const int64_t kb = k / gk, vb = v / gv, rows = n * h * k;
#pragma omp parallel for num_threads(threads) schedule(static) if (total > 65536)
    for (int64_t row = 0; row < rows; row++) {  // one key row: V entries, V / gv scales
        const int64_t nh = row / k, r = row % k;
        const float *s = scales + (nh * kb + r / gk) * vb;
        const int8_t *src = in + row * v;
        float *dst = state + row * v;
        for (int64_t cb = 0; cb < vb; cb++) {
            const float sc = s[cb];
            for (int64_t c = cb * gv; c < (cb + 1) * gv; c++) dst[c] = (float)src[c] * sc;
        }
    }
    return 0;
}
