// The CPU quantizers: the vectorised FP8 encoder against the scalar twin, every format's scale rule
// against a scalar re-computation, bit stability across thread counts, and the bias-correction product.
#include <doctest/doctest.h>

#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

TensorView view_of(const std::vector<std::byte>& bytes, DType dtype, std::int64_t rows, std::int64_t cols) {
    return {bytes.data(), dtype, rows, cols};
}

float value_at(const TensorView& w, std::int64_t i) {
    std::uint16_t h;
    float f;
    switch (w.dtype) {
        case DType::BF16: std::memcpy(&h, w.data + 2 * i, 2); return bf16_to_f32(h);
        case DType::F16: std::memcpy(&h, w.data + 2 * i, 2); return f16_to_f32(h);
        default: std::memcpy(&f, w.data + 4 * i, 4); return f;
    }
}

// Scalar twin: the spec's formulas element by element, for any format.
QuantizedTensor scalar_quantize(const TensorView& w, const QuantSpec& spec) {
    QuantizedTensor q;
    q.spec = spec;
    q.codes.resize(static_cast<std::size_t>(w.rows * w.cols));
    const std::int64_t br = scale_block_rows(spec, w.rows), bc = scale_block_cols(spec, w.cols);
    const std::int64_t gr = w.rows / br, gc = w.cols / bc;
    const bool fp8 = is_fp8(spec.format);
    for (std::int64_t a = 0; a < gr; ++a)
        for (std::int64_t b = 0; b < gc; ++b) {
            float amax = 0;
            for (std::int64_t r = a * br; r < (a + 1) * br; ++r)
                for (std::int64_t c = b * bc; c < (b + 1) * bc; ++c) amax = std::max(amax, std::fabs(value_at(w, r * w.cols + c)));
            const float m = spec.format == QuantFormat::Fp8Block ? fp8_multiplier_reciprocal_first(amax) : fp8_multiplier(amax);
            const float s = int8_step(amax);
            q.scales.push_back(fp8 ? 1.0f / m : s);
            for (std::int64_t r = a * br; r < (a + 1) * br; ++r)
                for (std::int64_t c = b * bc; c < (b + 1) * bc; ++c) {
                    const float x = value_at(w, r * w.cols + c);
                    q.codes[static_cast<std::size_t>(r * w.cols + c)] =
                        fp8 ? f32_to_e4m3(clamp_abs(x * m, kFp8Max)) : static_cast<std::uint8_t>(int8_round(x / s));
                }
        }
    return q;
}

}  // namespace

TEST_CASE("encode_fp8_cpu equals f32_to_e4m3 after the clamp for all 2^32 float bit patterns (its portable twin for 2^29)") {
    const unsigned threads = std::max(2u, std::thread::hardware_concurrency());
    std::vector<std::uint64_t> mismatches(threads, 0);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            constexpr std::uint64_t kChunk = 1 << 16;
            std::vector<float> x(kChunk);
            std::vector<std::uint8_t> out(kChunk), twin(kChunk);
            for (std::uint64_t base = t * kChunk; base < (1ull << 32); base += threads * kChunk) {
                for (std::uint64_t i = 0; i < kChunk; ++i) x[i] = bits_f32(static_cast<std::uint32_t>(base + i));
                encode_fp8_cpu(x.data(), kChunk, 1.0f, out.data());
                // The portable twin of the AVX-512 loop on every 8th chunk (all 2^32 would double the sanitizer run).
                const bool twin_too = (base / kChunk) % 8 == 0;
                if (twin_too) encode_fp8_cpu(x.data(), kChunk, 1.0f, twin.data(), true);
                for (std::uint64_t i = 0; i < kChunk; ++i) {
                    if (std::isnan(x[i])) continue;  // NaN weights are rejected before encoding
                    const std::uint8_t expected = f32_to_e4m3(clamp_abs(x[i], kFp8Max));
                    mismatches[t] += (out[i] != expected) + (twin_too && twin[i] != expected);
                }
            }
        });
    for (auto& th : pool) th.join();
    std::uint64_t total = 0;
    for (auto m : mismatches) total += m;
    CHECK(total == 0);
}

TEST_CASE("every format matches its scalar twin, for bf16, f16 and f32 weights") {
    const std::int64_t rows = 192, cols = 256;
    for (const DType dtype : {DType::BF16, DType::F16, DType::F32}) {
        std::vector<std::byte> bytes = dtype == DType::F32 ? qftest::random_f32(rows * cols, 7) : qftest::random_bf16(rows * cols, 7);
        if (dtype == DType::F16)  // reuse the bf16 draw's values as f16 codes of similar magnitude
            for (std::int64_t i = 0; i < rows * cols; ++i) {
                std::uint16_t h;
                std::memcpy(&h, bytes.data() + 2 * i, 2);
                h = f32_to_f16(bf16_to_f32(h));
                std::memcpy(bytes.data() + 2 * i, &h, 2);
            }
        const TensorView w = view_of(bytes, dtype, rows, cols);
        for (const QuantFormat f : {QuantFormat::Fp8Tensor, QuantFormat::Fp8Row, QuantFormat::Fp8Block, QuantFormat::Fp8Block2d,
                                    QuantFormat::Int8Block, QuantFormat::Int8Lode, QuantFormat::Int8Tensor, QuantFormat::Int8Row}) {
            const QuantSpec spec{f, 64};
            INFO(format_label(f) << " " << dtype_name(dtype));
            const QuantizedTensor fast = quantize_cpu("w", w, spec), slow = scalar_quantize(w, spec);
            CHECK(fast.codes == slow.codes);
            CHECK(fast.scales == slow.scales);
        }
    }
}

TEST_CASE("quantized bytes do not depend on the thread count") {
    const auto bytes = qftest::random_bf16(512 * 384, 11);
    const TensorView w = view_of(bytes, DType::BF16, 512, 384);
    std::vector<QuantizedTensor> results;
    std::vector<std::vector<float>> residuals;
    std::vector<float> x(384);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i));
    for (int threads = 1; threads <= 4; ++threads) {
        oneapi::tbb::global_control limit(oneapi::tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
        results.push_back(quantize_cpu("w", w, {QuantFormat::Fp8Block, 64}));
        residuals.emplace_back(512);
        residual_gemv_cpu(w, results.back(), x, residuals.back());
    }
    for (std::size_t i = 1; i < results.size(); ++i) {
        CHECK(results[i].codes == results[0].codes);
        CHECK(results[i].scales == results[0].scales);
        CHECK(residuals[i] == residuals[0]);
    }
}

TEST_CASE("an all-zero weight quantizes to zero codes with every scale 1.0 (reference rule)") {
    const std::vector<std::byte> zeros(128 * 128 * 2, std::byte{0});
    for (const QuantFormat f : {QuantFormat::Fp8Tensor, QuantFormat::Fp8Block, QuantFormat::Int8Block}) {
        const auto q = quantize_cpu("zero.proj.weight", view_of(zeros, DType::BF16, 128, 128), {f, 64});
        CHECK(std::all_of(q.codes.begin(), q.codes.end(), [](std::uint8_t c) { return c == 0; }));
        CHECK(std::all_of(q.scales.begin(), q.scales.end(), [](float s) { return s == 1.0f; }));
    }
}

TEST_CASE("a NaN or Inf weight is an error naming the tensor and the row") {
    auto bytes = qftest::random_f32(64 * 64, 3);
    const float inf = INFINITY;
    std::memcpy(bytes.data() + 4 * (5 * 64 + 2), &inf, 4);
    CHECK_THROWS_WITH_AS(quantize_cpu("blocks.0.q.weight", view_of(bytes, DType::F32, 64, 64), {QuantFormat::Fp8Tensor, 64}),
                         doctest::Contains("tensor 'blocks.0.q.weight' [64, 64] holds NaN or Inf in row 5"), Error);
}

TEST_CASE("INT8 rounds half to even instead of truncating (spec 5.2, the reference truncates)") {
    // amax 127 gives step 1.0, so the codes are the rounded values themselves.
    std::vector<float> values = {127.0f, 2.5f, -2.5f, 1.5f, 0.7f, -0.7f, 3.49f, 0.0f};
    std::vector<std::byte> bytes(values.size() * 4);
    std::memcpy(bytes.data(), values.data(), bytes.size());
    const auto q = quantize_cpu("w", view_of(bytes, DType::F32, 1, 8), {QuantFormat::Int8Tensor, 64});
    const std::vector<std::int8_t> expected = {127, 2, -2, 2, 1, -1, 3, 0};
    for (std::size_t i = 0; i < expected.size(); ++i) CHECK(static_cast<std::int8_t>(q.codes[i]) == expected[i]);
}

TEST_CASE("residual_gemv computes (W - dequant(q)) x") {
    const auto bytes = qftest::random_f32(32 * 64, 5, 1.0f);
    const TensorView w = view_of(bytes, DType::F32, 32, 64);
    const auto q = quantize_cpu("w", w, {QuantFormat::Int8Lode, 16});
    std::vector<float> x(64), y(32);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.01f * static_cast<float>(i) - 0.3f;
    residual_gemv_cpu(w, q, x, y);
    for (std::int64_t r = 0; r < 32; ++r) {
        double expect = 0;
        for (std::int64_t c = 0; c < 64; ++c) {
            const double deq = static_cast<double>(static_cast<std::int8_t>(q.codes[r * 64 + c])) * q.scales[r * 4 + c / 16];
            expect += (value_at(w, r * 64 + c) - deq) * x[static_cast<std::size_t>(c)];
        }
        CHECK(y[static_cast<std::size_t>(r)] == doctest::Approx(expect).epsilon(1e-4));
    }
}
