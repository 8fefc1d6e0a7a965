#include "kernels/refine_rules.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <utility>

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
    // (value, index) side by side for the selection, which then marks the kept ones: they come out in element
    // order without a sort (the order of indices cost as much as the selection, perf).
    std::vector<std::pair<double, std::uint32_t>> ranked(moves.size());
    oneapi::tbb::parallel_for(std::size_t{0}, moves.size(), [&](std::size_t i) {
        const MidpointMove& mv = moves[i];
        const auto r = static_cast<std::size_t>(mv.element / cols), c = static_cast<std::size_t>(mv.element % cols);
        const double lev = midpoint_leverage(mv.delta, query.row[r], query.col[c], query.row_p[r], query.col_p[c], query.priority_extra);
        ranked[i] = {midpoint_value(mv.delta, mv.cost, lev, query.lambda), static_cast<std::uint32_t>(i)};
    });
    const auto keep = static_cast<std::ptrdiff_t>(query.keep);
    std::nth_element(ranked.begin(), ranked.begin() + keep, ranked.end(),
                     [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    std::vector<char> kept_flag(moves.size(), 0);
    for (std::ptrdiff_t i = 0; i < keep; ++i) kept_flag[ranked[static_cast<std::size_t>(i)].second] = 1;
    std::vector<MidpointMove> kept;
    kept.reserve(query.keep);
    for (std::size_t i = 0; i < moves.size(); ++i)
        if (kept_flag[i]) kept.push_back(moves[i]);
    moves = std::move(kept);
}

}  // namespace quantflow
