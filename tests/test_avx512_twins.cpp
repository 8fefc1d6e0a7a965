// The loops written for AVX-512 by hand (kernels/cpu/code_gather_cpu.hpp, the finish's filter_row) against their
// portable twins: the same outputs, bit for bit, for every format's code table, every weight dtype and a length
// that leaves a remainder after the 16-lane blocks. On a CPU without AVX-512 both calls run the twin.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/code_gather_cpu.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"

using namespace quantflow;

namespace {

constexpr std::int64_t kCols = 1000;  // 62 blocks of 16 and 8 left over

bool same_bits(const void* a, const void* b, std::size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

// Every code a format holds, each a few times, in random order.
std::vector<std::uint8_t> random_codes(std::mt19937& g, std::int64_t n) {
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(n));
    std::uniform_int_distribution<int> any(0, 255);
    for (auto& c : codes) c = static_cast<std::uint8_t>(any(g));
    return codes;
}

}  // namespace

TEST_CASE("avx-512 code gathers equal their portable twins bit for bit") {
    MESSAGE("this CPU " << (cpu_has_avx512() ? "has" : "lacks") << " AVX-512: the first calls run that path");
    std::mt19937 g(5);
    std::normal_distribution<float> normal;
    for (const QuantFormat format : {QuantFormat::Fp8Tensor, QuantFormat::Int8Row, QuantFormat::Nvfp4, QuantFormat::Fp8E5m2Tensor}) {
        CAPTURE(format_label(format));
        const auto table = code_values(format);
        const std::vector<std::uint8_t> codes = random_codes(g, kCols);
        std::vector<float> x(kCols), d(kCols), w(kCols);
        for (std::int64_t c = 0; c < kCols; ++c) x[c] = normal(g), d[c] = 0.01f + std::fabs(normal(g)), w[c] = normal(g);
        std::vector<float> fast = x, twin = x;
        add_code_values(table.data(), codes.data(), kCols, fast.data());
        add_code_values(table.data(), codes.data(), kCols, twin.data(), true);
        CHECK(same_bits(fast.data(), twin.data(), fast.size() * 4));
        CHECK(!same_bits(fast.data(), x.data(), x.size() * 4));
        std::vector<double> e_fast(kCols), e_twin(kCols);
        code_errors_f64(table.data(), codes.data(), d.data(), w.data(), kCols, e_fast.data());
        code_errors_f64(table.data(), codes.data(), d.data(), w.data(), kCols, e_twin.data(), true);
        CHECK(same_bits(e_fast.data(), e_twin.data(), e_fast.size() * 8));
    }
}

TEST_CASE("avx-512 fp8 encoding equals its portable twin bit for bit") {
    std::mt19937 g(3);
    std::normal_distribution<float> normal;
    std::vector<float> x(kCols * 4);
    for (std::size_t i = 0; i < x.size(); ++i) {  // normals, subnormals of e4m3, values past 448, exact ties
        const float v = normal(g);
        x[i] = i % 4 == 0 ? v * 1e-3f : i % 4 == 1 ? v * 300 : i % 4 == 2 ? v : std::ldexp(std::round(v * 16) + 0.5f, -4);
    }
    for (const float multiplier : {1.0f, 37.5f}) {
        std::vector<std::uint8_t> fast(x.size()), twin(x.size());
        encode_fp8_cpu(x.data(), static_cast<std::int64_t>(x.size()), multiplier, fast.data());
        encode_fp8_cpu(x.data(), static_cast<std::int64_t>(x.size()), multiplier, twin.data(), true);
        CHECK(fast == twin);
    }
}

TEST_CASE("avx-512 midpoint filter lists the same columns and errors as its portable twin") {
    std::mt19937 g(7);
    std::normal_distribution<float> normal;
    const std::int64_t rows = 3;
    for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8Tensor, 64}, QuantSpec{QuantFormat::Fp8Row, 64}, QuantSpec{QuantFormat::Int8Row, 64},
                                 QuantSpec{QuantFormat::Nvfp4, 16}}) {
        for (const DType dtype : {DType::BF16, DType::F16, DType::F32}) {
            CAPTURE(format_label(spec.format));
            CAPTURE(static_cast<int>(dtype));
            // Weights in the dtype, quantized to nearest, then a third of the codes moved one step: errors of both
            // signs and every size, some past the midpoint.
            std::vector<std::byte> bytes(static_cast<std::size_t>(rows * kCols * dtype_bits(dtype) / 8));
            for (std::int64_t i = 0; i < rows * kCols; ++i) {
                const float v = 0.02f * normal(g);
                if (dtype == DType::BF16) reinterpret_cast<std::uint16_t*>(bytes.data())[i] = f32_to_bf16(v);
                else if (dtype == DType::F16) reinterpret_cast<std::uint16_t*>(bytes.data())[i] = f32_to_f16(v);
                else reinterpret_cast<float*>(bytes.data())[i] = v;
            }
            const TensorView w{bytes.data(), dtype, rows, kCols};
            QuantizedTensor q = quantize_cpu("w", w, spec);
            const std::uint8_t sign = grid_sign_bit(spec.format);
            for (std::size_t i = 0; i < q.codes.size(); i += 3) q.codes[i] = grid_step_bits(sign, q.codes[i], i % 2 ? 1 : -1);
            const RefineTables t = refine_tables(spec.format);
            const auto values = code_values(spec.format);
            std::vector<CodeRecord> records(256);
            std::vector<float> bound(kCols);
            for (std::size_t c = 0; c < 256; ++c) records[c] = {values[c], std::fabs(t.step_up[c]), std::fabs(t.step_down[c]), 0};
            for (auto& b : bound) b = std::fabs(normal(g));
            for (const bool bounded : {false, true}) {
                CAPTURE(bounded);
                const MidpointFilter f{records.data(), 0.3f, bounded ? bound.data() : nullptr, 0.8f};
                std::vector<float> d(kCols), e_fast(kCols), e_twin(kCols);
                std::vector<std::uint32_t> c_fast(kCols), c_twin(kCols);
                MidpointScratch scratch;
                for (std::int64_t r = 0; r < rows; ++r) {
                    row_scales(q, r, d.data());
                    const std::uint8_t* codes = q.codes.data() + r * kCols;
                    double s_fast = 0, s_twin = 0;
                    const std::int64_t n_fast = filter_row(f, w, r, codes, d.data(), e_fast.data(), c_fast.data(), &s_fast, scratch);
                    const std::int64_t n_twin = filter_row(f, w, r, codes, d.data(), e_twin.data(), c_twin.data(), &s_twin, scratch, true);
                    CHECK(n_fast > 0);
                    REQUIRE(n_fast == n_twin);
                    CHECK(same_bits(c_fast.data(), c_twin.data(), static_cast<std::size_t>(n_fast) * 4));
                    CHECK(same_bits(e_fast.data(), e_twin.data(), e_fast.size() * 4));
                    CHECK(same_bits(&s_fast, &s_twin, 8));
                }
            }
        }
    }
}
