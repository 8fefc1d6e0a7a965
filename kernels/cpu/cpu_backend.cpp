#include "kernels/cpu/cpu_backend.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

class CpuBackend final : public Backend {
public:
    std::string name() const override { return "cpu"; }
    std::vector<float> rotate_groups(std::string_view, const TensorView& w, std::int64_t g, std::unique_ptr<WeightHold>* keep) override {
        if (keep) keep->reset();
        return rotate_groups_cpu(w, g);
    }
    QuantizedTensor quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) override {
        return quantize_cpu(name, w, spec);
    }
    double search_block_scales(std::string_view, const TensorView& w, QuantizedTensor& q) override {
        return search_block_scales_cpu(w, q);
    }
    void residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x,
                       std::span<float> y) override {
        residual_gemv_cpu(w, q, x, y);
    }
    LowRank top_k_svd(std::string_view name, const TensorView& w, const SvdSettings& settings) override {
        return top_k_svd_cpu(name, w, settings);
    }
    std::unique_ptr<RoundingWork> rounding_work(std::string_view name, const TensorView& w, const LowRank& basis,
                                                QuantizedTensor& q) override {
        return make_rounding_work_cpu(name, w, basis, q);
    }
    QualityMetrics measure(const TensorView& w, const QuantizedTensor& q, const LowRank* basis,
                           const QualityInputs& inputs) override {
        return measure_cpu(w, q, basis, inputs);
    }
};

}  // namespace

namespace {

// One row's contribution, in 8 fixed lanes combined in a fixed order: the same bits on every thread
// count and in both compiled clones (no FMA: -ffp-contract=off, and the avx2 clone has no fma target).
QF_VECTOR_CLONES float residual_dot(const float* w, const float* dq, const float* x, std::int64_t n) {
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int l = 0; l < 8; ++l) lane[l] += (w[c + l] - dq[c + l]) * x[c + l];
    for (; c < n; ++c) lane[c & 7] += (w[c] - dq[c]) * x[c];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// dq[c] = values[codes[c]] * (global * scales[b]) over the blocks b of `block` columns (the last may be partial):
// the table lookups vectorise as gathers (perf: the scalar loop was 14-26% of a --simple run).
QF_VECTOR_CLONES void dequantize_row(const std::uint8_t* codes, const float* __restrict values, const float* scales, float global,
                                     std::int64_t blocks, std::int64_t block, std::int64_t n, float* __restrict dq) {
    for (std::int64_t b = 0; b < blocks; ++b) {
        const float s = global * scales[b];
        const std::int64_t end = std::min((b + 1) * block, n);
        for (std::int64_t c = b * block; c < end; ++c) dq[c] = values[codes[c]] * s;
    }
}

}  // namespace

void residual_gemv_cpu(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y) {
    QF_EXPECT(static_cast<std::int64_t>(x.size()) == w.cols && static_cast<std::int64_t>(y.size()) == w.rows,
              "residual_gemv: vector sizes " + std::to_string(x.size()) + "/" + std::to_string(y.size()) +
                  " do not match weight [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
    std::array<float, 256> values{};
    for (int c = 0; c < 256; ++c) values[static_cast<std::size_t>(c)] = code_value(q.spec.format, static_cast<std::uint8_t>(c));
    const std::int64_t block_rows = scale_block_rows(q.spec, q.rows), block_cols = scale_block_cols(q.spec, q.cols);
    const std::int64_t grid_cols = scale_cols(q.spec, q.cols);
    oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(0, w.rows, 16), [&](const auto& range) {
        std::vector<float> wrow(w.dtype == DType::F32 ? 0 : static_cast<std::size_t>(w.cols)), dq(static_cast<std::size_t>(w.cols));
        for (std::int64_t r = range.begin(); r != range.end(); ++r) {
            const float* wr = reinterpret_cast<const float*>(w.data) + r * w.cols;  // float32 rows are read in place
            if (w.dtype != DType::F32) {
                decode_row_cpu(w, r, 0, w.cols, wrow.data());
                wr = wrow.data();
            }
            dequantize_row(q.codes.data() + r * w.cols, values.data(), q.scales.data() + (r / block_rows) * grid_cols,
                           q.global_scale, grid_cols, block_cols, w.cols, dq.data());
            y[static_cast<std::size_t>(r)] = residual_dot(wr, dq.data(), x.data(), w.cols);
        }
    });
}

std::unique_ptr<Backend> make_cpu_backend() {
    return std::make_unique<CpuBackend>();
}

}  // namespace quantflow
