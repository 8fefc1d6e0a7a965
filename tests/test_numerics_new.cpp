// The scalar twins of the new formats (kernels/numerics.hpp): float8_e5m2, E2M1 (nvfp4) and E8M0 (mxfp8), each
// checked on its whole code space: every code decodes to the value its bits define, every code value encodes
// to itself, every midpoint between neighbours goes to the even code and one float ulp either side decides.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/numerics.hpp"

using namespace quantflow;

namespace {

// float8_e5m2 from its bits (sign, 5 exponent bits with bias 15, 2 mantissa bits), written from the OCP text.
double e5m2_exact(unsigned code) {
    const int sign = (code & 0x80u) ? -1 : 1;
    const unsigned e = (code >> 2) & 0x1Fu, m = code & 3u;
    if (e == 0x1F) return m == 0 ? sign * INFINITY : NAN;
    if (e == 0) return sign * std::ldexp(m / 4.0, -14);
    return sign * std::ldexp(1.0 + m / 4.0, static_cast<int>(e) - 15);
}

// Encodes every midpoint between neighbouring codes of `grid` (ascending, positive, code i = index i) with `encode`
// and checks ties to even, the neighbours one ulp away, and both signs of every grid value.
template <class Encode>
void check_grid(const std::vector<float>& grid, Encode encode, unsigned sign_bit) {
    for (std::size_t i = 0; i < grid.size(); ++i) {
        CHECK(encode(grid[i]) == i);
        if (grid[i] != 0.0f) CHECK(encode(-grid[i]) == (i | sign_bit));
        if (i + 1 == grid.size()) break;
        const float mid = static_cast<float>((static_cast<double>(grid[i]) + grid[i + 1]) / 2);
        REQUIRE(static_cast<double>(mid) == (static_cast<double>(grid[i]) + grid[i + 1]) / 2);  // exact in float
        CHECK(encode(mid) == (i % 2 == 0 ? i : i + 1));
        CHECK(encode(std::nextafter(mid, 0.0f)) == i);
        CHECK(encode(std::nextafter(mid, INFINITY)) == i + 1);
    }
}

}  // namespace

TEST_CASE("e5m2: every code decodes to its exact value; finite codes round-trip") {
    for (unsigned c = 0; c < 256; ++c) {
        const double want = e5m2_exact(c);
        const float got = e5m2_to_f32(static_cast<std::uint8_t>(c));
        if (std::isnan(want)) {
            CHECK(std::isnan(got));
            continue;
        }
        CHECK(static_cast<double>(got) == want);
        if (std::isfinite(want)) CHECK(f32_to_e5m2(got) == c);
    }
}

TEST_CASE("e5m2: round to nearest even between every pair of neighbours, saturation to inf past 57344") {
    std::vector<float> grid;
    for (unsigned c = 0; c <= 0x7B; ++c) grid.push_back(e5m2_to_f32(static_cast<std::uint8_t>(c)));
    check_grid(grid, [](float x) { return unsigned{f32_to_e5m2(x)}; }, 0x80u);
    CHECK(f32_to_e5m2(57344.0f) == 0x7B);
    CHECK(f32_to_e5m2(61439.996f) == 0x7B);
    CHECK(f32_to_e5m2(61440.0f) == 0x7C);  // tie between 57344 (odd mantissa) and 65536: inf
    CHECK(f32_to_e5m2(-1e9f) == 0xFC);
    CHECK(f32_to_e5m2(INFINITY) == 0x7C);
    CHECK((f32_to_e5m2(NAN) & 0x7F) == 0x7F);
    CHECK(f32_to_e5m2(-0.0f) == 0x80);
    CHECK(f32_to_e5m2(std::ldexp(1.0f, -17)) == 0x00);        // half the smallest subnormal: even (0)
    CHECK(f32_to_e5m2(std::ldexp(1.5f, -17)) == 0x01);
}

TEST_CASE("e2m1: the 16 codes, ties to even (notes 4), negative zero kept, clamp at 6") {
    const float values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (unsigned c = 0; c < 16; ++c) CHECK(e2m1_to_f32(static_cast<std::uint8_t>(c)) == ((c & 8) ? -values[c & 7] : values[c & 7]));
    check_grid(std::vector<float>(values, values + 8), [](float x) { return unsigned{f32_to_e2m1(x)}; }, 8u);
    CHECK(f32_to_e2m1(0.25f) == 0);
    CHECK(f32_to_e2m1(0.75f) == 2);
    CHECK(f32_to_e2m1(1.25f) == 2);
    CHECK(f32_to_e2m1(1.75f) == 4);
    CHECK(f32_to_e2m1(2.5f) == 4);
    CHECK(f32_to_e2m1(3.5f) == 6);
    CHECK(f32_to_e2m1(5.0f) == 6);
    CHECK(f32_to_e2m1(-0.1f) == 8);   // rounds to zero, keeps its sign (comfy-kitchen emits 8 too)
    CHECK(f32_to_e2m1(-0.0f) == 8);
    CHECK(f32_to_e2m1(100.0f) == 7);  // callers clamp; the encoder saturates anyway
    CHECK(f32_to_e2m1(-7.0f) == 15);
}

TEST_CASE("e8m0: decode of every byte, and the mxfp8 scale byte for every exponent") {
    CHECK(e8m0_to_f32(0) == 0.0f);
    CHECK(std::isinf(e8m0_to_f32(255)));
    for (int b = 1; b < 255; ++b) CHECK(e8m0_to_f32(static_cast<std::uint8_t>(b)) == std::ldexp(1.0f, b - 127));
    CHECK(mxfp8_scale_byte(0.0f) == 0);
    // amax = 448 * 2^e exactly: scale 2^e; a hair more needs 2^(e+1); a hair less still 2^e.
    for (int e = -126; e <= 127; ++e) {
        const float amax = std::ldexp(448.0f, e);
        if (!std::isfinite(amax)) continue;
        const int want = std::min(e + 127, 254);
        CHECK(mxfp8_scale_byte(amax) == want);
        if (e < 127) CHECK(mxfp8_scale_byte(std::nextafter(amax, INFINITY)) == std::min(e + 128, 254));
        CHECK(mxfp8_scale_byte(std::nextafter(amax, 0.0f)) == want);
    }
    CHECK(mxfp8_scale_byte(1e-40f) == 0);  // below 448 * 2^-127: clamped to 2^-127
    CHECK(mxfp8_scale_byte(3.4e38f) == 247);  // 3.4e38 / 448 = 2^119.2: rounded up to 2^120
}
