// [gpu] The formats of issue 11 on the CUDA backend: float8_e5m2, mxfp8, nvfp4 and ConvRot kernels bit-identical
// to their CPU twins on odd shapes, every dtype and group size, and their bias-correction products.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "tests/gpu_support.hpp"

using namespace quantflow;
using qftest::gpu;
using qftest::weight_bytes;

TEST_CASE("gpu quantize: float8_e5m2, mxfp8 and nvfp4 kernels bit-identical to the CPU twins, odd shapes and every dtype") {
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{384, 512}, {200, 344}, {33, 70}}) {
      for (const DType dtype : {DType::BF16, DType::F16, DType::F32}) {
        const std::vector<std::byte> bytes = weight_bytes(dtype, static_cast<std::size_t>(rows * cols), 9);
        const TensorView w{bytes.data(), dtype, rows, cols};
        for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8E5m2Tensor, 64}, QuantSpec{QuantFormat::Mxfp8, 32},
                                     QuantSpec{QuantFormat::Nvfp4, 16}}) {
            CAPTURE(format_label(spec.format));
            const QuantizedTensor c = quantize_cpu("w", w, spec), g = gpu().quantize("w", w, spec);
            CHECK(g.codes == c.codes);
            CHECK(g.scales == c.scales);
            CHECK(g.global_scale == c.global_scale);
            std::vector<float> x(static_cast<std::size_t>(cols), 0.5f), yc(static_cast<std::size_t>(rows)), yg(yc.size());
            make_cpu_backend()->residual_gemv(w, c, x, yc);
            gpu().residual_gemv(w, g, x, yg);
            CHECK(yg == yc);
        }
      }
    }
    std::vector<float> zero(64 * 48, 0.0f);
    const TensorView z{reinterpret_cast<const std::byte*>(zero.data()), DType::F32, 64, 48};
    for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8E5m2Tensor, 64}, QuantSpec{QuantFormat::Mxfp8, 32}, QuantSpec{QuantFormat::Nvfp4, 16}}) {
        const QuantizedTensor c = quantize_cpu("z", z, spec), g = gpu().quantize("z", z, spec);
        CHECK(g.codes == c.codes);
        CHECK(g.scales == c.scales);
        CHECK(g.global_scale == c.global_scale);
    }
}

TEST_CASE("gpu nvfp4 scale search: the CPU's block scales, codes and round-to-nearest error, odd shapes and every dtype") {
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{384, 512}, {33, 70}}) {
        for (const DType dtype : {DType::BF16, DType::F16, DType::F32}) {
            CAPTURE(rows);
            CAPTURE(static_cast<int>(dtype));
            std::vector<std::byte> bytes = weight_bytes(dtype, static_cast<std::size_t>(rows * cols), 17);
            if (dtype == DType::F32) std::memset(bytes.data(), 0, 16 * sizeof(float));  // one all-zero block
            const TensorView w{bytes.data(), dtype, rows, cols};
            QuantizedTensor c = quantize_cpu("w", w, {QuantFormat::Nvfp4, 16}), g = c;
            const QuantizedTensor rtn = c;
            const double ec = make_cpu_backend()->search_block_scales("w", w, c);
            const double eg = gpu().search_block_scales("w", w, g);
            CHECK(eg == ec);
            CHECK(g.scales == c.scales);
            CHECK(g.codes == c.codes);
            std::size_t moved = 0;
            for (std::size_t i = 0; i < c.scales.size(); ++i) moved += c.scales[i] != rtn.scales[i];
            CHECK(moved > 0);  // the search changed blocks: the comparison above is not of two copies of the input
        }
    }
}

TEST_CASE("gpu convrot: the group rotation and the int8 / int4 quantizers bit-identical to the CPU twins, every group and dtype") {
    const auto cpu = make_cpu_backend();
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{200, 4096}, {33, 1024}, {7, 64}}) {
      for (const DType dtype : {DType::BF16, DType::F16, DType::F32}) {
        const std::vector<std::byte> bytes = weight_bytes(dtype, static_cast<std::size_t>(rows * cols), 13);
        const TensorView w{bytes.data(), dtype, rows, cols};
        for (const std::int64_t group : {4, 16, 64, 256, 1024, 4096}) {
            if (cols % group != 0) continue;
            CAPTURE(rows);
            CAPTURE(cols);
            CAPTURE(group);
            const std::vector<float> rc = cpu->rotate_groups("w", w, group), rg = gpu().rotate_groups("w", w, group);
            REQUIRE(rg.size() == rc.size());
            CHECK(std::memcmp(rg.data(), rc.data(), rc.size() * 4) == 0);
            const TensorView rotated{reinterpret_cast<const std::byte*>(rc.data()), DType::F32, rows, cols};
            for (const QuantFormat f : {QuantFormat::Int8ConvRot, QuantFormat::W4a4ConvRot}) {
                const QuantizedTensor c = quantize_cpu("w", rotated, {f, group}), g = gpu().quantize("w", rotated, {f, group});
                CHECK(g.codes == c.codes);
                CHECK(g.scales == c.scales);
                std::vector<float> x(static_cast<std::size_t>(cols), 0.25f), yc(static_cast<std::size_t>(rows)), yg(yc.size());
                cpu->residual_gemv(rotated, c, x, yc);
                gpu().residual_gemv(rotated, g, x, yg);
                CHECK(yg == yc);
            }
        }
      }
    }
    std::vector<float> zero(8 * 256, 0.0f);  // comfy-kitchen's floors, not the reference's 1.0
    const TensorView z{reinterpret_cast<const std::byte*>(zero.data()), DType::F32, 8, 256};
    const QuantizedTensor c = quantize_cpu("z", z, {QuantFormat::Int8ConvRot, 256}), g = gpu().quantize("z", z, {QuantFormat::Int8ConvRot, 256});
    CHECK(g.scales == c.scales);
    CHECK(c.scales[0] == 1e-30f);
}

