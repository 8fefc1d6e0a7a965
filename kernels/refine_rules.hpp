// kernels/refine_rules.hpp: the per-element rule of the rounding-aware finish (kernels/cpu/refine_cpu.cpp),
// shared by the CPU pass and the CUDA kernel so both rank candidates identically.
//
// An element's move goes against the gradient of ||P||^2 / 2 by one grid step (delta, dequantized units).
// Its cost, the growth of ||W_hat - W||^2, is 2 e delta + delta^2 (e = its current error); only moves costing
// at most kRefineCostShare * delta^2 (elements within 5% of a rounding midpoint, moving towards W) qualify,
// ranked by first-order gain per cost.
#pragma once

#include <cstdint>

#include "kernels/numerics.hpp"

namespace quantflow {

inline constexpr float kRefineCostShare = 0.1f;

// Value of the next grid point up / down from each code minus the code's value (0 at the grid's ends).
struct RefineTables {
    float step_up[256];
    float step_down[256];
};

struct RefineCandidate {
    std::int64_t element;
    float ratio;  // first-order gain in ||P||^2 / 2 per unit of Frobenius cost
    float delta;  // move in dequantized units
    float cost;   // increase of ||W_hat - W||^2
    std::int8_t step;
};

QF_HOST_DEVICE bool refine_candidate(const RefineTables& t, std::uint8_t code, float scale, float e, float grad, std::int64_t element,
                                     RefineCandidate& out) {
    const float delta = (grad > 0 ? t.step_down[code] : t.step_up[code]) * scale;
    if (!(2 * e * delta <= (kRefineCostShare - 1) * delta * delta) || delta == 0 || grad == 0) return false;
    double cost = 2.0 * e * delta + static_cast<double>(delta) * delta;
    cost = cost > 0 ? cost : 0.0;
    const double floor = 1e-30 * static_cast<double>(delta) * delta;
    const double gain = -static_cast<double>(grad) * delta;
    out.element = element;
    out.ratio = static_cast<float>(gain / (cost > floor ? cost : floor));
    out.delta = delta;
    out.cost = static_cast<float>(cost);
    out.step = static_cast<std::int8_t>(grad > 0 ? -1 : 1);
    return true;
}

}  // namespace quantflow
