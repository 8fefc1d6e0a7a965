#include "kernels/refine_rules.hpp"

#include <cmath>

namespace quantflow {

RefineTables refine_tables(QuantFormat format) {
    const bool fp8 = is_fp8(format);
    const auto value = [fp8](std::uint8_t code) { return fp8 ? e4m3_to_f32(code) : static_cast<float>(static_cast<std::int8_t>(code)); };
    RefineTables t{};  // zero: no move at the grid's ends
    for (int c = 0; c < 256; ++c) {
        const auto code = static_cast<std::uint8_t>(c);
        // FP8 grid indices -126..126 (0x7F / 0xFF are NaN); INT8 -127..127 (-128 is never produced).
        const int index = fp8 ? ((code & 0x80) ? -(code & 0x7F) : (code & 0x7F)) : static_cast<std::int8_t>(code);
        const int top = fp8 ? 126 : 127;
        if (std::isnan(value(code)) || index < -top || index > top) continue;
        if (index < top) t.step_up[c] = value(grid_step(fp8, code, 1)) - value(code);
        if (index > -top) t.step_down[c] = value(grid_step(fp8, code, -1)) - value(code);
    }
    return t;
}

}  // namespace quantflow
