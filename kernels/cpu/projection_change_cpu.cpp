// What re-rounding the codes did to the projection (rounding_cpu.hpp, projection_change): computed from the
// changed elements alone. `original`'s rank-k correction moves each element by about L / sqrt(M N) in code
// units, so re-rounding changes about one code in a thousand; a second full projection pass cost 7% of a
// 2-core default run (perf) to find those few.
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"

namespace quantflow {

ProjectionChange projection_change(const TensorView& w, const QuantizedTensor& q, const LowRank& basis, std::span<const CodeChange> changes) {
    const std::int64_t n = q.cols, k = basis.k, kk = k * k, band = band_rows(n), bands = (q.rows + band - 1) / band;
    const std::int64_t block_rows = scale_block_rows(q.spec, q.rows), block_cols = scale_block_cols(q.spec, q.cols);
    const std::int64_t grid_cols = scale_cols(q.spec, q.cols);
    const auto values = code_values(q.spec.format);
    // Per band of rows (fixed, whatever the threads): its k x k change and its ||E||^2 change, summed in band order.
    std::vector<double> dp(static_cast<std::size_t>(bands * kk), 0.0), de2(static_cast<std::size_t>(bands), 0.0);
    const auto first_at = [&](std::int64_t row) {
        return std::lower_bound(changes.begin(), changes.end(), row * n, [](const CodeChange& c, std::int64_t e) { return c.element < e; });
    };
    oneapi::tbb::parallel_for(std::int64_t{0}, bands, [&](std::int64_t b) {
        const auto begin = first_at(b * band), end = first_at(std::min(q.rows, (b + 1) * band));
        std::vector<double> t(static_cast<std::size_t>(k));
        double* pb = dp.data() + b * kk;
        for (auto it = begin; it != end;) {
            const std::int64_t r = it->element / n;
            std::fill(t.begin(), t.end(), 0.0);
            for (; it != end && it->element / n == r; ++it) {  // row r's changes: t = sum of its E changes times V^T
                const std::int64_t c = it->element % n;
                float wc = 0;
                decode_row_cpu(w, r, c, 1, &wc);
                // The stored scale as row_scales forms it, and E as initial_projection forms it.
                const double d = q.global_scale * q.scales[static_cast<std::size_t>((r / block_rows) * grid_cols + c / block_cols)];
                const double e0 = static_cast<double>(values[it->before]) * d - wc, e1 = static_cast<double>(values[it->after]) * d - wc;
                de2[static_cast<std::size_t>(b)] += e1 * e1 - e0 * e0;
                for (std::int64_t j = 0; j < k; ++j) t[static_cast<std::size_t>(j)] += (e1 - e0) * basis.v[static_cast<std::size_t>(j * n + c)];
            }
            const float* u = basis.u.data() + r * k;
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j) pb[i * k + j] += static_cast<double>(u[i]) * t[static_cast<std::size_t>(j)];
        }
    });
    ProjectionChange out{std::vector<double>(static_cast<std::size_t>(kk), 0.0), 0.0};
    for (std::int64_t b = 0; b < bands; ++b) {
        for (std::int64_t i = 0; i < kk; ++i) out.dp[static_cast<std::size_t>(i)] += dp[static_cast<std::size_t>(b * kk + i)];
        out.derror2 += de2[static_cast<std::size_t>(b)];
    }
    return out;
}

}  // namespace quantflow
