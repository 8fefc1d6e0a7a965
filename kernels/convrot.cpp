#include "kernels/convrot.hpp"

namespace quantflow {

void rotate_row_groups(float* row, std::int64_t cols, std::int64_t g, double* scratch) {
    for (std::int64_t c0 = 0; c0 + g <= cols; c0 += g) {
        for (std::int64_t i = 0; i < g; ++i) scratch[i] = row[c0 + i];
        hadamard_group(scratch, g);
        for (std::int64_t i = 0; i < g; ++i) row[c0 + i] = static_cast<float>(scratch[i]);
    }
}

std::string convrot_group_problem(std::int64_t g) {
    if (!convrot_group_valid(g))
        return "ConvRot group size " + std::to_string(g) + " is not a power of 4 (4, 16, 64, 256, 1024, 4096)";
    if (g > kMaxConvrotGroup) return "ConvRot group size " + std::to_string(g) + " is larger than " + std::to_string(kMaxConvrotGroup);
    return {};
}

}  // namespace quantflow
