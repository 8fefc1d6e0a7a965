// The vectorised mxfp8 / nvfp4 row kernels (kernels/cpu/block_rows_cpu.hpp): their branch-free lanes against the
// scalar twins on every input of their domains, and whole rows against a block-by-block scalar quantizer.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>

#include "kernels/cpu/block_rows_cpu.hpp"
#include "kernels/lanes.hpp"
#include "kernels/numerics.hpp"

using namespace quantflow;

namespace {

// Mismatches of check(bits) over bits in [from, to), split across threads.
std::uint64_t count_over(std::uint64_t from, std::uint64_t to, const std::function<std::uint64_t(std::uint64_t, std::uint64_t)>& check) {
    const unsigned threads = std::max(2u, std::thread::hardware_concurrency());
    std::vector<std::uint64_t> bad(threads, 0);
    std::vector<std::thread> pool;
    const std::uint64_t chunk = 1 << 16;
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            for (std::uint64_t b = from + t * chunk; b < to; b += threads * chunk) bad[t] += check(b, std::min(to, b + chunk));
        });
    for (auto& th : pool) th.join();
    std::uint64_t total = 0;
    for (const auto m : bad) total += m;
    return total;
}

// The E2M1 encoder the row kernel replaced (compare chain on |y|, NaN -> index 0): the bytes files hold.
std::uint8_t e2m1_compare_chain(float y) {
    const float a = y < 0 ? -y : y;
    const int index = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f);
    return static_cast<std::uint8_t>(((f32_bits(y) >> 28) & 8u) | static_cast<unsigned>(index));
}

// Scalar twins of whole rows, block by block, as quantize_blocks_cpu.cpp computed them before the row kernels.
void nvfp4_row_scalar(const float* x, std::int64_t n, float global, float* scales, std::uint8_t* codes) {
    for (std::int64_t c0 = 0; c0 < n; c0 += 16) {
        const std::int64_t end = std::min(n, c0 + 16);
        float amax = 0;
        for (std::int64_t i = c0; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float wanted = (amax / kE2m1Max) / global;
        const float scale = e4m3_to_f32(f32_to_e4m3(wanted < kFp8Max ? wanted : kFp8Max));
        scales[c0 / 16] = scale;
        const float total = scale == 0.0f ? 1.0f : global * scale;
        for (std::int64_t i = c0; i < end; ++i) codes[i] = scale == 0.0f ? 0 : e2m1_compare_chain(x[i] / total);
    }
}

void mxfp8_row_scalar(const float* x, std::int64_t n, float* scales, std::uint8_t* codes) {
    for (std::int64_t c0 = 0; c0 < n; c0 += 32) {
        const std::int64_t end = std::min(n, c0 + 32);
        float amax = 0;
        for (std::int64_t i = c0; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
        const std::uint8_t byte = mxfp8_scale_byte(amax);
        scales[c0 / 32] = e8m0_to_f32(byte);
        const float m = 1.0f / bits_f32(byte == 0 ? 0x00400000u : static_cast<std::uint32_t>(byte) << 23);
        for (std::int64_t i = c0; i < end; ++i) codes[i] = amax == 0.0f ? 0 : f32_to_e4m3(clamp_abs(x[i] * m, kFp8Max));
    }
}

// A row with Gaussian-ish values of magnitude `scale`, an all-zero block, a -0.0 block and one outlier.
std::vector<float> test_row(std::int64_t n, float scale, std::uint32_t seed) {
    std::vector<float> x(static_cast<std::size_t>(n));
    std::uint32_t s = seed * 2654435761u + 1;
    for (auto& v : x) {
        s = s * 1664525u + 1013904223u;
        v = scale * (static_cast<float>(static_cast<std::int32_t>(s)) / 2147483648.0f);
    }
    for (std::int64_t i = 32; i < std::min<std::int64_t>(n, 64); ++i) x[static_cast<std::size_t>(i)] = 0.0f;
    for (std::int64_t i = 64; i < std::min<std::int64_t>(n, 96); ++i) x[static_cast<std::size_t>(i)] = -0.0f;
    if (n > 100) x[100] = 37 * scale;
    return x;
}

}  // namespace

TEST_CASE("e2m1_lane equals the compare chain it replaced for all 2^32 float bit patterns (through the row kernel)") {
    const std::uint64_t bad = count_over(0, 1ull << 32, [](std::uint64_t from, std::uint64_t to) {
        const auto n = static_cast<std::int64_t>(to - from);
        std::vector<float> x(static_cast<std::size_t>(n)), ones(static_cast<std::size_t>((n + 15) / 16), 1.0f);
        std::vector<std::uint8_t> codes(x.size());
        for (std::int64_t i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = bits_f32(static_cast<std::uint32_t>(from + static_cast<std::uint64_t>(i)));
        nvfp4_codes_cpu(x.data(), n, 1.0f, ones.data(), codes.data());  // total 1: codes of x / 1
        std::uint64_t m = 0;
        for (std::size_t i = 0; i < x.size(); ++i) m += codes[i] != e2m1_compare_chain(x[i] / 1.0f);
        return m;
    });
    CHECK(bad == 0);
}

TEST_CASE("e4m3_grid is the e4m3 round trip on [0, 448]; mxfp8_scale_lane is mxfp8_scale_byte on [0, inf)") {
    CHECK(count_over(0, 0x43E00001u, [](std::uint64_t from, std::uint64_t to) {
              std::uint64_t m = 0;
              for (std::uint64_t b = from; b < to; ++b) {
                  const float v = bits_f32(static_cast<std::uint32_t>(b));
                  m += f32_bits(e4m3_grid(v)) != f32_bits(e4m3_to_f32(f32_to_e4m3(v)));
              }
              return m;
          }) == 0);
    CHECK(count_over(0, 0x7F800000u, [](std::uint64_t from, std::uint64_t to) {
              std::uint64_t m = 0;
              for (std::uint64_t b = from; b < to; ++b) {
                  const float v = bits_f32(static_cast<std::uint32_t>(b));
                  m += mxfp8_scale_lane(v) != mxfp8_scale_byte(v);
              }
              return m;
          }) == 0);
}

TEST_CASE("nvfp4 and mxfp8 row kernels equal the block-by-block scalar quantizer") {
    for (const std::int64_t n : {16, 20, 48, 100, 333, 4096, 4100, 9000, 13824})
        for (const float scale : {0.02f, 3e-37f, 1e-41f, 50.0f}) {
            INFO("n " << n << " scale " << scale);
            const std::vector<float> x = test_row(n, scale, static_cast<std::uint32_t>(n));
            float amax = 0;
            for (const float v : x) amax = std::max(amax, std::fabs(v));
            const float global = amax / (kFp8Max * kE2m1Max);
            const auto blocks16 = static_cast<std::size_t>((n + 15) / 16), blocks32 = static_cast<std::size_t>((n + 31) / 32);
            std::vector<float> s_fast(blocks16), s_slow(blocks16);
            std::vector<std::uint8_t> c_fast(x.size()), c_slow(x.size());
            REQUIRE(nvfp4_row_cpu(x.data(), n, global, s_fast.data(), c_fast.data()));
            nvfp4_row_scalar(x.data(), n, global, s_slow.data(), c_slow.data());
            CHECK(s_fast == s_slow);
            CHECK(c_fast == c_slow);
            std::vector<std::uint8_t> c_again(x.size());
            nvfp4_codes_cpu(x.data(), n, global, s_fast.data(), c_again.data());
            CHECK(c_again == c_slow);
            s_fast.assign(blocks32, 0.0f);
            s_slow.assign(blocks32, 0.0f);
            REQUIRE(mxfp8_row_cpu(x.data(), n, s_fast.data(), c_fast.data()));
            mxfp8_row_scalar(x.data(), n, s_slow.data(), c_slow.data());
            CHECK(s_fast == s_slow);
            CHECK(c_fast == c_slow);
        }
}

TEST_CASE("the row kernels report NaN and Inf") {
    std::vector<float> x(100, 0.5f), scales(7);
    std::vector<std::uint8_t> codes(100);
    x[77] = std::nanf("");
    CHECK_FALSE(nvfp4_row_cpu(x.data(), 100, 1.0f, scales.data(), codes.data()));
    CHECK_FALSE(mxfp8_row_cpu(x.data(), 100, scales.data(), codes.data()));
    x[77] = -INFINITY;
    CHECK_FALSE(nvfp4_row_cpu(x.data(), 100, 1.0f, scales.data(), codes.data()));
    CHECK_FALSE(mxfp8_row_cpu(x.data(), 100, scales.data(), codes.data()));
}
