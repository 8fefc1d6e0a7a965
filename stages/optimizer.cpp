#include "stages/optimizer.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/numerics.hpp"
#include "kernels/random.hpp"

namespace quantflow {
namespace {

SvdSettings svd_settings(const TensorJob& job, std::string_view name, const OptimizerSettings& s) {
    SvdSettings svd;
    svd.k = s.rounding.rounding_aware ? std::max(job.plan->rank_k, kRefineRank) : job.plan->rank_k;
    svd.seed = named_seed(s.seed, name);
    svd.exact = s.full_matrix;
    return svd;
}

bool all_zero(const QuantizedTensor& q) {
    const std::uint8_t mask = is_fp8(q.spec.format) ? 0x7F : 0xFF;
    return std::all_of(q.codes.begin(), q.codes.end(), [mask](std::uint8_t c) { return (c & mask) == 0; });
}

std::vector<float> as_floats(const TensorView& v) {
    std::vector<float> out(static_cast<std::size_t>(v.rows * v.cols));
    for (std::size_t i = 0; i < out.size(); ++i) {
        std::uint16_t h;
        switch (v.dtype) {
            case DType::BF16: std::memcpy(&h, v.data + 2 * i, 2); out[i] = bf16_to_f32(h); break;
            case DType::F16: std::memcpy(&h, v.data + 2 * i, 2); out[i] = f16_to_f32(h); break;
            default: std::memcpy(&out[i], v.data + 4 * i, 4);
        }
    }
    return out;
}

}  // namespace

void quantize_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, Backend& backend,
                    const OptimizerSettings& settings) {
    const auto start = std::chrono::steady_clock::now();
    job.quant = backend.quantize(tensor_name, weight, job.plan->spec);
    if (job.plan->rank_k > 0 && !all_zero(job.quant)) {
        RoundingSettings rounding = settings.rounding;
        rounding.optimizer_k = job.plan->rank_k;
        if (settings.on_progress)
            rounding.on_progress = [&](std::string_view phase, int step, int steps) { settings.on_progress(tensor_name, phase, step, steps); };
        if (rounding.on_progress) rounding.on_progress("svd", 0, 1);
        job.basis = backend.top_k_svd(tensor_name, weight, svd_settings(job, tensor_name, settings));
        job.rounding = backend.learned_round(tensor_name, weight, job.basis, rounding, job.quant);
    }
    job.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void measure_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, const TensorView* bias,
                   const TensorView* bias_new, Backend& backend, const OptimizerSettings& settings, int samples) {
    std::vector<float> x(static_cast<std::size_t>(weight.cols * samples));
    fill_normal(named_seed(settings.seed ^ 0x5157u, tensor_name), 1.0, x);
    std::vector<float> b, b_new;
    if (bias && bias_new) {
        b = as_floats(*bias);
        b_new = as_floats(*bias_new);
    }
    // The projected error of the report is on the optimizer's own k components (the basis may be wider).
    const LowRank basis = job.basis.k > 0 ? leading_components(job.basis, job.plan->rank_k) : LowRank{};
    job.quality = backend.measure(weight, job.quant, basis.k > 0 ? &basis : nullptr, {x, samples, b, b_new});
    job.measured = true;
}

}  // namespace quantflow
