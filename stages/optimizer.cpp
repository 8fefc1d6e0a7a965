#include "stages/optimizer.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "kernels/random.hpp"

namespace quantflow {
namespace {

SvdSettings svd_settings(const TensorJob& job, std::string_view name, const TensorView& weight, const OptimizerSettings& s) {
    SvdSettings svd;
    svd.k = s.rounding.rounding_aware ? std::max(job.plan->rank_k, kRefineRank) : job.plan->rank_k;
    svd.seed = named_seed(s.seed, name);
    svd.exact = s.full_matrix || exact_svd_is_cheap(weight.rows, weight.cols);
    return svd;
}

}  // namespace

void quantize_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, Backend& backend,
                    const OptimizerSettings& settings) {
    const auto start = std::chrono::steady_clock::now();
    job.quant = backend.quantize(tensor_name, weight, job.plan->spec);
    if (job.plan->rank_k > 0 && !all_codes_zero(job.quant)) {
        RoundingSettings rounding = settings.rounding;
        rounding.optimizer_k = job.plan->rank_k;
        rounding.finish_budget = job.plan->finish_budget;
        if (settings.on_progress)
            rounding.on_progress = [&](std::string_view phase, int step, int steps) { settings.on_progress(tensor_name, phase, step, steps); };
        if (job.plan->search_scales) rounding.rtn_error2 = backend.search_block_scales(tensor_name, weight, job.quant);
        if (rounding.on_progress) rounding.on_progress("svd", 0, 1);
        const auto svd_start = std::chrono::steady_clock::now();
        job.basis = backend.top_k_svd(tensor_name, weight, svd_settings(job, tensor_name, weight, settings));
        const double svd_seconds = seconds_since(svd_start);
        job.rounding = backend.learned_round(tensor_name, weight, job.basis, rounding, job.quant);
        job.rounding.svd_seconds = svd_seconds;
    }
    job.seconds = seconds_since(start);
}

void measure_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, const TensorView* bias,
                   const TensorView* bias_new, Backend& backend, const OptimizerSettings& settings, int samples) {
    std::vector<float> x(static_cast<std::size_t>(weight.cols * samples));
    fill_normal(named_seed(settings.seed ^ 0x5157u, tensor_name), 1.0, x);
    std::vector<float> b, b_new;
    if (bias && bias_new) {
        const auto values = [](const TensorView& v) {
            return decode_floats({v.data, static_cast<std::size_t>(v.rows * v.cols * dtype_bits(v.dtype) / 8)}, v.dtype);
        };
        b = values(*bias);
        b_new = values(*bias_new);
    }
    // The projected error of the report is on the optimizer's own k components (the basis may be wider).
    const LowRank basis = job.basis.k > 0 ? leading_components(job.basis, job.plan->rank_k) : LowRank{};
    job.quality = backend.measure(weight, job.quant, basis.k > 0 ? &basis : nullptr, {x, samples, b, b_new});
    job.measured = true;
}

}  // namespace quantflow
