#include "stages/bias_corrector.hpp"

#include <cmath>
#include <cstring>

#include "kernels/convrot.hpp"
#include "kernels/numerics.hpp"
#include "kernels/random.hpp"

namespace quantflow {
namespace {

std::vector<float> draw_means(std::uint64_t seed, std::int64_t n, int samples) {
    std::vector<float> out(static_cast<std::size_t>(n));
    fill_normal(mix_seed(seed ^ mix_seed(static_cast<std::uint64_t>(n))), 1.0 / std::sqrt(static_cast<double>(samples > 0 ? samples : 1)), out);
    return out;
}

void store(std::byte* p, DType dtype, std::size_t i, float v) {
    std::uint16_t h;
    switch (dtype) {
        case DType::BF16: h = f32_to_bf16(v); std::memcpy(p + 2 * i, &h, 2); break;
        case DType::F16: h = f32_to_f16(v); std::memcpy(p + 2 * i, &h, 2); break;
        default: std::memcpy(p + 4 * i, &v, 4);
    }
}

}  // namespace

std::span<const float> CalibrationMeans::for_width(std::int64_t n) {
    std::lock_guard lock(mutex_);
    auto it = cache_.find(n);
    if (it == cache_.end()) it = cache_.emplace(n, draw_means(seed_, n, samples_)).first;
    return it->second;
}

void correct_bias(TensorJob& job, const TensorView& weight, std::span<const std::byte> bias, DType bias_dtype,
                  Backend& backend, CalibrationMeans& means) {
    std::vector<float> delta(static_cast<std::size_t>(weight.rows));
    const std::span<const float> m = means.for_width(weight.cols);
    if (is_convrot(job.quant.spec.format)) {
        // weight is W * H (rotated), so (W - W_hat) m = (W * H - Q)(H m): the means rotate with it.
        std::vector<float> rotated(m.begin(), m.end());
        std::vector<double> scratch(static_cast<std::size_t>(job.quant.spec.block_size));
        rotate_row_groups(rotated.data(), weight.cols, job.quant.spec.block_size, scratch.data());
        backend.residual_gemv(weight, job.quant, rotated, delta);
    } else {
        backend.residual_gemv(weight, job.quant, m, delta);
    }
    const std::vector<float> original = decode_floats(bias, bias_dtype);
    job.bias.resize(bias.size());
    for (std::size_t i = 0; i < delta.size(); ++i) store(job.bias.data(), bias_dtype, i, original[i] + delta[i]);
}

}  // namespace quantflow
