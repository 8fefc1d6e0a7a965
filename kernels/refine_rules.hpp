// kernels/refine_rules.hpp: the per-element rule of the rounding-aware finish's candidate pass
// (RoundingWork::midpoint_moves), shared by the CPU pass and the CUDA kernel so both find identical moves.
//
// An element's one admissible move goes to the grid neighbour across its rounding midpoint, towards W: with e
// its current error (dequantized value - W), delta = the step to the next grid point down (e > 0) or up
// (e < 0), times the scale. Its cost, the growth of ||W_hat - W||^2, is 2 e delta + delta^2, small for an
// element near the midpoint; only moves costing at most cost_share * delta^2 qualify.
#pragma once

#include <cstdint>

#include "kernels/numerics.hpp"
#include "kernels/quant_types.hpp"

namespace quantflow {

// Value of the next grid point up / down from each code minus the code's value (0 at the grid's ends and
// for NaN codes).
// nvfp4's scale search (Backend::search_block_scales, CPU and CUDA twins): the e4m3 block scales tried are the
// codes kScaleSearchBelow below to kScaleSearchAbove above round-to-nearest's (measured on Gaussian blocks with
// outlier columns, offsets -8..+2 allowed: -3..+2 are ever chosen, 0 most, then -1 and +1). The least squared
// error alone shrinks blocks (it clips their largest values): an error along the weight itself, which lies in
// the top singular subspace (numpy, 512 x 1024 power-law weight with outlier channels: Frobenius 9.55% -> 8.64%
// but projected error k 16 0.69% -> 1.01%). The score is ||e||^2 + kAlongWeight (e.x)^2 / ||x||^2 (numpy:
// weight 4 gives 8.69% / 0.50%, 8 gives 8.83% / 0.48%). After the wide finish with cost share 0.3 (small
// structured model, nvfp4, k 16): weight 4 0.38x round-to-nearest's projected error at -3.6% Frobenius, weight
// 8 0.36x at -2.8%.
inline constexpr int kScaleSearchBelow = 4, kScaleSearchAbove = 3;
inline constexpr double kAlongWeight = 8;

struct RefineTables {
    float step_up[256];
    float step_down[256];
};

RefineTables refine_tables(QuantFormat format);

// The code one grid step up (step = 1) or down (step = -1) from `code`, in grid order: two's complement when
// sign_bit is 0, else sign-magnitude with that sign bit (0x80: e4m3 / e5m2, 0x08: E2M1).
QF_HOST_DEVICE std::uint8_t grid_step_bits(std::uint8_t sign_bit, std::uint8_t code, int step) {
    if (sign_bit == 0) return static_cast<std::uint8_t>(static_cast<std::int8_t>(static_cast<int>(static_cast<std::int8_t>(code)) + step));
    const int mag = code & (sign_bit - 1);
    const int index = ((code & sign_bit) ? -mag : mag) + step;
    return static_cast<std::uint8_t>(index < 0 ? (sign_bit | -index) : index);
}
// The e4m3 (fp8) or int8 grid.
QF_HOST_DEVICE std::uint8_t grid_step(bool fp8, std::uint8_t code, int step) { return grid_step_bits(fp8 ? 0x80 : 0, code, step); }

// The admissible move of an element (code, scale, error e); false when it has none. delta and cost as above,
// step the grid direction.
QF_HOST_DEVICE bool midpoint_move(const RefineTables& t, std::uint8_t code, float scale, float e, float cost_share, float& delta,
                                  float& cost, std::int8_t& step) {
    if (e == 0) return false;
    const float d = (e > 0 ? t.step_down[code] : t.step_up[code]) * scale;
    if (d == 0) return false;
    const double c = 2.0 * static_cast<double>(e) * d + static_cast<double>(d) * d;
    if (!(c <= static_cast<double>(cost_share) * d * d)) return false;
    delta = d;
    cost = static_cast<float>(c > 0 ? c : 0.0);
    step = static_cast<std::int8_t>(e > 0 ? -1 : 1);
    return true;
}

// The value that ranks admissible moves (MidpointQuery in kernels/rounding_work.hpp): the move's second-order
// effect on the weighted projected error, delta^2 (row * col + extra * row_p * col_p), per unit of
// cost + lambda * delta^2. Plain double arithmetic (no FMA: the CPU and CUDA builds contract nothing), so every
// backend ranks identically.
QF_HOST_DEVICE double midpoint_leverage(double delta, double row, double col, double row_p, double col_p, double extra) {
    return delta * delta * (row * col + extra * row_p * col_p);
}
QF_HOST_DEVICE double midpoint_value(double delta, double cost, double leverage, double lambda) {
    return leverage / (cost + lambda * delta * delta);
}

// The finish's rounds (kernels/learned_rounding_finish.cpp) rank a candidate move (delta, cost) of element (r, c)
// by the exact decrease of the weighted projected error ||P||_h^2, -(2 delta g + leverage) with
// g = (U (h.P))[r] . V[:, c], per unit of max(cost, 0) + lambda delta^2; -1 when it would not decrease. g is a
// float dot product in four partial sums (ranking only; a single chain of k dependent adds was the slowest part of
// a round). Shared by the host's and the CUDA backend's rounds, which therefore rank identically.
// round_score given its dot product g.
QF_HOST_DEVICE double round_score_of(double g, double delta, double cost, double leverage, double lambda) {
    const double decrease = -(2 * delta * g + leverage);
    return decrease > 0 ? decrease / ((cost > 0 ? cost : 0.0) + lambda * delta * delta) : -1.0;
}

QF_HOST_DEVICE double round_score(const float* uph, const float* v, std::int64_t k, double delta, double cost, double leverage,
                                  double lambda) {
    float g0 = 0, g1 = 0, g2 = 0, g3 = 0;
    std::int64_t j = 0;
    for (; j + 4 <= k; j += 4) {
        g0 += uph[j] * v[j];
        g1 += uph[j + 1] * v[j + 1];
        g2 += uph[j + 2] * v[j + 2];
        g3 += uph[j + 3] * v[j + 3];
    }
    for (; j < k; ++j) g0 += uph[j] * v[j];
    return round_score_of(static_cast<double>((g0 + g1) + (g2 + g3)), delta, cost, leverage, lambda);
}

}  // namespace quantflow
