// The CPU pass of the rounding-aware finish (rounding_cpu.hpp, MidpointScanCpu): each row's errors and filter over
// every element, then the move rule and the floor over the ~10% of columns the filter keeps, compacted first.
// Every loop over the elements is branch-free: a branch on e == 0 and another on the floor test were taken at
// random and mispredicted (perf: the pass was 12% + 6.7% of a 2-core default run, see the commit).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/numerics.hpp"
#include "kernels/vector_clones.hpp"

namespace quantflow {
namespace {

// midpoint_move (refine_rules.hpp) for an e that is neither 0 nor NaN (all the filter leaves), with its branches
// turned into a table offset (e > 0 is e's sign bit clear) and masks. `admissible` is what midpoint_move returns;
// when it is true, delta, cost and step are its outputs, bit for bit (the same float and double operations).
struct Candidate {
    float delta, cost;
    std::int8_t step;
    bool admissible;
};
inline Candidate midpoint_candidate(const RefineTables& t, std::uint8_t code, float scale, float e, float cost_share) {
    const std::uint32_t negative = f32_bits(e) >> 31;
    const float* steps = t.step_up;  // step_down follows step_up in RefineTables
    static_assert(offsetof(RefineTables, step_down) == 256 * sizeof(float));
    const float d = steps[(1 - negative) * 256 + code] * scale;  // step_down[code] when e > 0
    const double c = 2.0 * static_cast<double>(e) * d + static_cast<double>(d) * d;
    return {d, static_cast<float>(std::max(0.0, c)), static_cast<std::int8_t>(2 * static_cast<int>(negative) - 1),
            static_cast<bool>((d != 0) & (c <= static_cast<double>(cost_share) * d * d))};
}

}  // namespace

MidpointScanCpu::MidpointScanCpu(const TensorView& w, const QuantizedTensor& q, const MidpointQuery& query)
    : w_(w), q_(q), query_(query), tables_(refine_tables(q.spec.format)) {
    const std::array<float, 256> values = code_values(q.spec.format);
    for (std::size_t c = 0; c < 256; ++c) records_[c] = {values[c], std::fabs(tables_.step_up[c]), std::fabs(tables_.step_down[c]), 0};
    if (query.col.empty() || !(query.lambda > 0) || !(query.priority_extra >= 0)) return;
    // A column's bound, rounded up to a float.
    bound_.resize(query.col.size());
    for (std::size_t c = 0; c < bound_.size(); ++c) {
        const double b = std::max(query.col[c], query.col_p[c]);
        bound_[c] = static_cast<float>(b);
        if (static_cast<double>(bound_[c]) < b) bound_[c] = std::nextafter(bound_[c], std::numeric_limits<float>::infinity());
    }
}

std::vector<MidpointMove> MidpointScanCpu::band(std::int64_t r0, std::int64_t rows, double floor, double* error2) const {
    return floor > 0 ? band_moves<true>(r0, rows, floor, error2) : band_moves<false>(r0, rows, floor, error2);
}

float MidpointScanCpu::row_threshold(std::int64_t r, double floor) const {
    // value = lev / (cost + lambda delta^2) <= delta^2 L / (lambda delta^2) with L = row col + extra row_p col_p
    // <= a max(col, col_p), a = row + extra row_p; the value computed in double is within 8 ulps of that. So an
    // element whose column bound is below (1 - 1e-9) floor lambda / a cannot reach the floor; the threshold is
    // rounded down to a float.
    const auto r_ = static_cast<std::size_t>(r);
    const double a = query_.row[r_] + query_.priority_extra * query_.row_p[r_];
    if (!(a > 0)) return std::numeric_limits<float>::infinity();  // no leverage: every value is 0
    const double t = floor * query_.lambda * (1 - 1e-9) / a;
    float f = static_cast<float>(t);
    if (static_cast<double>(f) > t) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
    return f;
}

template <bool kFloor>
std::vector<MidpointMove> MidpointScanCpu::band_moves(std::int64_t r0, std::int64_t rows, double floor, double* error2) const {
    const float cost_share = query_.cost_share;
    const float floor_share = (1 - cost_share) / 2 - 0.01f;
    const std::int64_t n = q_.cols;
    std::vector<float> e(static_cast<std::size_t>(n));
    std::vector<std::uint32_t> cols(static_cast<std::size_t>(n));
    MidpointScratch scratch;
    // A row's candidates are each written to the next free slot of `row_moves` and kept by advancing past it;
    // the kept ones are then appended to `out`, which so holds no more than the band's moves.
    std::vector<MidpointMove> row_moves(static_cast<std::size_t>(n)), out;
    out.reserve(static_cast<std::size_t>(rows * n / (kFloor ? 256 : 16)));
    const bool prune = kFloor && !bound_.empty();
    MidpointFilter filter{records_.data(), floor_share, prune ? bound_.data() : nullptr, 0.0f};
    double sum = 0;
    RowScales scales(q_);
    for (std::int64_t r = r0; r < r0 + rows; ++r) {
        const float* d = scales.at(r);
        const std::uint8_t* codes = q_.codes.data() + r * n;
        if (prune) filter.threshold = row_threshold(r, floor);
        // The columns that may qualify (a superset of cost <= cost_share delta^2, i.e. |e| >= (1 - cost_share) / 2
        // |delta|, and of the floor's leverage bound), and every column's e.
        double row_error2 = 0;
        const std::int64_t count = filter_row(filter, w_, r, codes, d, e.data(), cols.data(), error2 ? &row_error2 : nullptr, scratch);
        sum += row_error2;
        const auto r_ = static_cast<std::size_t>(r);
        std::size_t used = 0;
        for (std::int64_t j = 0; j < count; ++j) {
            const std::uint32_t c = cols[static_cast<std::size_t>(j)];
            const Candidate k = midpoint_candidate(tables_, codes[c], d[c], e[c], cost_share);
            bool keep = k.admissible;
            if constexpr (kFloor) {  // move_value of rounding_cpu.cpp, which ranks the sample
                const double lev = midpoint_leverage(k.delta, query_.row[r_], query_.col[c], query_.row_p[r_], query_.col_p[c],
                                                     query_.priority_extra);
                keep &= !(midpoint_value(k.delta, k.cost, lev, query_.lambda) < floor);
            }
            MidpointMove& mv = row_moves[used];
            mv.element = r * n + c;
            mv.delta = k.delta;
            mv.cost = k.cost;
            mv.step = k.step;
            used += static_cast<std::size_t>(keep);
        }
        out.insert(out.end(), row_moves.begin(), row_moves.begin() + static_cast<std::ptrdiff_t>(used));
    }
    if (error2) *error2 = sum;
    return out;
}

}  // namespace quantflow
