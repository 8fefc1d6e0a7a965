#include "kernels/cpu/code_gather_cpu.hpp"

#include "kernels/vector_clones.hpp"

#ifdef QF_AVX512_INTRINSICS
#include <immintrin.h>
#endif

namespace quantflow {
namespace {

#ifdef QF_AVX512_INTRINSICS
// The masked intrinsics with every lane set: GCC 12 warns of the plain ones' undefined sources.

QF_AVX512_INTRINSICS __m512i codes16(const std::uint8_t* codes) {
    return _mm512_maskz_cvtepu8_epi32(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
}
QF_AVX512_INTRINSICS __m512 gather16(const float* table, __m512i index) {
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, index, table, 4);
}

QF_AVX512_INTRINSICS void add_code_values_avx512(const float* table, const std::uint8_t* codes, std::int64_t n, float* x) {
    std::int64_t c = 0;
    for (; c + 16 <= n; c += 16) _mm512_storeu_ps(x + c, _mm512_add_ps(_mm512_loadu_ps(x + c), gather16(table, codes16(codes + c))));
    for (; c < n; ++c) x[c] += table[codes[c]];
}

QF_AVX512_INTRINSICS void code_errors_f64_avx512(const float* table, const std::uint8_t* codes, const float* d, const float* w, std::int64_t n,
                                      double* e) {
    std::int64_t c = 0;
    for (; c + 8 <= n; c += 8) {  // 8 lanes of double
        const __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + c)));
        const __m512d v = _mm512_maskz_cvtps_pd(0xFF, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), table, index, _mm256_castsi256_ps(_mm256_set1_epi32(-1)), 4));
        const __m512d dc = _mm512_maskz_cvtps_pd(0xFF, _mm256_loadu_ps(d + c)), wc = _mm512_maskz_cvtps_pd(0xFF, _mm256_loadu_ps(w + c));
        _mm512_storeu_pd(e + c, _mm512_sub_pd(_mm512_mul_pd(v, dc), wc));
    }
    for (; c < n; ++c) e[c] = static_cast<double>(table[codes[c]]) * d[c] - w[c];
}
#endif

}  // namespace

bool cpu_has_avx512() {
#ifdef QF_AVX512_INTRINSICS
    static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    return yes;
#else
    return false;
#endif
}

void add_code_values(const float* table, const std::uint8_t* codes, std::int64_t n, float* x, bool portable) {
#ifdef QF_AVX512_INTRINSICS
    if (!portable && cpu_has_avx512()) return add_code_values_avx512(table, codes, n, x);
#endif
    (void)portable;
    for (std::int64_t c = 0; c < n; ++c) x[c] += table[codes[c]];
}

void code_errors_f64(const float* table, const std::uint8_t* codes, const float* d, const float* w, std::int64_t n, double* e,
                     bool portable) {
#ifdef QF_AVX512_INTRINSICS
    if (!portable && cpu_has_avx512()) return code_errors_f64_avx512(table, codes, d, w, n, e);
#endif
    (void)portable;
    for (std::int64_t c = 0; c < n; ++c) e[c] = static_cast<double>(table[codes[c]]) * d[c] - w[c];
}

}  // namespace quantflow
