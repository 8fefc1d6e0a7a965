// stages/optimizer.hpp: the compute stage of a quantized layer: scale and rounding through the Backend.
//
// Round-to-nearest first (spec 5.1/5.2); then, for layers planned with rank_k > 0 (no --simple), the
// top-k SVD and learned rounding of spec 5.3. An all-zero weight stays round-to-nearest (nothing to learn).
// With the rounding-aware finish on, the SVD keeps max(k, kRefineRank) components: the optimizer uses the
// leading k (the reference's rule), the finish all of them, so small layers (k of 1 or 2) also get their
// leading 16 directions cleaned.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "kernels/backend.hpp"
#include "stages/messages.hpp"

namespace quantflow {

inline constexpr std::int64_t kRefineRank = 16;

struct OptimizerSettings {
    std::uint64_t seed = 0;       // the run seed: each layer's SVD sketch is seeded by (seed, tensor name)
    bool full_matrix = false;     // exact SVD
    RoundingSettings rounding;    // optimizer, num_iter, lr (on_progress is set per layer)
    // Per-layer progress: (tensor, phase, step, steps). May be empty.
    std::function<void(std::string_view, std::string_view, int, int)> on_progress;
};

// Fills job.quant (and job.rounding) from the weight. Throws Error naming the tensor on NaN/Inf weights.
void quantize_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, Backend& backend,
                    const OptimizerSettings& settings);

// Fills job.quality: errors of job.quant against the weight, projected on the layer's top-k basis (job.basis,
// when learned rounding made one) and on outputs for `samples` seeded Gaussian inputs, with the bias before and after correction.
void measure_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, const TensorView* bias,
                   const TensorView* bias_new, Backend& backend, const OptimizerSettings& settings, int samples);

}  // namespace quantflow
