/* Paged attention decode, fp32, CPU: the `c` backend of paged_attn_decode (kernels/paged/c.py).
 *
 * Work items (a sequence's heads, below) are spread over OpenMP threads. Each head walks its
 * visible keys in place through the block table (no gather copy), one page at a time: the page's
 * scores first, then one rescale of the running sum and output if the running max grew, then the
 * page's values. A sink starts the running max at its logit and the running sum at 1 (its own
 * exp), so it joins the normaliser and adds no value. Plain C: the caller passes data pointers,
 * sizes and element strides (the caches may be views of one buffer; their last dim is contiguous).
 *
 * Decode is bound by reading the cache, and a sequence's pages lie anywhere in it, so the hardware
 * prefetcher restarts at every page: each item asks for its next page's rows while it computes on
 * this one. The page's weights exp(s - m) go through a branch-free exp the compiler vectorises
 * (exp_vec, within 3 ulp of exp over the range softmax needs).
 *
 * Per key the work is small (a dot product of d floats, then d multiply-adds into the output), so
 * loop overhead and the dependency chain of one dot product's sum bound it, not the memory: scores
 * go four keys at a time (four independent sums), values four keys per pass over the output (added
 * in key order), and the common head sizes 64 and 128 get their own copies of the loop with the
 * sizes as constants. Measured here against one key at a time with runtime sizes, 4 layers of 8
 * sequences x 640 keys, 4 heads of 64: 1.99 against 2.60 ms on 2 threads, 3.62 against 4.63 on one.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OK = 0, BAD_PAGE = 1, TABLE_TOO_SHORT = 2, NO_MEMORY = 3 };

/* exp(x) for x <= 0 (softmax weights): 2^n * p(r), n = round(x / ln 2) by the 1.5 * 2^23 trick,
 * r = x - n ln 2 in two parts (Cody-Waite), p a degree-6 Taylor polynomial (|r| <= ln 2 / 2: within
 * 3 ulp of exp). Inputs below -87 give about 2^-126, not 0: next to a weight of 1 (the max) it
 * vanishes in the sum. No branches or calls, so `omp simd` loops over it vectorise. */
static inline float exp_vec(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float shifted = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: n in the low bits */
    const float n = shifted - 12582912.0f;
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { float f; int32_t i; } bits = {.f = shifted}, scale;
    scale.i = (bits.i - 0x4B400000 + 127) << 23; /* 2^n */
    return p * scale.f;
}

/* Ask for the rows [0, rows) of a page (row stride `stride` elements, `width` floats each). */
static inline void prefetch_page(const float *base, int64_t rows, int64_t stride, int64_t width) {
    for (int64_t j = 0; j < rows; j++)
        for (int64_t e = 0; e < width; e += 16) __builtin_prefetch(base + j * stride + e, 0, 3);
}

/* One (sequence, query head): o[dv] = softmax over the keys [lo, len) (+ sink) of q . k, times v. */
static inline __attribute__((always_inline)) int
attend(const float *q, const float *k, const float *v, const int32_t *table, int64_t len, int64_t lo,
       int64_t num_pages, int64_t page, int64_t d, int64_t dv, int64_t k_sp, int64_t k_st, int64_t v_sp,
       int64_t v_st, const float *sink, float scale, float *score, float *acc, float *o) {
    float m = sink ? *sink : -INFINITY;
    float l = sink ? 1.0f : 0.0f;
    memset(acc, 0, (size_t)dv * sizeof(float));
    for (int64_t p = lo / page; p * page < len; p++) {
        const int64_t phys = table[p];
        if (phys < 0 || phys >= num_pages) return BAD_PAGE;
        if ((p + 1) * page < len) { /* the next page: its reads start now, it is used next */
            const int64_t next = table[p + 1];
            if (next >= 0 && next < num_pages) {
                prefetch_page(k + next * k_sp, page, k_st, d);
                prefetch_page(v + next * v_sp, page, v_st, dv);
            }
        }
        const int64_t j0 = (lo > p * page ? lo : p * page) - p * page;
        const int64_t j1 = (len < (p + 1) * page ? len : (p + 1) * page) - p * page;
        const float *kp = k + phys * k_sp;
        const float *vp = v + phys * v_sp;
        float mx = m;
        int64_t j = j0;
        for (; j + 4 <= j1; j += 4) { /* four keys at once: four independent sums, not one chain */
            const float *k0 = kp + j * k_st, *k1 = k0 + k_st, *k2 = k1 + k_st, *k3 = k2 + k_st;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (int64_t e = 0; e < d; e++) {
                s0 += q[e] * k0[e];
                s1 += q[e] * k1[e];
                s2 += q[e] * k2[e];
                s3 += q[e] * k3[e];
            }
            score[j] = s0 * scale;
            score[j + 1] = s1 * scale;
            score[j + 2] = s2 * scale;
            score[j + 3] = s3 * scale;
        }
        for (; j < j1; j++) {
            const float *kr = kp + j * k_st;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t e = 0; e < d; e++) s += q[e] * kr[e];
            score[j] = s * scale;
        }
        for (j = j0; j < j1; j++) mx = score[j] > mx ? score[j] : mx;
        if (mx > m) { /* the max grew: rescale what was summed against the old one */
            const float c = expf(m - mx); /* exp(-inf) = 0 before the first key */
            l *= c;
#pragma omp simd
            for (int64_t e = 0; e < dv; e++) acc[e] *= c;
            m = mx;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t jj = j0; jj < j1; jj++) {
            score[jj] = exp_vec(score[jj] - m);
            sum += score[jj];
        }
        l += sum;
        for (j = j0; j + 4 <= j1; j += 4) { /* four values per pass over acc, added in key order */
            const float w0 = score[j], w1 = score[j + 1], w2 = score[j + 2], w3 = score[j + 3];
            const float *v0 = vp + j * v_st, *v1 = v0 + v_st, *v2 = v1 + v_st, *v3 = v2 + v_st;
#pragma omp simd
            for (int64_t e = 0; e < dv; e++)
                acc[e] = (((acc[e] + w0 * v0[e]) + w1 * v1[e]) + w2 * v2[e]) + w3 * v3[e];
        }
        for (; j < j1; j++) {
            const float w = score[j];
            const float *vr = vp + j * v_st;
#pragma omp simd
            for (int64_t e = 0; e < dv; e++) acc[e] += w * vr[e];
        }
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f; /* l = 0 only for a sequence with no keys */
#pragma omp simd
    for (int64_t e = 0; e < dv; e++) o[e] = acc[e] * inv;
    return OK;
}

/* attend with the head sizes as constants (the common 64 and 128): the compiler unrolls the
 * per-key loops fully (measured: 1.93 against 2.42 ms for the same loops with runtime sizes, the
 * case in the header). */
static int attend_any(const float *q, const float *k, const float *v, const int32_t *table, int64_t len,
                      int64_t lo, int64_t num_pages, int64_t page, int64_t d, int64_t dv, int64_t k_sp,
                      int64_t k_st, int64_t v_sp, int64_t v_st, const float *sink, float scale,
                      float *score, float *acc, float *o) {
    if (d == 64 && dv == 64)
        return attend(q, k, v, table, len, lo, num_pages, page, 64, 64, k_sp, k_st, v_sp, v_st, sink, scale,
                      score, acc, o);
    if (d == 128 && dv == 128)
        return attend(q, k, v, table, len, lo, num_pages, page, 128, 128, k_sp, k_st, v_sp, v_st, sink, scale,
                      score, acc, o);
    return attend(q, k, v, table, len, lo, num_pages, page, d, dv, k_sp, k_st, v_sp, v_st, sink, scale, score,
                  acc, o);
}

/* q [n, h, d] and out [n, h, dv] contiguous; block_table [n, max_pages] and seq_lens [n] contiguous
 * int32; k/v strides in elements for (page, token, head). window <= 0: none. sinks may be NULL.
 * Returns OK or the first error met (items after an error are skipped).
 *
 * One work item is one sequence's kv heads (with their query heads), or a share of them when there
 * are too few sequences to keep the threads busy: a sequence's pages are then read by one thread,
 * head after head (measured here: ~18 % faster than one item per query head at 32 sequences, the
 * same at 1-8). */
int paged_attn_decode_f32(const float *q, const float *k, const float *v, const int32_t *block_table,
                          const int32_t *seq_lens, const float *sinks, float *out, int64_t n, int64_t h,
                          int64_t hkv, int64_t d, int64_t dv, int64_t page, int64_t num_pages,
                          int64_t max_pages, int64_t k_sp, int64_t k_st, int64_t k_sh, int64_t v_sp,
                          int64_t v_st, int64_t v_sh, int64_t window, float scale, int num_threads) {
    const int64_t group = h / hkv;
    int64_t per = hkv; /* kv heads per item: halved while there are fewer than 2 items per thread */
    while (per % 2 == 0 && n * (hkv / per) < 2 * num_threads) per /= 2;
    const int64_t shares = hkv / per;
    int status = OK;
#pragma omp parallel num_threads(num_threads)
    {
        float *score = malloc((size_t)page * sizeof(float));
        float *acc = malloc((size_t)dv * sizeof(float));
        int mine = score && acc ? OK : NO_MEMORY;
        /* dynamic: ragged lengths make items unequal */
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++) {
            for (int64_t c = 0; c < shares; c++) {
                if (mine != OK) continue;
                const int64_t len = seq_lens[i];
                const int64_t lo = window > 0 && len > window ? len - window : 0;
                if (len > max_pages * page) {
                    mine = TABLE_TOO_SHORT;
                    continue;
                }
                for (int64_t hh = c * per * group; hh < (c + 1) * per * group && mine == OK; hh++) {
                    const int64_t kv = hh / group;
                    mine = attend_any(q + (i * h + hh) * d, k + kv * k_sh, v + kv * v_sh,
                                      block_table + i * max_pages, len, lo, num_pages, page, d, dv, k_sp,
                                      k_st, v_sp, v_st, sinks ? sinks + hh : NULL, scale, score, acc,
                                      out + (i * h + hh) * dv);
                }
            }
        }
        if (mine != OK) {
#pragma omp atomic write
            status = mine;
        }
        free(score);
        free(acc);
    }
    return status;
}
