// kernels/learned_rounding.hpp: the one learned-rounding driver (spec 5.3), shared by every backend.
//
// It runs the optimizer (`original` in the k x k space, or the AdamW / RAdam loop), then the rounding-aware
// finish, over the primitives of a RoundingWork (kernels/rounding_work.hpp). The basis may be wider than the
// optimizer's k (settings.optimizer_k): the optimizer uses its leading components, the finish the whole basis.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"
#include "kernels/rounding_work.hpp"

namespace quantflow {

// Learned rounding of one layer. q holds the round-to-nearest codes and the scales on entry (as `work` was
// created from) and the optimized codes on return (scales unchanged). With settings.rounding_aware the result
// is never worse than round-to-nearest on the optimizer's projected error; without it, it is the reference's
// algorithm.
RoundingStats run_learned_rounding(RoundingWork& work, const LowRank& basis, const RoundingSettings& settings, QuantizedTensor& q);

// The `original` loop in the k x k space from P0 (exposed for the tests' oracles): the kept Z (k x k, zero when
// the start was best) and the loop's statistics. The step operator comes from q's scales and the basis (INT8),
// or work.int8_step_direct when the k-space operator would be too large.
struct OriginalLoop {
    std::vector<double> best_z;
    RoundingStats stats;
};
OriginalLoop run_original_loop(const std::vector<double>& p0, const QuantizedTensor& q, const LowRank& basis,
                               const RoundingSettings& settings, RoundingWork& work);

// The k^2 x k^2 operator of one INT8 `original` step in the k x k space, built from per-block Gram matrices.
std::vector<double> int8_step_operator(const QuantizedTensor& q, const LowRank& basis);

// The rounding-aware finish's constants (learned_rounding_finish.cpp explains them).
inline constexpr float kMidpointCostShare = 0.1f;  // admissible moves cost at most this share of delta^2
inline constexpr double kAdamFrobenius = 1e-3;     // AdamW / RAdam may raise ||W_hat - W|| by at most +0.1%

// How widely the finish searches. Narrow (the default): moves within 5% of their midpoint, lambda 0.05 then 0,
// up to 8 rounds that each gain 2%. Wide, where the budget leaves room for far more moves than near-midpoint
// ones (nvfp4 after its scale search: 5-10% of ||E||^2 to spend): every move towards W (cost up to delta^2),
// lambda 1 (rank by the decrease: the cost matters little), up to 32 rounds of 0.5%. Measured on the 2-block
// small structured model, nvfp4, optimizer k 16 (`tools/bench_quality.py --shapes small --blocks 2
// --format=--nvfp4` with --min_k 16), projected error k 16 / round-to-nearest's: narrow 0.57x; wide with cost
// share 0.3 0.36x, 0.5 0.29x, 1.0 0.18x (Frobenius -2.0%). The CPU pass lists only about twice the pool on
// large layers (a sampled floor), so the wider share costs time in the pass, not memory.
// Thorough (`--rounding-effort thorough`): the narrow finish over 8x the pool (one candidate per 16 elements), with
// up to 8x the moves ranked per round and 16 rounds. One WAN-14B block of structured weights, FP8, k 16: projected
// error 0.40x round-to-nearest's (median over layers) instead of 0.61x, where tools/bound_finish.py puts the
// best any one-step finish can do within the same +0.01% at 0.36x; 2.3-2.6x the 2-core CPU time of the default.
struct FinishTuning {
    float cost_share;
    double lambda;
    int max_rounds;
    double min_gain;
    std::int64_t pool_divisor;  // candidates kept for the rounds: one per this many elements (at least 64 Ki)
    std::size_t head_max;       // candidates ranked per round at most (each costs 2 k^2 flops in the prefix sums)
};
inline constexpr FinishTuning kNarrowFinish{kMidpointCostShare, 0.05, 8, 0.98, 128, std::size_t{1} << 15};
inline constexpr FinishTuning kWideFinish{1.0f, 1.0, 32, 0.995, 128, std::size_t{1} << 15};
inline constexpr FinishTuning kThoroughFinish{kMidpointCostShare, 0.05, 16, 0.98, 16, std::size_t{1} << 18};

// The finish of a layer whose codes on entry are round-to-nearest's (the wide one follows nvfp4's scale search,
// kernels/learned_rounding.cpp): narrow, or thorough with `--rounding-effort thorough`.
inline const FinishTuning& finish_tuning(bool thorough) { return thorough ? kThoroughFinish : kNarrowFinish; }

// The finish's pool size for a weight of `elements` elements.
inline std::uint64_t finish_pool_size(std::uint64_t elements, std::int64_t pool_divisor) {
    return std::max<std::uint64_t>(std::uint64_t{1} << 16, elements / static_cast<std::uint64_t>(pool_divisor));
}

// The rounding-aware finish alone: moves codes across their midpoints (work.midpoint_moves) so that the
// projected error on `basis` falls, its leading priority_k components first, never raising their error above
// its value on entry, and ||W_hat - W|| at most (1 + budget) times round-to-nearest's (rtn_error2 = its square;
// 0: the codes on entry stand in). Returns P of the result on the whole basis; stats.flips counts
// the moved codes, stats.finish_*_seconds its phases.
// `p_now`, when given, is P of the current codes on the whole basis (saves a projection).
std::vector<double> rounding_aware_finish(RoundingWork& work, const LowRank& basis, std::int64_t priority_k, double budget,
                                          double rtn_error2, RoundingStats& stats, const std::vector<double>* p_now = nullptr,
                                          const FinishTuning& tuning = kNarrowFinish);

}  // namespace quantflow
