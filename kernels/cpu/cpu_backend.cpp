#include "kernels/cpu/cpu_backend.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <array>
#include <cstring>
#include <string>

#include "kernels/error.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

float element(const TensorView& w, std::size_t i) {
    switch (w.dtype) {
        case DType::BF16: {
            std::uint16_t h;
            std::memcpy(&h, w.data + 2 * i, 2);
            return bf16_to_f32(h);
        }
        case DType::F16: {
            std::uint16_t h;
            std::memcpy(&h, w.data + 2 * i, 2);
            return f16_to_f32(h);
        }
        default: {
            float f;
            std::memcpy(&f, w.data + 4 * i, 4);
            return f;
        }
    }
}

float decode_code(bool fp8, std::uint8_t code) {
    return fp8 ? e4m3_to_f32(code) : static_cast<float>(static_cast<std::int8_t>(code));
}

class CpuBackend final : public Backend {
public:
    std::string name() const override { return "cpu"; }
    QuantizedTensor quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) override {
        return quantize_cpu(name, w, spec);
    }
    void residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x,
                       std::span<float> y) override {
        residual_gemv_cpu(w, q, x, y);
    }
};

}  // namespace

void residual_gemv_cpu(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y) {
    QF_EXPECT(static_cast<std::int64_t>(x.size()) == w.cols && static_cast<std::int64_t>(y.size()) == w.rows,
              "residual_gemv: vector sizes " + std::to_string(x.size()) + "/" + std::to_string(y.size()) +
                  " do not match weight [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
    const bool fp8 = is_fp8(q.spec.format);
    const std::int64_t block_rows = scale_block_rows(q.spec, q.rows), block_cols = scale_block_cols(q.spec, q.cols);
    const std::int64_t grid_cols = scale_cols(q.spec, q.cols);
    oneapi::tbb::parallel_for(std::int64_t{0}, w.rows, [&](std::int64_t r) {
        // Eight fixed lanes, combined in a fixed order: the sum does not depend on the thread count.
        std::array<float, 8> lane{};
        const float* scale_row = q.scales.data() + (r / block_rows) * grid_cols;
        for (std::int64_t c = 0; c < w.cols; ++c) {
            const std::size_t i = static_cast<std::size_t>(r * w.cols + c);
            const float dequant = decode_code(fp8, q.codes[i]) * scale_row[c / block_cols];
            lane[static_cast<std::size_t>(c & 7)] += (element(w, i) - dequant) * x[static_cast<std::size_t>(c)];
        }
        y[static_cast<std::size_t>(r)] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    });
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace quantflow
