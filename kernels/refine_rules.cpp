#include "kernels/refine_rules.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "kernels/rounding_work.hpp"

namespace quantflow {

RefineTables refine_tables(QuantFormat format) {
    const std::uint8_t sign = grid_sign_bit(format);
    const int top = grid_top(format);
    const auto value = [format](std::uint8_t code) { return code_value(format, code); };
    RefineTables t{};  // zero: no move at the grid's ends
    for (int c = 0; c < 256; ++c) {
        const auto code = static_cast<std::uint8_t>(c);
        // Grid indices -top..top: e4m3 126 (0x7F / 0xFF are NaN), e5m2 123, E2M1 7 (codes 0..15 only), INT8 127
        // (-128 is never produced), INT4 7. Codes outside the format's byte range get no move.
        if (sign != 0 && c >= 2 * sign) continue;
        const int index = sign != 0 ? ((code & sign) ? -(code & (sign - 1)) : (code & (sign - 1))) : static_cast<std::int8_t>(code);
        if (std::isnan(value(code)) || index < -top || index > top) continue;
        if (index < top) t.step_up[c] = value(grid_step_bits(sign, code, 1)) - value(code);
        if (index > -top) t.step_down[c] = value(grid_step_bits(sign, code, -1)) - value(code);
    }
    return t;
}

void keep_best_moves(std::vector<MidpointMove>& moves, const MidpointQuery& query, std::int64_t cols) {
    if (query.keep == 0) {
        moves.clear();
        return;
    }
    if (moves.size() <= query.keep) return;
    std::vector<double> value(moves.size());
    oneapi::tbb::parallel_for(std::size_t{0}, moves.size(), [&](std::size_t i) {
        const MidpointMove& mv = moves[i];
        const auto r = static_cast<std::size_t>(mv.element / cols), c = static_cast<std::size_t>(mv.element % cols);
        const double lev = midpoint_leverage(mv.delta, query.row[r], query.col[c], query.row_p[r], query.col_p[c], query.priority_extra);
        value[i] = midpoint_value(mv.delta, mv.cost, lev, query.lambda);
    });
    std::vector<std::uint32_t> order(moves.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
    const auto keep = static_cast<std::ptrdiff_t>(query.keep);
    std::nth_element(order.begin(), order.begin() + keep, order.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return value[a] != value[b] ? value[a] > value[b] : a < b; });
    order.resize(query.keep);
    std::sort(order.begin(), order.end());  // moves are in element order, so indices are too
    std::vector<MidpointMove> kept;
    kept.reserve(order.size());
    for (const std::uint32_t i : order) kept.push_back(moves[i]);
    moves = std::move(kept);
}

}  // namespace quantflow
