#include "stages/bias_corrector.hpp"

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser: decorrelates (seed, N) pairs
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Box-Muller on mt19937_64 words: written out so the draws are the same with every standard library.
std::vector<float> draw_means(std::uint64_t seed, std::int64_t n, int samples) {
    std::mt19937_64 rng(mix(seed ^ mix(static_cast<std::uint64_t>(n))));
    const double inv_sqrt = 1.0 / std::sqrt(static_cast<double>(samples > 0 ? samples : 1));
    const auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
    std::vector<float> out(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; i += 2) {
        const double r = std::sqrt(-2.0 * std::log(uniform())), theta = 2.0 * M_PI * uniform();
        out[static_cast<std::size_t>(i)] = static_cast<float>(r * std::cos(theta) * inv_sqrt);
        if (i + 1 < n) out[static_cast<std::size_t>(i + 1)] = static_cast<float>(r * std::sin(theta) * inv_sqrt);
    }
    return out;
}

float load(const std::byte* p, DType dtype, std::size_t i) {
    std::uint16_t h;
    float f;
    switch (dtype) {
        case DType::BF16: std::memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h);
        case DType::F16: std::memcpy(&h, p + 2 * i, 2); return f16_to_f32(h);
        default: std::memcpy(&f, p + 4 * i, 4); return f;
    }
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
    backend.residual_gemv(weight, job.quant, means.for_width(weight.cols), delta);
    job.bias.resize(bias.size());
    for (std::size_t i = 0; i < delta.size(); ++i) store(job.bias.data(), bias_dtype, i, load(bias.data(), bias_dtype, i) + delta[i]);
}

}  // namespace quantflow
