#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/numerics.hpp"

// kernels/numerics.hpp pinned bit for bit: against PyTorch's own casts (fixtures/reference/*.bin), and over
// all 2^32 float32 bit patterns against independent references built from exact (ldexp) decodings of the
// target grids and a nearest-with-ties-to-even search in double.

namespace {
using quantflow::bits_f32;
using quantflow::f32_bits;

std::vector<unsigned char> read_fixture(const std::string& name) {
    std::ifstream in(std::string(QF_FIXTURES) + "/" + name, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), "cannot open fixture " << name);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <typename T>
T load(const std::vector<unsigned char>& bytes, std::size_t offset) {
    T v;
    std::memcpy(&v, bytes.data() + offset, sizeof v);
    return v;
}

// Exact value of an e4m3fn code (NaN for 0x7F/0xFF), written from the OCP format description.
double e4m3_exact(unsigned code) {
    const int exp = static_cast<int>((code >> 3) & 0xF);
    const int man = static_cast<int>(code & 7);
    const double sign = (code & 0x80) ? -1.0 : 1.0;
    if (exp == 15 && man == 7) return std::nan("");
    if (exp == 0) return sign * std::ldexp(man, -9);
    return sign * std::ldexp(8 + man, exp - 10);
}

// Exact value of an IEEE binary16 code.
double f16_exact(unsigned code) {
    const int exp = static_cast<int>((code >> 10) & 0x1F);
    const int man = static_cast<int>(code & 0x3FF);
    const double sign = (code & 0x8000) ? -1.0 : 1.0;
    if (exp == 31) return man ? std::nan("") : sign * INFINITY;
    if (exp == 0) return sign * std::ldexp(man, -24);
    return sign * std::ldexp(1024 + man, exp - 25);
}

// Nearest code with ties to the even code on an ascending grid of non-negative values, as a monotone sweep:
// fed non-decreasing magnitudes, advance() moves the code up while the next grid point is nearer (or tied
// and even). Midpoints of neighbouring grid values are exact in double.
struct NearestEvenSweep {
    std::vector<double> mid;  // mid[c] = (grid[c] + grid[c+1]) / 2
    unsigned code = 0;
    explicit NearestEvenSweep(const std::vector<double>& grid) {
        for (std::size_t c = 0; c + 1 < grid.size(); ++c) mid.push_back((grid[c] + grid[c + 1]) / 2);
    }
    unsigned advance(double v) {
        while (code < mid.size() && (v > mid[code] || (v == mid[code] && (code & 1u)))) ++code;
        return code;
    }
};

std::vector<double> e4m3_positive_grid() {  // codes 0x00..0x7E
    std::vector<double> grid;
    for (unsigned c = 0; c <= 0x7E; ++c) grid.push_back(e4m3_exact(c));
    return grid;
}

// f16 codes 0x0000..0x7C00; the infinity code takes the value 2^16 that an unbounded exponent would give,
// so IEEE overflow (>= 65520 rounds to inf, 65520 being a tie to the even code 0x7C00) falls out.
std::vector<double> f16_positive_grid() {
    std::vector<double> grid;
    for (unsigned c = 0; c < 0x7C00; ++c) grid.push_back(f16_exact(c));
    grid.push_back(65536.0);
    return grid;
}

struct Mismatches {
    std::uint64_t count = 0;
    std::uint32_t first_input = 0;
    unsigned got = 0, want = 0;
    void add(std::uint32_t input, unsigned g, unsigned w) {
        if (count++ == 0) first_input = input, got = g, want = w;
    }
};

// Runs check(lo, hi, mismatches) over the magnitudes [0, 0x80000000) (positive bit patterns; the check also
// tests the negated input), split into contiguous ranges over the hardware threads.
template <typename Check>
Mismatches over_all_magnitudes(Check check) {
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    const std::uint64_t total = 0x80000000ull;
    std::vector<Mismatches> parts(threads);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
        const auto lo = static_cast<std::uint32_t>(total * t / threads);
        const auto hi = static_cast<std::uint32_t>(total * (t + 1) / threads);
        pool.emplace_back([&, t, lo, hi] { check(lo, hi, parts[t]); });
    }
    for (auto& th : pool) th.join();
    Mismatches all;
    for (const auto& p : parts)
        if (p.count) {
            if (all.count == 0) all = p, all.count = 0;
            all.count += p.count;
        }
    return all;
}

bool is_nan_bits(std::uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }

std::string hex(std::uint64_t v) {  // doctest messages ignore stream manipulators such as std::hex
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

std::string describe(const Mismatches& m) {
    return std::to_string(m.count) + " mismatches; first input " + hex(m.first_input) + " got " + hex(m.got) +
           " want " + hex(m.want);
}
}  // namespace

TEST_CASE("f32_to_e4m3 equals PyTorch's float8_e4m3fn cast on every fixture entry") {
    const auto bytes = read_fixture("fp8_e4m3fn_cast.bin");
    const auto n = load<std::uint64_t>(bytes, 0);
    REQUIRE(bytes.size() == 8 + 5 * n);
    std::uint64_t mismatches = 0, nan_inputs = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto x = load<float>(bytes, 8 + 4 * i);
        const unsigned want = bytes[8 + 4 * n + i];
        const unsigned got = quantflow::f32_to_e4m3(x);
        nan_inputs += std::isnan(x);
        if (got != want && mismatches++ < 5)  // NaN inputs included: torch keeps the sign (0x7F / 0xFF)
            FAIL_CHECK("x=" << x << " bits=" << hex(f32_bits(x)) << " got " << hex(got) << " want " << hex(want));
    }
    CHECK(n > 500000);
    CHECK(mismatches == 0);
    MESSAGE(n << " PyTorch casts checked, " << nan_inputs << " NaN input(s)");
}

TEST_CASE("f32_to_e4m3 spot values (notes 3.2)") {
    using quantflow::f32_to_e4m3;
    const float above464 = 464.00003f;
    CHECK(above464 == std::nextafter(464.0f, 1000.0f));
    const float two_m10 = std::ldexp(1.0f, -10);
    CHECK(f32_to_e4m3(448.0f) == 0x7E);
    CHECK(f32_to_e4m3(456.0f) == 0x7E);
    CHECK(f32_to_e4m3(464.0f) == 0x7E);  // tie between 448 and 480 (NaN code): even wins
    CHECK(f32_to_e4m3(above464) == 0x7F);
    CHECK(f32_to_e4m3(480.0f) == 0x7F);
    CHECK(f32_to_e4m3(-480.0f) == 0xFF);
    CHECK(f32_to_e4m3(INFINITY) == 0x7F);
    CHECK(f32_to_e4m3(-INFINITY) == 0xFF);
    CHECK(f32_to_e4m3(-std::nanf("")) == 0xFF);  // torch keeps the NaN's sign
    CHECK(f32_to_e4m3(two_m10) == 0x00);         // tie between 0 and 2^-9: even wins
    CHECK(f32_to_e4m3(std::nextafter(two_m10, 1.0f)) == 0x01);
    CHECK(f32_to_e4m3(3 * two_m10) == 0x02);
    CHECK(f32_to_e4m3(-0.0f) == 0x80);
    CHECK(f32_to_e4m3(quantflow::clamp_abs(above464, quantflow::kFp8Max)) == 0x7E);
    CHECK(f32_to_e4m3(quantflow::clamp_abs(-INFINITY, quantflow::kFp8Max)) == 0xFE);
}

TEST_CASE("f32_to_e4m3 matches nearest-even over all 2^32 floats") {
    const auto grid = e4m3_positive_grid();
    const Mismatches bad = over_all_magnitudes([&](std::uint32_t lo, std::uint32_t hi, Mismatches& out) {
        NearestEvenSweep sweep(grid);
        for (std::uint32_t a = lo; a < hi; ++a) {
            const float x = bits_f32(a);
            const bool nan = is_nan_bits(a);
            // Clamped (the converter's path): nearest-even of min(|x|, 448); NaN inputs are not compared.
            const unsigned want = nan ? 0 : sweep.advance(std::min(static_cast<double>(x), 448.0));
            // Unclamped (PyTorch <= 2.11): |x| > 464, inf and NaN give the NaN code, sign kept.
            const unsigned want_raw = (nan || x > 464.0f) ? 0x7Fu : want;
            const float neg = bits_f32(a | 0x80000000u);
            if (!nan) {
                const unsigned got = quantflow::f32_to_e4m3(quantflow::clamp_abs(x, quantflow::kFp8Max));
                const unsigned got_neg = quantflow::f32_to_e4m3(quantflow::clamp_abs(neg, quantflow::kFp8Max));
                if (got != want) out.add(a, got, want);
                if (got_neg != (want | 0x80u)) out.add(a | 0x80000000u, got_neg, want | 0x80u);
            }
            const unsigned raw = quantflow::f32_to_e4m3(x);
            const unsigned raw_neg = quantflow::f32_to_e4m3(neg);
            if (raw != want_raw) out.add(a, raw, want_raw);
            if (raw_neg != (want_raw | 0x80u)) out.add(a | 0x80000000u, raw_neg, want_raw | 0x80u);
        }
    });
    CHECK_MESSAGE(bad.count == 0, describe(bad));
}

TEST_CASE("the e4m3 sweep reference agrees with a brute-force nearest-even search on random floats") {
    // Guards the exhaustive test's reference itself: argmin over all 254 finite codes, ties to the even code.
    std::mt19937 rng(7);
    std::uniform_int_distribution<std::uint32_t> bits_dist;
    std::uint64_t bad = 0;
    for (int i = 0; i < 200000; ++i) {
        std::uint32_t u = bits_dist(rng);
        if (i % 2) u = f32_bits(std::ldexp(static_cast<float>(bits_dist(rng) % 4096), -20 + i % 30));
        if (is_nan_bits(u)) continue;
        const double v = std::clamp(static_cast<double>(bits_f32(u)), -448.0, 448.0);
        unsigned best = 0;
        double best_err = INFINITY;
        for (unsigned c = 0; c < 256; ++c) {
            const double err = std::fabs(e4m3_exact(c) - v);
            if (std::isnan(err)) continue;
            if (err < best_err || (err == best_err && (c & 1u) == 0 && (best & 1u))) best = c, best_err = err;
        }
        if (std::signbit(v) && best == 0) best = 0x80;  // -0 and negative values that round to zero keep the sign
        bad += quantflow::f32_to_e4m3(static_cast<float>(v)) != best;
    }
    CHECK(bad == 0);
}

TEST_CASE("e4m3_to_f32 decodes all 256 codes and round-trips every non-NaN code") {
    using quantflow::e4m3_to_f32;
    for (unsigned c = 0; c < 256; ++c) {
        const float f = e4m3_to_f32(static_cast<std::uint8_t>(c));
        const double want = e4m3_exact(c);
        if (std::isnan(want)) {
            CHECK_MESSAGE(std::isnan(f), "code " << hex(c));
            continue;
        }
        CHECK_MESSAGE(static_cast<double>(f) == want, "code " << hex(c));
        CHECK_MESSAGE(std::signbit(f) == ((c & 0x80u) != 0), "code " << hex(c));
        CHECK_MESSAGE(quantflow::f32_to_e4m3(f) == c, "round trip of code " << hex(c));
    }
    CHECK(std::isnan(e4m3_to_f32(0x7F)));
    CHECK(std::isnan(e4m3_to_f32(0xFF)));
    CHECK(e4m3_to_f32(0x7E) == 448.0f);
    CHECK(e4m3_to_f32(0xFE) == -448.0f);
    CHECK(e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));
    CHECK(e4m3_to_f32(0x08) == std::ldexp(1.0f, -6));
    CHECK(f32_bits(e4m3_to_f32(0x80)) == 0x80000000u);
}

TEST_CASE("f32_to_bf16 and f32_to_f16 equal PyTorch's casts on every fixture entry") {
    const auto bytes = read_fixture("bf16_f16_cast.bin");
    const auto n = load<std::uint64_t>(bytes, 0);
    REQUIRE(bytes.size() == 8 + 8 * n);
    std::uint64_t bad_bf16 = 0, bad_f16 = 0, nan_inputs = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        const auto x = load<float>(bytes, 8 + 4 * i);
        const auto want_bf16 = load<std::uint16_t>(bytes, 8 + 4 * n + 2 * i);
        const auto want_f16 = load<std::uint16_t>(bytes, 8 + 6 * n + 2 * i);
        const auto got_bf16 = quantflow::f32_to_bf16(x);
        const auto got_f16 = quantflow::f32_to_f16(x);
        if (std::isnan(x)) {  // NaN payloads differ between implementations: only require a NaN
            ++nan_inputs;
            CHECK(std::isnan(quantflow::bf16_to_f32(got_bf16)));
            CHECK(std::isnan(quantflow::f16_to_f32(got_f16)));
            continue;
        }
        if (got_bf16 != want_bf16 && bad_bf16++ < 5)
            FAIL_CHECK("bf16 x=" << x << " got " << hex(got_bf16) << " want " << hex(want_bf16));
        if (got_f16 != want_f16 && bad_f16++ < 5)
            FAIL_CHECK("f16 x=" << x << " got " << hex(got_f16) << " want " << hex(want_f16));
    }
    CHECK(n > 300000);
    CHECK(bad_bf16 == 0);
    CHECK(bad_f16 == 0);
    MESSAGE(n << " PyTorch casts checked, " << nan_inputs << " NaN input(s)");
}

TEST_CASE("f32_to_bf16 matches the RNE formula over all 2^32 floats; NaN stays NaN") {
    const Mismatches bad = over_all_magnitudes([](std::uint32_t lo, std::uint32_t hi, Mismatches& out) {
        for (std::uint32_t a = lo; a < hi; ++a) {
            for (int negate = 0; negate < 2; ++negate) {
                const std::uint32_t u = negate ? (a | 0x80000000u) : a;
                const unsigned got = quantflow::f32_to_bf16(bits_f32(u));
                if (is_nan_bits(u)) {
                    if ((got & 0x7FFFu) <= 0x7F80u || (got & 0x8000u) != (u >> 16 & 0x8000u)) out.add(u, got, 0x7FC0u);
                    continue;
                }
                const unsigned want = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
                if (got != want) out.add(u, got, want);
            }
        }
    });
    CHECK_MESSAGE(bad.count == 0, describe(bad));
}

TEST_CASE("f32_to_f16 matches nearest-even over all 2^32 floats; NaN stays NaN") {
    const auto grid = f16_positive_grid();
    const Mismatches bad = over_all_magnitudes([&](std::uint32_t lo, std::uint32_t hi, Mismatches& out) {
        NearestEvenSweep sweep(grid);
        for (std::uint32_t a = lo; a < hi; ++a) {
            const bool nan = is_nan_bits(a);
            const unsigned want = nan ? 0 : sweep.advance(static_cast<double>(bits_f32(a)));
            for (int negate = 0; negate < 2; ++negate) {  // (an initializer_list loop here is 1.6x slower)
                const std::uint32_t u = negate ? (a | 0x80000000u) : a;
                const unsigned got = quantflow::f32_to_f16(bits_f32(u));
                const unsigned sign = (u >> 16) & 0x8000u;
                if (nan) {
                    if ((got & 0x7FFFu) <= 0x7C00u || (got & 0x8000u) != sign) out.add(u, got, 0x7E00u | sign);
                } else if (got != (want | sign)) {
                    out.add(u, got, want | sign);
                }
            }
        }
    });
    CHECK_MESSAGE(bad.count == 0, describe(bad));
}

TEST_CASE("f16_to_f32 decodes all 65536 codes exactly; bf16_to_f32 is a shift") {
    for (unsigned c = 0; c < 65536; ++c) {
        const auto code = static_cast<std::uint16_t>(c);
        const float f = quantflow::f16_to_f32(code);
        const double want = f16_exact(c);
        const bool sign = (c & 0x8000u) != 0;
        if (std::isnan(want)) {
            if (!std::isnan(f) || std::signbit(f) != sign) FAIL_CHECK("f16 code " << hex(c));
        } else if (static_cast<double>(f) != want || std::signbit(f) != sign) {
            FAIL_CHECK("f16 code " << hex(c) << " got " << f << " want " << want);
        } else if (quantflow::f32_to_f16(f) != code) {
            FAIL_CHECK("f16 round trip of code " << hex(c));
        }
        if (f32_bits(quantflow::bf16_to_f32(code)) != (static_cast<std::uint32_t>(c) << 16))
            FAIL_CHECK("bf16 code " << hex(c));
    }
    CHECK(quantflow::f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(quantflow::f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
    CHECK(quantflow::f16_to_f32(0x0400) == std::ldexp(1.0f, -14));
    CHECK(quantflow::bf16_to_f32(0x3F80) == 1.0f);
}

TEST_CASE("int8_round rounds half to even and clamps to +-127") {
    using quantflow::int8_round;
    CHECK(int8_round(0.5f) == 0);
    CHECK(int8_round(1.5f) == 2);
    CHECK(int8_round(2.5f) == 2);
    CHECK(int8_round(-0.5f) == 0);
    CHECK(int8_round(-1.5f) == -2);
    CHECK(int8_round(-2.5f) == -2);
    CHECK(int8_round(126.5f) == 126);
    CHECK(int8_round(127.5f) == 127);
    CHECK(int8_round(-127.5f) == -127);
    CHECK(int8_round(1000.0f) == 127);
    CHECK(int8_round(-1000.0f) == -127);
    CHECK(int8_round(INFINITY) == 127);
    CHECK(int8_round(-INFINITY) == -127);
    CHECK(int8_round(std::nextafter(0.5f, 1.0f)) == 1);
    CHECK(int8_round(std::nextafter(2.5f, 0.0f)) == 2);
    CHECK(int8_round(std::nextafter(2.5f, 3.0f)) == 3);

    const auto reference = [](float x) {
        return static_cast<int>(std::clamp(std::nearbyint(x), -127.0f, 127.0f));
    };
    std::uint64_t bad = 0;
    for (int k = -200; k <= 200; ++k) {  // every half-integer and its float neighbours
        const float h = static_cast<float>(k) + 0.5f;
        for (const float x : {h, std::nextafter(h, -1e9f), std::nextafter(h, 1e9f), static_cast<float>(k)})
            bad += int8_round(x) != reference(x);
    }
    std::mt19937 rng(42);
    for (const float scale : {0.3f, 3.0f, 60.0f, 130.0f, 1e4f, 1e8f}) {
        std::normal_distribution<float> dist(0.0f, scale);
        for (int i = 0; i < 200000; ++i) {
            const float x = dist(rng);
            if (int8_round(x) != reference(x) && bad++ < 5) FAIL_CHECK("x=" << x << " got " << int(int8_round(x)));
        }
    }
    CHECK(bad == 0);
}

TEST_CASE("fp8_multiplier and int8_step: float division, amax floored at 1e-12") {
    using namespace quantflow;
    CHECK(kAmaxFloor == 1e-12f);
    CHECK(fp8_multiplier(0.0f) == 448.0f / 1e-12f);
    CHECK(int8_step(0.0f) == 1e-12f / 127.0f);
    CHECK(fp8_multiplier_reciprocal_first(0.0f) == (1.0f / 1e-12f) * 448.0f);
    CHECK(std::isfinite(fp8_multiplier(0.0f)));
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> mant(0.5f, 1.0f);
    std::uint64_t bad = 0;
    for (int i = 0; i < 100000; ++i) {
        const float amax = std::ldexp(mant(rng), i % 40 - 30);  // 2^-31 .. 2^9
        bad += f32_bits(fp8_multiplier(amax)) != f32_bits(448.0f / amax);
        bad += f32_bits(fp8_multiplier_reciprocal_first(amax)) != f32_bits((1.0f / amax) * 448.0f);
        bad += f32_bits(int8_step(amax)) != f32_bits(amax / 127.0f);
    }
    CHECK(bad == 0);
    for (const float amax : {0.02f, 0.1f, 1.0f, 3.5f, 448.0f}) {
        CHECK(fp8_multiplier(amax) == 448.0f / amax);
        CHECK(int8_step(amax) == amax / 127.0f);
    }
}
