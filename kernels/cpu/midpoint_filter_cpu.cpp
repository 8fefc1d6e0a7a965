// One row of the finish's candidate filter (rounding_cpu.hpp, filter_row): the portable loops, and an AVX-512
// path that reads the code tables by gather and lists the columns by compress. Both make the same float
// operations in the same order, so they list the same columns with the same e, bit for bit (tested).
#include <cstdint>

#include "kernels/cpu/code_gather_cpu.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/numerics.hpp"
#include "kernels/vector_clones.hpp"

#ifdef QF_AVX512_INTRINSICS
#include <immintrin.h>
#endif

namespace quantflow {
namespace {

// The codes' records are copied first, in a loop of their own: GCC's generic tuning uses no gathers, so a loop
// that reads a table by code stays scalar, and only the loops after it vectorise (measured: the function went
// from 6.7% to 4.6% of a 2-core default run). The neighbour towards W is picked by the error's sign bit as a
// mask, the filter as another: the sign is a coin flip, so a branch on it would mispredict (the pass took 2x as
// long).
QF_VECTOR_CLONES void filter_marks(const MidpointFilter& f, const std::uint8_t* codes, const float* d, const float* w, std::int64_t n,
                                   float* e, float* marked, CodeRecord* rec) {
    for (std::int64_t c = 0; c < n; ++c) rec[c] = f.records[codes[c]];
    for (std::int64_t c = 0; c < n; ++c) e[c] = rec[c].value * d[c] - w[c];
    for (std::int64_t c = 0; c < n; ++c) {
        const std::uint32_t xb = f32_bits(e[c]);
        const std::uint32_t negative = 0u - (xb >> 31);
        const float step = bits_f32((f32_bits(rec[c].up) & negative) | (f32_bits(rec[c].down) & ~negative)) * d[c];
        const std::uint32_t keep = 0u - static_cast<std::uint32_t>(bits_f32(xb & 0x7FFFFFFFu) >= f.floor_share * step);
        marked[c] = bits_f32(xb & keep);
    }
    if (f.bound != nullptr)
        for (std::int64_t c = 0; c < n; ++c)
            marked[c] = bits_f32(f32_bits(marked[c]) & (0u - static_cast<std::uint32_t>(f.bound[c] >= f.threshold)));
}

// The columns whose mark is not 0 (+0 or -0), in order. Store and advance: every column is written, the count
// moves past the kept ones only.
std::int64_t marked_columns(const float* marked, std::int64_t n, std::uint32_t* cols) {
    std::int64_t count = 0;
    for (std::int64_t c = 0; c < n; ++c) {
        cols[count] = static_cast<std::uint32_t>(c);
        count += static_cast<std::int64_t>((f32_bits(marked[c]) << 1) != 0);
    }
    return count;
}

std::int64_t filter_portable(const MidpointFilter& f, const std::uint8_t* codes, const float* d, const TensorView& w, std::int64_t row,
                             float* e, std::uint32_t* cols, MidpointScratch& scratch) {
    const std::int64_t n = w.cols;
    scratch.w.resize(static_cast<std::size_t>(n));
    scratch.rec.resize(static_cast<std::size_t>(n));
    scratch.marked.resize(static_cast<std::size_t>(n));
    decode_row_cpu(w, row, 0, n, scratch.w.data());
    filter_marks(f, codes, d, scratch.w.data(), n, e, scratch.marked.data(), scratch.rec.data());
    return marked_columns(scratch.marked.data(), n, cols);
}

#ifdef QF_AVX512_INTRINSICS
// 16 columns at a time (the masked intrinsics with all lanes set: GCC 12 warns of the plain ones' undefined
// sources): the value and the step towards W gathered from the code's record (floats 0 and 1 or 2, the sign of
// e picks up or down), e and the tests as in filter_marks, the kept columns compressed.
// W's row is read in its file dtype (the conversions to float are exact).
QF_AVX512_INTRINSICS __m512 weights16(const TensorView& w, std::size_t i) {
    switch (w.dtype) {
        case DType::BF16: {
            const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const std::uint16_t*>(w.data) + i));
            return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, h), 16));
        }
        case DType::F16:
            return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const std::uint16_t*>(w.data) + i)));
        default: return _mm512_loadu_ps(reinterpret_cast<const float*>(w.data) + i);
    }
}

QF_AVX512_INTRINSICS std::int64_t filter_avx512(const MidpointFilter& f, const std::uint8_t* codes, const float* d,
                                                                      const TensorView& w, std::int64_t row, float* e, std::uint32_t* cols) {
    const std::int64_t n = w.cols;
    const auto base = static_cast<std::size_t>(row * n);
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    static_assert(sizeof(CodeRecord) == 4 * sizeof(float));
    const auto* fields = reinterpret_cast<const float*>(f.records);  // value, up, down, unused per code
    const __m512i up = _mm512_set1_epi32(1), down = _mm512_set1_epi32(2);
    const __m512 share = _mm512_set1_ps(f.floor_share), threshold = _mm512_set1_ps(f.threshold);
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
    std::int64_t count = 0, c = 0;
    for (; c + 16 <= n; c += 16) {
        const __m512i record = _mm512_maskz_slli_epi32(
            0xFFFF, _mm512_maskz_cvtepu8_epi32(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + c))), 2);
        const __m512 dc = _mm512_loadu_ps(d + c);
        const __m512 ec = _mm512_sub_ps(_mm512_mul_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, record, fields, 4), dc),
                                        weights16(w, base + static_cast<std::size_t>(c)));
        _mm512_storeu_ps(e + c, ec);
        const __m512i bits = _mm512_castps_si512(ec);
        const __mmask16 negative = _mm512_movepi32_mask(bits);
        const __m512i which = _mm512_add_epi32(record, _mm512_mask_blend_epi32(negative, down, up));
        const __m512 step = _mm512_mul_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, which, fields, 4), dc);
        const __m512 size = _mm512_castsi512_ps(_mm512_and_si512(bits, magnitude));
        __mmask16 keep = _mm512_cmp_ps_mask(size, _mm512_mul_ps(share, step), _CMP_GE_OQ) & _mm512_test_epi32_mask(bits, magnitude);
        if (f.bound != nullptr) keep &= _mm512_cmp_ps_mask(_mm512_loadu_ps(f.bound + c), threshold, _CMP_GE_OQ);
        _mm512_mask_compressstoreu_epi32(cols + count, keep, _mm512_add_epi32(lanes, _mm512_set1_epi32(static_cast<int>(c))));
        count += __builtin_popcount(keep);
    }
    for (; c < n; ++c) {  // the last columns as filter_marks does them
        const CodeRecord& rec = f.records[codes[c]];
        float wc = 0;
        decode_row_cpu(w, row, c, 1, &wc);
        e[c] = rec.value * d[c] - wc;
        const std::uint32_t xb = f32_bits(e[c]);
        const float step = ((xb >> 31) ? rec.up : rec.down) * d[c];
        const bool keep = (xb << 1) != 0 && bits_f32(xb & 0x7FFFFFFFu) >= f.floor_share * step &&
                          (f.bound == nullptr || f.bound[c] >= f.threshold);
        cols[count] = static_cast<std::uint32_t>(c);
        count += keep;
    }
    return count;
}

#endif

}  // namespace

std::int64_t filter_row(const MidpointFilter& f, const TensorView& w, std::int64_t row, const std::uint8_t* codes, const float* d, float* e,
                        std::uint32_t* cols, double* error2, MidpointScratch& scratch, bool portable) {
    std::int64_t count = 0;
#ifdef QF_AVX512_INTRINSICS
    if (!portable && cpu_has_avx512()) count = filter_avx512(f, codes, d, w, row, e, cols);
    else count = filter_portable(f, codes, d, w, row, e, cols, scratch);
#else
    (void)portable;
    count = filter_portable(f, codes, d, w, row, e, cols, scratch);
#endif
    if (error2) *error2 = sum_of_squares(e, w.cols);
    return count;
}

}  // namespace quantflow
