/* One layer's attention for the decode steps of several sequences, in one call.
 *
 * Each sequence has its own KV cache, bf16, [layers, kv_heads, capacity, dim]; its step
 * brings one token: queries [kv_heads, group, dim] (float32, scaled), a key and a value
 * [kv_heads, dim] (bf16), which are written into the cache at position past[r] before
 * attending over the past[r] + 1 cached tokens. The output is [kv_heads, group, dim]
 * (float32) per sequence, in the order of the queries.
 *
 * Every (sequence, kv head) pair is one item of one OpenMP loop, its queries (the kv head's group)
 * taken 3 at a time over each token of K and V. It runs on the libgomp
 * that torch loaded (the same soname), so on torch's threads. Built by native_attention.py
 * with the system compiler (-march=native: AVX2 and FMA are required, checked there).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 8 bf16 to 8 float32: a bf16 is the top half of a float32. */
static inline __m256 load_bf16(const uint16_t *p) {
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

/* exp(x) for x <= 0 (Cephes' expf: 2^n * polynomial, relative error about 1e-7). */
static inline __m256 exp_nonpositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

static inline float sum_of(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float max_of(__m256 x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* The sums of four vectors: [sum(a), sum(b), sum(c), sum(d)]. */
static inline __m128 sums_of_four(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* Softmax over scores[0 .. n), in place, zero past n up to `padded` (a multiple of 8). */
static void softmax(float *scores, int64_t n, int64_t padded) {
    for (int64_t t = n; t < padded; t++) scores[t] = -INFINITY;
    __m256 highest = _mm256_set1_ps(-INFINITY);
    for (int64_t t = 0; t < padded; t += 8) highest = _mm256_max_ps(highest, _mm256_loadu_ps(scores + t));
    __m256 shift = _mm256_set1_ps(max_of(highest)), total = _mm256_setzero_ps();
    for (int64_t t = 0; t < padded; t += 8) {
        __m256 score = _mm256_loadu_ps(scores + t);
        __m256 e = exp_nonpositive(_mm256_sub_ps(score, shift));
        e = _mm256_and_ps(e, _mm256_cmp_ps(score, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ)); /* padding: 0 */
        _mm256_storeu_ps(scores + t, e);
        total = _mm256_add_ps(total, e);
    }
    __m256 inverse = _mm256_set1_ps(1.0f / sum_of(total));
    for (int64_t t = 0; t < padded; t += 8) _mm256_storeu_ps(scores + t, _mm256_mul_ps(_mm256_loadu_ps(scores + t), inverse));
}

/* Attention of `count` (1 to 3) queries of one kv head's group over its n cached tokens, into
 * out[g * dim ..]. The queries share each load of K and V (and its widening from bf16), which
 * the kernel did once per query before. Inlined with `count` and `wide` (dim a multiple of 32)
 * constant, so the sums stay in the 16 registers: 3 queries x 4 tokens, or x 4 column blocks. */
static inline __attribute__((always_inline)) void attend(const int count, const int wide, const float *q,
                                                         const uint16_t *K, const uint16_t *V, int64_t n,
                                                         int64_t padded, int dim, float *weights, float *out) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) { /* scores of 4 tokens at a time */
        __m256 acc[3][4];
        for (int g = 0; g < count; g++)
            for (int j = 0; j < 4; j++) acc[g][j] = _mm256_setzero_ps();
        for (int i = 0; i < dim; i += 8)
            for (int j = 0; j < 4; j++) {
                __m256 k = load_bf16(K + (t + j) * dim + i);
                for (int g = 0; g < count; g++) acc[g][j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * dim + i), k, acc[g][j]);
            }
        for (int g = 0; g < count; g++)
            _mm_storeu_ps(weights + g * padded + t, sums_of_four(acc[g][0], acc[g][1], acc[g][2], acc[g][3]));
    }
    for (; t < n; t++)
        for (int g = 0; g < count; g++) {
            __m256 acc = _mm256_setzero_ps();
            for (int i = 0; i < dim; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * dim + i), load_bf16(K + t * dim + i), acc);
            weights[g * padded + t] = sum_of(acc);
        }
    for (int g = 0; g < count; g++) softmax(weights + g * padded, n, padded);
    const int blocks = wide ? 4 : 1; /* columns of 8 summed together */
    for (int i0 = 0; i0 < dim; i0 += 8 * blocks) {
        __m256 acc[3][4];
        for (int g = 0; g < count; g++)
            for (int b = 0; b < blocks; b++) acc[g][b] = _mm256_setzero_ps();
        for (int64_t t = 0; t < n; t++) {
            __m256 w[3];
            for (int g = 0; g < count; g++) w[g] = _mm256_set1_ps(weights[g * padded + t]);
            for (int b = 0; b < blocks; b++) {
                __m256 v = load_bf16(V + t * dim + i0 + 8 * b);
                for (int g = 0; g < count; g++) acc[g][b] = _mm256_fmadd_ps(w[g], v, acc[g][b]);
            }
        }
        for (int g = 0; g < count; g++)
            for (int b = 0; b < blocks; b++) _mm256_storeu_ps(out + g * dim + i0 + 8 * b, acc[g][b]);
    }
}

/* Returns 0, or -1 when scratch memory could not be had (the caller falls back). */
int decode_attention(int threads, int rows, int layer, int kv_heads, int group, int dim, uint16_t *const *keys,
                     uint16_t *const *values, const int64_t *capacity, const int64_t *past, const float *queries,
                     const uint16_t *new_keys, const uint16_t *new_values, float *out) {
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(| : failed)
    for (int item = 0; item < rows * kv_heads; item++) {
        int r = item / kv_heads, h = item % kv_heads;
        int64_t n = past[r] + 1, padded = (n + 7) & ~(int64_t)7, head = (int64_t)r * kv_heads + h;
        uint16_t *K = keys[r] + ((int64_t)layer * kv_heads + h) * capacity[r] * dim;
        uint16_t *V = values[r] + ((int64_t)layer * kv_heads + h) * capacity[r] * dim;
        memcpy(K + past[r] * dim, new_keys + head * dim, dim * sizeof(uint16_t));
        memcpy(V + past[r] * dim, new_values + head * dim, dim * sizeof(uint16_t));
        float *weights = malloc(sizeof(float) * 3 * padded);
        if (!weights) {
            failed = 1;
            continue;
        }
        for (int g0 = 0; g0 < group; g0 += 3) { /* up to 3 queries share each pass over K and V */
            const float *q = queries + (head * group + g0) * dim;
            float *o = out + (head * group + g0) * dim;
            int count = group - g0 < 3 ? group - g0 : 3;
            if (dim % 32 == 0) {
                if (count == 3) attend(3, 1, q, K, V, n, padded, dim, weights, o);
                else if (count == 2) attend(2, 1, q, K, V, n, padded, dim, weights, o);
                else attend(1, 1, q, K, V, n, padded, dim, weights, o);
            } else {
                if (count == 3) attend(3, 0, q, K, V, n, padded, dim, weights, o);
                else if (count == 2) attend(2, 0, q, K, V, n, padded, dim, weights, o);
                else attend(1, 0, q, K, V, n, padded, dim, weights, o);
            }
        }
        free(weights);
    }
    return failed ? -1 : 0;
}
