/* y = x @ W.T for int4 weights in 32-wide groups (GGUF's Q4_1: w = q * scale + min), for a few rows.
 *
 * The decode steps' linear layers (packed.py): torch's int4 kernel takes 2.7x as long for 8 rows
 * as for 1 (all of the embedded model's layers, 2 cores: 22 ms against 8.3). Here each group of 32
 * weights is unpacked and widened to float once for all rows of the step (at most MAX_ROWS a pass),
 * and every row sums in float32, in the same order whatever the number of rows: a row's output does
 * not depend on the step's other rows.
 *
 * x is float32 [rows, in]; weight uint8 [out, in / 2], a group in 16 bytes, byte j holding weights
 * j (low nibble) and j + 16 (high); scales and mins float32 [out, in / 32]; y float32 [rows, out].
 * With few rows one pass computes several outputs, so that enough independent sums are in flight
 * to keep the FMA units busy; the tiles are chosen to keep every sum in a register. The loop over
 * tiles is one OpenMP loop on torch's threads (see decode_attention.c). Built by native_attention.py.
 */
#include <immintrin.h>
#include <stdint.h>

#define MAX_ROWS 8
#define GROUP 32

static inline float sum8(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_hadd_ps(half, half);
    return _mm_cvtss_f32(_mm_hadd_ps(half, half));
}

/* Weights 8k .. 8k + 7 of a group, as floats. */
static inline __m256 dequantize(const uint8_t *group, int k, float scale, float min) {
    __m128i bytes = _mm_loadl_epi64((const __m128i *)(group + (k & 1) * 8));
    if (k >= 2)
        bytes = _mm_srli_epi16(bytes, 4);
    bytes = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    return _mm256_fmadd_ps(q, _mm256_set1_ps(scale), _mm256_set1_ps(min));
}

/* Outputs o .. o + outs - 1 for `count` rows. Inlined with both constant, so the loops unroll and
 * the sums stay in registers. */
static inline __attribute__((always_inline)) void tile(const int outs, const int count, int o, int out,
                                                       int in, const float *x, const uint8_t *weight,
                                                       const float *scales, const float *mins, float *y) {
    int groups = in / GROUP;
    __m256 sums[4 * MAX_ROWS];
#pragma GCC unroll 32
    for (int s = 0; s < outs * count; s++)
        sums[s] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256 w[4];
#pragma GCC unroll 4
            for (int j = 0; j < outs; j++) {
                long at = (long)(o + j) * groups + g;
                w[j] = dequantize(weight + at * (GROUP / 2), k, scales[at], mins[at]);
            }
#pragma GCC unroll 8
            for (int r = 0; r < count; r++) {
                __m256 xs = _mm256_loadu_ps(x + (long)r * in + g * GROUP + 8 * k);
#pragma GCC unroll 4
                for (int j = 0; j < outs; j++)
                    sums[j * count + r] = _mm256_fmadd_ps(w[j], xs, sums[j * count + r]);
            }
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < outs; j++)
#pragma GCC unroll 8
        for (int r = 0; r < count; r++)
            y[(long)r * out + o + j] = sum8(sums[j * count + r]);
}

/* All outputs for `count` rows, `outs` at a time, the last few one at a time. */
#define ALL_OUTPUTS(outs, count)                                                                   \
    do {                                                                                           \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                         \
        for (int t = 0; t < out / (outs); t++)                                                     \
            tile(outs, count, t * (outs), out, in, xs, weight, scales, mins, ys);                  \
        for (int o = out / (outs) * (outs); o < out; o++)                                          \
            tile(1, count, o, out, in, xs, weight, scales, mins, ys);                              \
    } while (0)

int int4_matmul(int threads, int rows, int out, int in, const float *x, const uint8_t *weight,
                const float *scales, const float *mins, float *y) {
    if (in % GROUP)
        return 1;
    for (int first = 0; first < rows; first += MAX_ROWS) {
        int count = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        const float *xs = x + (long)first * in;
        float *ys = y + (long)first * out;
        /* 4 to 8 sums in flight; 8 rows of 2 outputs would not fit the 16 registers (measured 1.4x slower) */
        switch (count) {
        case 1: ALL_OUTPUTS(4, 1); break;
        case 2: ALL_OUTPUTS(4, 2); break;
        case 3: ALL_OUTPUTS(2, 3); break;
        case 4: ALL_OUTPUTS(2, 4); break;
        case 5: ALL_OUTPUTS(1, 5); break;
        case 6: ALL_OUTPUTS(1, 6); break;
        case 7: ALL_OUTPUTS(1, 7); break;
        default: ALL_OUTPUTS(1, 8); break;
        }
    }
    return 0;
}
