#include "kernels/cpu/block_rows_cpu.hpp"

#include <algorithm>

#include "kernels/lanes.hpp"
#include "kernels/numerics.hpp"
#include "kernels/vector_clones.hpp"

namespace quantflow {
namespace {

constexpr std::int64_t kMx = 32, kNv = 16;

// Block amaxes of a row in blocks of `size` (the full blocks with a constant trip count); false on NaN/Inf.
template <std::int64_t size>
[[gnu::always_inline]] inline bool block_amaxes(const float* x, std::int64_t n, std::uint32_t* amax) {
    const std::int64_t full = n / size;
    std::uint32_t all = 0;
    for (std::int64_t b = 0; b < full; ++b) {
        amax[b] = max_abs_bits_inline(x + b * size, size);
        all = amax[b] > all ? amax[b] : all;
    }
    if (full * size < n) {
        amax[full] = max_abs_bits_inline(x + full * size, n - full * size);
        all = amax[full] > all ? amax[full] : all;
    }
    return all < 0x7F800000u;
}

template <std::int64_t size>
inline void e2m1_fixed(const float* x, float total, std::uint8_t* out) {
    for (std::int64_t i = 0; i < size; ++i) out[i] = e2m1_lane(x[i] / total);
}

// Block scales of nvfp4 from block amaxes: the e4m3 value of min((amax / 6) / global, 448). The min runs on the
// bits: they order non-negative floats as their values, and every NaN (0 / 0 when global underflows to 0) is
// above 448's, as `wanted < 448 ? wanted : 448` has it.
[[gnu::always_inline]] inline void nvfp4_scales(const std::uint32_t* amax, std::int64_t blocks, float global, float* scales) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        const std::uint32_t wanted = f32_bits((bits_f32(amax[b]) / kE2m1Max) / global);
        scales[b] = e4m3_grid(bits_f32(std::min(wanted, f32_bits(kFp8Max))));
    }
}

// Columns per pass of the row kernels: the block amaxes of one pass live on the stack.
constexpr std::int64_t kPassBlocks = 256;

// nvfp4 codes of m <= kPassBlocks * 16 columns. Each element's divisor (its block's total) is laid out first, so
// the division runs in full-width vectors over the pass (per block of 16 it ran in half-width ones: 16 one-byte
// codes fill one 16-byte vector). An all-zero block (scale 0) divides by 1 and gets code 0 (-0.0 would give the
// -0 code).
[[gnu::always_inline]] inline void nvfp4_pass_codes(const float* x, std::int64_t m, float global, const float* scales, std::uint8_t* codes) {
    float total[kPassBlocks * kNv];
    const std::int64_t blocks = (m + kNv - 1) / kNv;
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float t = scales[b] == 0.0f ? 1.0f : global * scales[b];
        for (std::int64_t i = 0; i < kNv; ++i) total[b * kNv + i] = t;
    }
    for (std::int64_t i = 0; i < m; ++i) codes[i] = e2m1_lane(x[i] / total[i]);
    for (std::int64_t b = 0; b < blocks; ++b)
        if (scales[b] == 0.0f)
            for (std::int64_t i = b * kNv; i < std::min(m, (b + 1) * kNv); ++i) codes[i] = 0;
}

}  // namespace

QF_VECTOR_CLONES bool nvfp4_row_cpu(const float* x, std::int64_t n, float global, float* scales, std::uint8_t* codes) {
    std::uint32_t amax[kPassBlocks];
    for (std::int64_t c0 = 0; c0 < n; c0 += kPassBlocks * kNv) {
        const std::int64_t m = std::min(n - c0, kPassBlocks * kNv), blocks = (m + kNv - 1) / kNv;
        if (!block_amaxes<kNv>(x + c0, m, amax)) return false;
        nvfp4_scales(amax, blocks, global, scales + c0 / kNv);
        nvfp4_pass_codes(x + c0, m, global, scales + c0 / kNv, codes + c0);
    }
    return true;
}

QF_VECTOR_CLONES void nvfp4_codes_cpu(const float* x, std::int64_t n, float global, const float* scales, std::uint8_t* codes) {
    for (std::int64_t c0 = 0; c0 < n; c0 += kPassBlocks * kNv)
        nvfp4_pass_codes(x + c0, std::min(n - c0, kPassBlocks * kNv), global, scales + c0 / kNv, codes + c0);
}

QF_VECTOR_CLONES void e2m1_block_cpu(const float* x, std::int64_t n, float total, std::uint8_t* codes) {
    if (n == kNv) return e2m1_fixed<kNv>(x, total, codes);
    for (std::int64_t i = 0; i < n; ++i) codes[i] = e2m1_lane(x[i] / total);
}

// The quantizer divides by 2^(byte - 127) also for byte 0 (a block below ~2^-118), where the decoder reads 0;
// x / 2^e is x * 2^-e exactly (both are the correctly rounded x 2^-e, and 2^-e is exact for every byte). The scale
// bytes of a pass are one vectorised loop, the codes one per block.
QF_VECTOR_CLONES bool mxfp8_row_cpu(const float* x, std::int64_t n, float* scales, std::uint8_t* codes) {
    std::uint32_t amax[kPassBlocks];
    float multiplier[kPassBlocks];
    for (std::int64_t c0 = 0; c0 < n; c0 += kPassBlocks * kMx) {
        const std::int64_t m = std::min(n - c0, kPassBlocks * kMx), blocks = (m + kMx - 1) / kMx;
        if (!block_amaxes<kMx>(x + c0, m, amax)) return false;
        float* s = scales + c0 / kMx;
        for (std::int64_t b = 0; b < blocks; ++b) s[b] = bits_f32(mxfp8_scale_lane(bits_f32(amax[b])) << 23);  // byte 0 reads 0
        // 1 / 2^(byte - 127), 2^-127 for byte 0 (a loop of its own: fused with the one above it does not vectorise)
        for (std::int64_t b = 0; b < blocks; ++b) multiplier[b] = 1.0f / bits_f32(std::max(f32_bits(s[b]), 0x00400000u));
        for (std::int64_t b = 0; b < blocks; ++b) {
            const float* xb = x + c0 + b * kMx;
            std::uint8_t* out = codes + c0 + b * kMx;
            const float mb = multiplier[b];
            if (amax[b] == 0)
                for (std::int64_t i = 0; i < std::min(kMx, m - b * kMx); ++i) out[i] = 0;
            else if ((b + 1) * kMx <= m)
                for (std::int64_t i = 0; i < kMx; ++i) out[i] = e4m3_lane(xb[i] * mb);
            else
                for (std::int64_t i = 0; i < m - b * kMx; ++i) out[i] = e4m3_lane(xb[i] * mb);
        }
    }
    return true;
}

}  // namespace quantflow
