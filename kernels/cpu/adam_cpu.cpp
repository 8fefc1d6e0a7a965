// Learned rounding with PyTorch's AdamW / RAdam (spec 5.3) on a free offset delta of the codes.
//
// Loss L(delta) = ||P0 + U^T (delta * D) V^T||, gradient g = (U (P/L) V) * D. One fused pass per step over
// the matrix: gradient, moments, update, and the projection of the new delta. Two things keep the pass lean:
//  - the first moment is linear in the gradients, so it lives in the k x k space (M1 = lerp of P/L) and is
//    expanded on the fly like the gradient; only the second moment is an M x N array;
//  - the best iterate is never copied: delta lives in two buffers, and a step writes into the buffer that
//    does not hold the best iterate (in place when the current one is not the best).
// The iterate kept is the one whose loss was best (the reference keeps the step after it: spec 9).

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/adam_rules.hpp"
#include "kernels/cpu/rounding_cpu.hpp"

namespace quantflow {
namespace {


// One row of one step. g_row / m_row hold (U Q V) and (U M1 V) for the row (unscaled), d the scales; writes
// the new offsets into dst and dst * d into e (kernels/adam_rules.hpp has the element rule).
template <bool AdamW>
QF_VECTOR_CLONES void adam_row(const float* g_row, const float* m_row, const float* d, const float* src, float* v, float* dst,
                               float* e, std::int64_t n, const AdamScalars s) {
    for (std::int64_t c = 0; c < n; ++c) {
        const float x = adam_update<AdamW>(g_row[c] * d[c], m_row[c] * d[c], v[c], src[c], s);
        dst[c] = x;
        e[c] = x * d[c];
    }
}

}  // namespace

RoundingStats run_adam_loop(const std::vector<double>& p0, std::int64_t k, const RoundingSettings& settings, const AdamPass& pass,
                            int& best_buffer) {
    const auto kk = static_cast<std::size_t>(k * k);
    RoundingStats stats;
    stats.k = k;
    stats.initial_loss = frobenius(p0);
    std::vector<double> p = p0, m1(kk, 0.0), grad(kk);
    AdamLoopState st;
    for (int t = 0; t < settings.num_iter; ++t) {
        double loss = 0;
        const bool go = adam_control(st, t, p.data(), static_cast<int>(kk), grad.data(), m1.data(), loss);
        stats.losses.push_back(loss);
        if (!go) break;
        const std::vector<double> moved = pass(grad, m1, adam_scalars(settings.optimizer, settings.lr, t + 1), st.current, st.target);
        for (std::size_t i = 0; i < kk; ++i) p[i] = p0[i] + moved[i];
        st.current = st.target;
        if (settings.on_progress) settings.on_progress("optimize", t + 1, settings.num_iter);
    }
    stats.iterations = st.iterations;
    stats.best_iteration = st.best_iteration;
    stats.best_loss = st.best_loss;
    best_buffer = st.best_buffer;
    return stats;
}

RoundingStats round_adam_cpu(const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                             QuantizedTensor& q) {
    const std::int64_t n = basis.cols;
    const auto elements = static_cast<std::size_t>(q.rows * n);
    std::vector<float> delta[2] = {std::vector<float>(elements, 0.0f), std::vector<float>(elements)};
    std::vector<float> second(elements, 0.0f);
    const bool adamw = settings.optimizer == Optimizer::AdamW;
    const AdamPass pass = [&](const std::vector<double>& grad, const std::vector<double>& m1, const AdamScalars& s, int from, int to) {
        const float* src = delta[from].data();
        float* dst = delta[to].data();
        const Matrix ug = times_u(basis, grad), um = times_u(basis, m1);
        return project_error(basis, [&](std::int64_t r0, std::int64_t rows, float* e, float* g) {
            low_rank_rows(ug, basis, r0, rows, g);
            std::vector<float> mrow(static_cast<std::size_t>(rows * n)), d(static_cast<std::size_t>(n));
            low_rank_rows(um, basis, r0, rows, mrow.data());
            for (std::int64_t i = 0; i < rows; ++i) {
                row_scales(q, r0 + i, d.data());
                const std::size_t off = static_cast<std::size_t>((r0 + i) * n);
                (adamw ? adam_row<true> : adam_row<false>)(g + i * n, mrow.data() + i * n, d.data(), src + off, second.data() + off,
                                                           dst + off, e + i * n, n, s);
            }
        });
    };
    int best = 0;
    RoundingStats stats = run_adam_loop(initial_projection(w, q, basis), basis.k, settings, pass, best);
    const float* kept = delta[best].data();
    stats.final_loss = apply_offsets(w, basis, q, [&](std::int64_t r0, std::int64_t rows, float* out) {
        std::copy_n(kept + r0 * n, rows * n, out);
    });
    return stats;
}

}  // namespace quantflow
