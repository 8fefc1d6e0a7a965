// kernels/lanes.hpp: branch-free twins of numerics.hpp conversions, one lane each, for the host loops that
// vectorise them (a branch or a select of float results keeps GCC from if-converting the loop). Each equals its
// scalar twin on its whole stated domain (test_block_rows.cpp and test_quantize_cpu.cpp check every input).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/numerics.hpp"

namespace quantflow {

// Largest |x| of n floats as bits (they order non-negative floats as their values; an integer max vectorises
// where a float max does not), inline so a loop over short blocks vectorises around it.
inline std::uint32_t max_abs_bits_inline(const float* x, std::int64_t n) {
    std::uint32_t m = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const std::uint32_t u = f32_bits(x[i]) & 0x7FFFFFFFu;
        m = u > m ? u : m;
    }
    return m;
}

// f32_to_e4m3(clamp(y, -448, 448)) for non-NaN y, without f32_to_e4m3's NaN branch (the clamp keeps |y| <= 448
// < 464) and with its two remaining cases computed unconditionally, so loops over it vectorise;
// test_quantize_cpu checks it (through encode_fp8_cpu) against f32_to_e4m3 on all 2^32 inputs.
inline std::uint8_t e4m3_lane(float y) {
    const std::uint32_t w = f32_bits(y);
    const std::uint32_t sign = (w >> 24) & 0x80u;
    std::uint32_t a = w & 0x7FFFFFFFu;
    a = std::min(a, 0x43E00000u);  // clamp |y| to 448 on the bits (no NaN reaches here)
    const std::uint32_t sub = f32_bits(bits_f32(a) + 16384.0f) - 0x46800000u;
    const std::uint32_t norm = ((a + 0xC407FFFFu + ((a >> 20) & 1u)) >> 20) & 0xFFu;
    const std::uint32_t is_sub = 0u - static_cast<std::uint32_t>(a < 0x3C800000u);  // all ones or zero
    return static_cast<std::uint8_t>((sub & is_sub) | (norm & ~is_sub) | sign);
}

// e4m3_to_f32(f32_to_e4m3(v)) for 0 <= v <= 448 on the float grid: the subnormal case rounds through the
// 2^-9 ulp of 16384, the normal one rounds the mantissa to 3 bits (half to even) on the bits, carry included.
inline float e4m3_grid(float v) {
    const std::uint32_t a = f32_bits(v);
    const std::uint32_t sub = f32_bits((v + 16384.0f) - 16384.0f);
    const std::uint32_t norm = (a + 0x7FFFFu + ((a >> 20) & 1u)) & 0xFFF00000u;
    const std::uint32_t is_sub = 0u - static_cast<std::uint32_t>(a < 0x3C800000u);
    return bits_f32((sub & is_sub) | (norm & ~is_sub));
}

// mxfp8_scale_byte(amax) for finite amax >= 0. v = max(amax / 448, 2^-127) is at least 0x00400000, so a subnormal
// v has its top bit at 22 and ceil(log2 v) + 127 is 0 for 2^-127 itself, else 1; a normal v gives its biased
// exponent, plus 1 when the mantissa is not 0.
inline std::uint32_t mxfp8_scale_lane(float amax) {
    const std::uint32_t u = std::max(f32_bits(amax / 448.0f), 0x00400000u);  // bits order non-negative floats
    const std::uint32_t exp = u >> 23, man = u & 0x7FFFFFu;
    const std::uint32_t exact = static_cast<std::uint32_t>(exp == 0) << 22;  // the mantissa of a power of two
    const std::uint32_t b = std::min(exp + static_cast<std::uint32_t>(man != exact), 254u);
    return b & (0u - static_cast<std::uint32_t>((f32_bits(amax) << 1) != 0));  // 0 for amax == 0, on the bits
}

// The E2M1 code of y with round to nearest, ties to the even code (0.25, 1.25, 2.5 and 5 go down, 0.75, 1.75
// and 3.5 up), clamped at 6, the sign y's: f32_to_e4m3's method for a format with 1 mantissa bit and exponent
// bias 1. |y| is clamped on the bits; below 1 the float add rounds it to a multiple of 0.5 (the ulp of 2^22),
// at or above 1 the bits round to 1 mantissa bit and rebias (1.0 -> code 2). A NaN y (0 / 0 where the total
// underflows to 0) gets index 0, as the compare loop this replaced gave it. Equal to that loop for every y
// (checked on all 2^32 inputs), and to f32_to_e2m1 except for NaN.
inline std::uint8_t e2m1_lane(float y) {
    const std::uint32_t w = f32_bits(y), m = w & 0x7FFFFFFFu;
    const std::uint32_t u = std::min(m, 0x40C00000u);  // 6.0 (every NaN's bits are above it)
    const std::uint32_t sub = f32_bits(bits_f32(u) + 4194304.0f) - 0x4A800000u;
    const std::uint32_t norm = (u - 0x3F000000u + 0x1FFFFFu + ((u >> 22) & 1u)) >> 22;
    const std::uint32_t is_sub = 0u - static_cast<std::uint32_t>(u < 0x3F800000u);
    const std::uint32_t is_num = 0u - static_cast<std::uint32_t>(m <= 0x7F800000u);
    return static_cast<std::uint8_t>(((w >> 28) & 8u) | (((sub & is_sub) | (norm & ~is_sub)) & is_num));
}

}  // namespace quantflow
