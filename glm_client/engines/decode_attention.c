/* One layer's attention for the decode steps of several sequences, in one call.
 *
 * Each sequence has its own KV cache, bf16, [layers, kv_heads, capacity, dim]; its step
 * brings one token: queries [kv_heads, group, dim] (float32, scaled), a key and a value
 * [kv_heads, dim] (bf16), which are written into the cache at position past[r] before
 * attending over the past[r] + 1 cached tokens. The output is [kv_heads, group, dim]
 * (float32) per sequence, in the order of the queries.
 *
 * Every (sequence, kv head) pair is one item of one OpenMP loop. It runs on the libgomp
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

/* The sums of eight vectors, as one vector: [sum(a[0]), ..., sum(a[7])]. */
static inline __m256 sums_of_eight(const __m256 *a) {
    __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* Softmax of q . K[t] over t < n, into probabilities[0 .. padded) (zero past n). */
static void attention_weights(const float *q, const uint16_t *K, int64_t n, int64_t padded, int dim,
                              float *probabilities) {
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) { /* eight tokens at a time, one horizontal reduction for all */
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_setzero_ps();
        for (int i = 0; i < dim; i += 8) {
            __m256 qi = _mm256_loadu_ps(q + i);
            for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(qi, load_bf16(K + (t + j) * dim + i), acc[j]);
        }
        _mm256_storeu_ps(probabilities + t, sums_of_eight(acc));
    }
    for (; t < n; t++) {
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < dim; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_bf16(K + t * dim + i), acc);
        probabilities[t] = sum_of(acc);
    }
    for (; t < padded; t++) probabilities[t] = -INFINITY;
    __m256 highest = _mm256_set1_ps(-INFINITY);
    for (t = 0; t < padded; t += 8) highest = _mm256_max_ps(highest, _mm256_loadu_ps(probabilities + t));
    __m256 shift = _mm256_set1_ps(max_of(highest)), total = _mm256_setzero_ps();
    for (t = 0; t < padded; t += 8) {
        __m256 score = _mm256_loadu_ps(probabilities + t);
        __m256 e = exp_nonpositive(_mm256_sub_ps(score, shift));
        e = _mm256_and_ps(e, _mm256_cmp_ps(score, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ)); /* padding: 0 */
        _mm256_storeu_ps(probabilities + t, e);
        total = _mm256_add_ps(total, e);
    }
    __m256 inverse = _mm256_set1_ps(1.0f / sum_of(total));
    for (t = 0; t < padded; t += 8) _mm256_storeu_ps(probabilities + t, _mm256_mul_ps(_mm256_loadu_ps(probabilities + t), inverse));
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
        float *weights = malloc(sizeof(float) * group * padded);
        if (!weights) {
            failed = 1;
            continue;
        }
        for (int g = 0; g < group; g++)
            attention_weights(queries + (head * group + g) * dim, K, n, padded, dim, weights + g * padded);
        float *o = out + head * group * dim;
        for (int g0 = 0; g0 < group; g0 += 4) { /* up to 4 queries at a time: 4 accumulators each pass over V */
            int count = group - g0 < 4 ? group - g0 : 4;
            for (int i = 0; i < dim; i += 8) {
                __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
                for (int64_t t = 0; t < n; t++) {
                    __m256 v = load_bf16(V + t * dim + i);
                    for (int g = 0; g < count; g++)
                        acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(weights[(g0 + g) * padded + t]), v, acc[g]);
                }
                for (int g = 0; g < count; g++) _mm256_storeu_ps(o + (g0 + g) * dim + i, acc[g]);
            }
        }
        free(weights);
    }
    return failed ? -1 : 0;
}
