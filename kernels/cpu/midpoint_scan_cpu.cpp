// The CPU pass of the rounding-aware finish (rounding_cpu.hpp, MidpointScanCpu): each row's errors and filter over
// every element, then the move rule and the floor over the ~10% of columns the filter keeps, compacted first.
// Every loop over the elements is branch-free: a branch on e == 0 and another on the floor test were taken at
// random and mispredicted (perf: the pass was 12% + 6.7% of a 2-core default run, see the commit).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/numerics.hpp"
#include "kernels/vector_clones.hpp"

namespace quantflow {
namespace {

// One row's errors: e = value * scale - w for every element, summed squared (returned, in 4 fixed lanes); e is
// kept only where the element may have an admissible move (|e| >= floor_share of its step towards W), else set
// to 0. The codes' records are copied first, in a loop of their own: GCC's generic tuning uses no gathers, so a
// loop that reads a table by code stays scalar, and only the loops after it vectorise (measured: the function went
// from 6.7% to 4.6% of a 2-core default run).
QF_VECTOR_CLONES double midpoint_errors(const CodeRecord* table, const std::uint8_t* codes, const float* d, const float* w, float* e,
                                        CodeRecord* rec, std::int64_t n, float floor_share) {
    for (std::int64_t c = 0; c < n; ++c) rec[c] = table[codes[c]];
    for (std::int64_t c = 0; c < n; ++c) e[c] = rec[c].value * d[c] - w[c];
    const double error2 = sum_of_squares(e, n);
    // The neighbour towards W picked by the error's sign bit as a mask, the filter as another: the sign is a coin
    // flip, so a branch on it would mispredict (measured: the pass took 2x as long).
    for (std::int64_t c = 0; c < n; ++c) {
        const std::uint32_t xb = f32_bits(e[c]);
        const std::uint32_t negative = 0u - (xb >> 31);
        const float step = bits_f32((f32_bits(rec[c].up) & negative) | (f32_bits(rec[c].down) & ~negative)) * d[c];
        const std::uint32_t keep = 0u - static_cast<std::uint32_t>(bits_f32(xb & 0x7FFFFFFFu) >= floor_share * step);
        e[c] = bits_f32(xb & keep);
    }
    return error2;
}

// The columns whose e is not 0 (+0 or -0), in order; returns their count. Store and advance: every column is
// written, the count moves past the kept ones only.
std::int64_t nonzero_columns(const float* e, std::int64_t n, std::uint32_t* cols) {
    std::int64_t count = 0;
    for (std::int64_t c = 0; c < n; ++c) {
        cols[count] = static_cast<std::uint32_t>(c);
        count += static_cast<std::int64_t>((f32_bits(e[c]) << 1) != 0);
    }
    return count;
}

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
}

std::vector<MidpointMove> MidpointScanCpu::band(std::int64_t r0, std::int64_t rows, double floor, double& error2) const {
    return floor > 0 ? band_moves<true>(r0, rows, floor, error2) : band_moves<false>(r0, rows, floor, error2);
}

template <bool kFloor>
std::vector<MidpointMove> MidpointScanCpu::band_moves(std::int64_t r0, std::int64_t rows, double floor, double& error2) const {
    const float cost_share = query_.cost_share;
    const float floor_share = (1 - cost_share) / 2 - 0.01f;
    const std::int64_t n = q_.cols;
    std::vector<float> wrow(static_cast<std::size_t>(n)), d(static_cast<std::size_t>(n)), e(static_cast<std::size_t>(n));
    std::vector<CodeRecord> rec(static_cast<std::size_t>(n));
    std::vector<std::uint32_t> cols(static_cast<std::size_t>(n));
    // A row's candidates are each written to the next free slot of `row_moves` and kept by advancing past it;
    // the kept ones are then appended to `out`, which so holds no more than the band's moves.
    std::vector<MidpointMove> row_moves(static_cast<std::size_t>(n)), out;
    out.reserve(static_cast<std::size_t>(rows * n / (kFloor ? 256 : 16)));
    error2 = 0;
    for (std::int64_t r = r0; r < r0 + rows; ++r) {
        decode_row_cpu(w_, r, 0, n, wrow.data());
        row_scales(q_, r, d.data());
        const std::uint8_t* codes = q_.codes.data() + r * n;
        error2 += midpoint_errors(records_.data(), codes, d.data(), wrow.data(), e.data(), rec.data(), n, floor_share);
        // e now holds the errors of the elements that may qualify (a superset of cost <= cost_share delta^2, i.e.
        // |e| >= (1 - cost_share) / 2 |delta|) and 0 elsewhere.
        const std::int64_t count = nonzero_columns(e.data(), n, cols.data());
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
    return out;
}

}  // namespace quantflow
