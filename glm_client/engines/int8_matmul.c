/* y = x @ W.T for int8 weights with one scale per output row, for a few rows of x at once.
 *
 * The output head's matmul on the decode steps (fast_llama.py): torch's int8 kernel goes over
 * the weights once per row of x, so 8 rows cost 3.7x one (49152 x 576, 2 cores). Here each
 * weight row is loaded and widened to float once, for all rows (at most MAX_ROWS a pass).
 * x is float32 [rows, in], W int8 [out, in], scales float32 [out], y float32 [rows, out];
 * `in` must be a multiple of 8. The loop over output rows is one OpenMP loop on torch's threads
 * (see decode_attention.c). Built by native_attention.py with the same flags.
 */
#include <immintrin.h>
#include <stdint.h>

#define MAX_ROWS 8

static inline float sum8(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_hadd_ps(half, half);
    return _mm_cvtss_f32(_mm_hadd_ps(half, half));
}

int int8_matmul(int threads, int rows, int out, int in, const float *x, const int8_t *weight,
                const float *scales, float *y) {
    if (in % 8)
        return 1;
    for (int first = 0; first < rows; first += MAX_ROWS) {
        int count = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        const float *xs = x + (long)first * in;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int o = 0; o < out; o++) {
            __m256 acc[MAX_ROWS];
            for (int r = 0; r < MAX_ROWS; r++)
                acc[r] = _mm256_setzero_ps();
            const int8_t *w = weight + (long)o * in;
            for (int i = 0; i < in; i += 8) {
                __m128i bytes = _mm_loadl_epi64((const __m128i *)(w + i));
                __m256 wide = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                for (int r = 0; r < count; r++)
                    acc[r] = _mm256_fmadd_ps(wide, _mm256_loadu_ps(xs + (long)r * in + i), acc[r]);
            }
            for (int r = 0; r < count; r++)
                y[(long)(first + r) * out + o] = scales[o] * sum8(acc[r]);
        }
    }
    return 0;
}
