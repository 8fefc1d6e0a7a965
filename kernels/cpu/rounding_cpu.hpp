// kernels/cpu/rounding_cpu.hpp: learned rounding on the CPU (spec 5.3), private to kernels/cpu.
//
// Notation: q0 = round-to-nearest codes (as float values), D = dequantization scale of each element (the
// stored scale), W_hat = (q0 + delta) * D. `original` runs its whole loop in the k x k space (closed form);
// AdamW / RAdam run PyTorch's update rules on a free offset delta over the full matrix.
#pragma once

#include <functional>
#include <string_view>
#include <vector>

#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/adam_rules.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/refine_rules.hpp"
#include "kernels/rounding.hpp"

namespace quantflow {

// E0 = dequant(q) - W, projected: P0 = U^T E0 V^T.
std::vector<double> initial_projection(const TensorView& w, const QuantizedTensor& q, const LowRank& basis);

// Rewrites q's codes from q0 + delta (delta(r0, rows, out) fills rows x cols offsets in code units), with
// the final clamp and rounding of spec 5.1/5.2; returns the projected loss of the result.
double apply_offsets(const TensorView& w, const LowRank& basis, QuantizedTensor& q,
                     const std::function<void(std::int64_t, std::int64_t, float*)>& delta);

// The k^2 x k^2 operator of one INT8 `original` step in the k x k space (see rounding_cpu.cpp), exposed so
// the tests can check it against the direct form.
std::vector<double> int8_step_operator(const QuantizedTensor& q, const LowRank& basis);

// The rounding-aware finish (refine_cpu.cpp): moves single codes to a grid neighbour where that lowers the
// projected error on `basis`, its leading priority_k components first; returns the projected error of the
// result on the whole basis and counts the moves in `flips`.
double refine_rounding_cpu(const TensorView& w, const LowRank& basis, QuantizedTensor& q, std::int64_t priority_k,
                           std::int64_t& flips);

// The same driver with the full-size passes supplied by a backend: `project` returns P of q's current codes,
// `candidates(up, error2)` ranks every element with G = up * V (up = U (h.P), rows x k) through
// refine_candidate() and adds ||W_hat - W||^2 to error2; `codes_changed` runs after moves were applied to
// q.codes (a GPU backend uploads them).
using RefineCandidatePass = std::function<std::vector<RefineCandidate>(const std::vector<float>& up, double& error2)>;
double refine_rounding(const LowRank& basis, QuantizedTensor& q, std::int64_t priority_k, std::int64_t& flips,
                       const std::function<std::vector<double>()>& project, const RefineCandidatePass& candidates,
                       const std::function<void()>& codes_changed);
RefineTables refine_tables(QuantFormat format);

// The `original` loop in the k x k space from P0 (the step operator built from q's scales and the basis):
// the kept Z and the loop's statistics (initial and best loss, iterations). The caller applies
// q = q0 - (U Z V) * (FP8: 1/D, INT8: D) and rounds; shared by the CPU and CUDA backends.
struct OriginalLoop {
    std::vector<double> best_z;  // k x k, zero when the start was best
    RoundingStats stats;
};
OriginalLoop run_original_loop(const std::vector<double>& p0, const QuantizedTensor& q, const LowRank& basis,
                               const RoundingSettings& settings);

// The AdamW / RAdam loop (adam_cpu.cpp) with the full-size step supplied by a backend: pass(grad, m1, scalars,
// from, to) applies one step to the offsets in buffer `from`, writes them into buffer `to` (0 or 1; the same
// buffer when `from` is not the best) and returns U^T ((offsets in `to`) * D) V^T. best_buffer receives the
// buffer that holds the best iterate at the end; stats.final_loss is left to the caller.
using AdamPass = std::function<std::vector<double>(const std::vector<double>& grad, const std::vector<double>& m1,
                                                   const AdamScalars& scalars, int from, int to)>;
RoundingStats run_adam_loop(const std::vector<double>& p0, std::int64_t k, const RoundingSettings& settings, const AdamPass& pass,
                            int& best_buffer);

RoundingStats round_original_cpu(const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                 QuantizedTensor& q);
RoundingStats round_adam_cpu(const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                             QuantizedTensor& q);

}  // namespace quantflow
