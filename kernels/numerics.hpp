// kernels/numerics.hpp: scalar reference conversions shared by the CPU backend and the CUDA kernels.
//
// Every conversion here is bit-exact with PyTorch 2.11 on every non-NaN input:
//  - f32_to_e4m3: c10's fp8e4m3fn_from_fp32_value (RNE; |x| >= 464 -> NaN 0x7F|sign). Callers clamp to
//    +-448 first (spec 5.1), which makes the result identical to every later PyTorch and CUDA convention.
//  - f32_to_bf16 / f32_to_f16: round to nearest even, overflow to +-inf.
//  - int8_round: clamp to +-127, then round half to even (torch.round), spec 5.2.
// Pinned by tests/test_numerics.cpp against fixtures/reference/*.bin (PyTorch's own casts).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define QF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QF_HOST_DEVICE inline
#endif

namespace quantflow {

constexpr float kFp8Max = 448.0f;
constexpr float kInt8Max = 127.0f;
constexpr float kE5m2Max = 57344.0f;
constexpr float kE2m1Max = 6.0f;
// Lower bound of amax before the scale is formed (reference: torch.clamp(amax, min=1e-12)).
constexpr float kAmaxFloor = 1e-12f;

QF_HOST_DEVICE std::uint32_t f32_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

QF_HOST_DEVICE float bits_f32(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

QF_HOST_DEVICE float bf16_to_f32(std::uint16_t h) { return bits_f32(static_cast<std::uint32_t>(h) << 16); }

QF_HOST_DEVICE float f16_to_f32(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1Fu;
    const std::uint32_t man = h & 0x3FFu;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000u | (man << 13));  // inf / nan
    if (exp != 0) return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
    // Subnormal (or zero): man * 2^-24, exact in float.
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
    return bits_f32(f32_bits(mag) | sign);
}

QF_HOST_DEVICE std::uint16_t f32_to_bf16(float f) {
    const std::uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

QF_HOST_DEVICE std::uint16_t f32_to_f16(float f) {
    const std::uint32_t u = f32_bits(f);
    const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    const std::uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u);          // NaN
    if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);         // rounds to >= 65520: inf
    if (a < 0x38800000u) {
        // Result is an f16 subnormal (or zero): adding 0.5 makes the FPU round the value to a multiple of
        // 2^-24 with RNE, and the low mantissa bits of the sum are the f16 code.
        const float sum = bits_f32(a) + 0.5f;
        return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(f32_bits(sum) - 0x3F000000u));
    }
    const std::uint32_t odd = (a >> 13) & 1u;
    const std::uint32_t r = a + 0xC8000FFFu + odd;  // rebias exponent (127 -> 15) and round the 13 dropped bits
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(r >> 13));
}

// float32 -> float8_e4m3fn code, PyTorch's algorithm (see header comment).
QF_HOST_DEVICE std::uint8_t f32_to_e4m3(float f) {
    const std::uint32_t w = f32_bits(f);
    const std::uint32_t sign = w & 0x80000000u;
    std::uint32_t a = w ^ sign;
    std::uint32_t r;
    if (a >= 0x43F00000u) {
        r = 0x7Fu;
    } else if (a < 0x3C800000u) {
        // Subnormal range: 16384 has an ulp of 2^-9, so the float add rounds |f| to the e4m3 grid (RNE).
        r = f32_bits(bits_f32(a) + 16384.0f) - 0x46800000u;
    } else {
        const std::uint32_t odd = (a >> 20) & 1u;
        a += (static_cast<std::uint32_t>(7 - 127) << 23) + 0x7FFFFu + odd;
        r = (a >> 20) & 0xFFu;
    }
    return static_cast<std::uint8_t>(r | (sign >> 24));
}

QF_HOST_DEVICE float e4m3_to_f32(std::uint8_t code) {
    const std::uint32_t sign = static_cast<std::uint32_t>(code & 0x80u) << 24;
    const std::uint32_t exp = (code >> 3) & 0xFu;
    const std::uint32_t man = code & 0x7u;
    if (exp == 0xF && man == 0x7) return bits_f32(sign | 0x7FC00000u);  // NaN
    if (exp == 0) {
        const float mag = static_cast<float>(man) * 0.001953125f;  // man * 2^-9
        return bits_f32(f32_bits(mag) | sign);
    }
    return bits_f32(sign | ((exp + 120u) << 23) | (man << 20));
}

// float32 -> float8_e5m2 code with round to nearest even (the same algorithm as PyTorch's
// fp8e5m2_from_fp32_value): |x| >= 2^16 or a value rounding past 57344 gives inf 0x7C|sign, NaN 0x7F|sign.
// Callers clamp to +-57344 first, so only finite codes 0x00..0x7B appear in files.
QF_HOST_DEVICE std::uint8_t f32_to_e5m2(float f) {
    const std::uint32_t w = f32_bits(f);
    const std::uint32_t sign = w & 0x80000000u;
    std::uint32_t a = w ^ sign;
    std::uint32_t r;
    if (a >= 0x47800000u) {
        r = a > 0x7F800000u ? 0x7Fu : 0x7Cu;
    } else if (a < 0x38800000u) {
        // Subnormal range (< 2^-14): 128 has an ulp of 2^-16, so the float add rounds |f| to the e5m2 grid (RNE).
        r = f32_bits(bits_f32(a) + 128.0f) - 0x43000000u;
    } else {
        const std::uint32_t odd = (a >> 21) & 1u;
        a += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xFFFFFu + odd;
        r = (a >> 21) & 0xFFu;
    }
    return static_cast<std::uint8_t>(r | (sign >> 24));
}

// e5m2 is the high byte of an IEEE half.
QF_HOST_DEVICE float e5m2_to_f32(std::uint8_t code) { return f16_to_f32(static_cast<std::uint16_t>(code << 8)); }

// FP4 E2M1 (nvfp4 elements): code = sign << 3 | i, i = 0..7 for 0, 0.5, 1, 1.5, 2, 3, 4, 6.
QF_HOST_DEVICE float e2m1_to_f32(std::uint8_t code) {
    const float magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float m = magnitude[code & 7u];
    return (code & 8u) ? -m : m;
}

// float32 -> E2M1 code: clamp to +-6, round to nearest with ties to the even code (0.25 -> 0, 0.75 -> 1,
// 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4). A negative value keeps its sign even when it rounds to
// zero (code 8), as comfy-kitchen's quantizer does. NaN is never passed (callers reject non-finite weights).
QF_HOST_DEVICE std::uint8_t f32_to_e2m1(float f) {
    const std::uint8_t sign = (f32_bits(f) >> 31) ? 8u : 0u;
    const float a = f < 0 ? -f : f;
    std::uint8_t i;
    if (a <= 0.25f) i = 0;
    else if (a < 0.75f) i = 1;
    else if (a <= 1.25f) i = 2;
    else if (a < 1.75f) i = 3;
    else if (a <= 2.5f) i = 4;
    else if (a < 3.5f) i = 5;
    else if (a <= 5.0f) i = 6;
    else i = 7;
    return static_cast<std::uint8_t>(sign | i);
}

// E8M0 (mxfp8 block scales): value 2^(byte - 127). Byte 0 decodes to 0 (comfy-kitchen's decoder; written
// only for all-zero blocks) and 255 to +inf (never written).
QF_HOST_DEVICE float e8m0_to_f32(std::uint8_t byte) {
    if (byte == 0) return 0.0f;
    if (byte == 255) return bits_f32(0x7F800000u);
    return bits_f32(static_cast<std::uint32_t>(byte) << 23);
}

// The mxfp8 scale byte of a block whose largest |x| is amax: clamp(ceil(log2(max(amax / 448, 2^-127))) + 127,
// 0, 254), with the division in float32 and an exact integer ceil(log2) (read from the bits), so every
// element of the block satisfies |x| / 2^e <= 448. All-zero blocks get 0.
QF_HOST_DEVICE std::uint8_t mxfp8_scale_byte(float amax) {
    if (amax == 0.0f) return 0;
    float v = amax / 448.0f;
    const float floor_v = bits_f32(0x00400000u);  // 2^-127 (a subnormal)
    if (v < floor_v) v = floor_v;
    const std::uint32_t u = f32_bits(v);
    std::int32_t e;
    if ((u >> 23) == 0) {
        // Subnormal: v = m * 2^-149 with m < 2^23; ceil(log2) from the highest set bit of m.
        const std::uint32_t m = u & 0x7FFFFFu;
        std::int32_t hb = 31;
        while (hb > 0 && !((m >> hb) & 1u)) --hb;
        e = hb - 149 + ((m & (m - 1u)) != 0u ? 1 : 0);
    } else {
        e = static_cast<std::int32_t>(u >> 23) - 127 + ((u & 0x7FFFFFu) != 0u ? 1 : 0);
    }
    std::int32_t b = e + 127;
    b = b < 0 ? 0 : (b > 254 ? 254 : b);
    return static_cast<std::uint8_t>(b);
}

QF_HOST_DEVICE float clamp_abs(float x, float limit) { return x < -limit ? -limit : (x > limit ? limit : x); }

// Round half to even for |x| <= 2^22 under the default rounding mode: adding 1.5*2^23 pushes the
// fraction out of the mantissa. Needs -ffp-contract=off and no -ffast-math (the CMake flags).
QF_HOST_DEVICE float round_half_even_small(float x) {
    const float magic = 12582912.0f;
    return (x + magic) - magic;
}

// q = clamp(round_half_even(x), -127, 127): clamping first is equivalent because 127 is an integer.
QF_HOST_DEVICE std::int8_t int8_round(float x) {
    return static_cast<std::int8_t>(round_half_even_small(clamp_abs(x, kInt8Max)));
}

// The FP8 multiplier m = 448 / max(amax, 1e-12) and stored scale 1/m, both float32 (spec 5.1).
QF_HOST_DEVICE float fp8_multiplier(float amax) { return kFp8Max / (amax > kAmaxFloor ? amax : kAmaxFloor); }
// The reference's FP8 block path (1 x bs groups) forms the multiplier as (1 / amax) * 448: two roundings,
// which differ from 448 / amax in the last bit for about a quarter of the groups. Measured against
// fixtures/reference/ref_fp8_block64_simple.safetensors: this form reproduces every code and scale.
QF_HOST_DEVICE float fp8_multiplier_reciprocal_first(float amax) {
    return (1.0f / (amax > kAmaxFloor ? amax : kAmaxFloor)) * kFp8Max;
}
// The INT8 step s = max(amax, 1e-12) / 127 (spec 5.2); the stored scale is s itself.
QF_HOST_DEVICE float int8_step(float amax) { return (amax > kAmaxFloor ? amax : kAmaxFloor) / kInt8Max; }

}  // namespace quantflow
