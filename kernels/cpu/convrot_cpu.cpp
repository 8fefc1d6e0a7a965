// kernels/cpu/convrot_cpu.cpp: ConvRot's group rotation of a whole weight on the host.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include "kernels/convrot.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"

namespace quantflow {

std::vector<float> rotate_groups_cpu(const TensorView& w, std::int64_t g) {
    QF_EXPECT(convrot_group_valid(g) && g <= kMaxConvrotGroup && w.cols % g == 0,
              "rotate_groups: group size " + std::to_string(g) + " does not divide " + std::to_string(w.cols) + " columns");
    std::vector<float> out(static_cast<std::size_t>(w.rows * w.cols));
    oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(0, w.rows, 8), [&](const auto& range) {
        std::vector<double> scratch(static_cast<std::size_t>(g));
        for (std::int64_t r = range.begin(); r != range.end(); ++r) {
            float* row = out.data() + r * w.cols;
            decode_row_cpu(w, r, 0, w.cols, row);
            rotate_row_groups(row, w.cols, g, scratch.data());
        }
    });
    return out;
}

}  // namespace quantflow
