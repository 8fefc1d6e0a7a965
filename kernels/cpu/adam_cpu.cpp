// Learned rounding with PyTorch's AdamW / RAdam (spec 5.3) on a free offset delta of the codes, CPU side.
//
// Loss L(delta) = ||P0 + U^T (delta * D) V^T||, gradient g = (U (P/L) V) * D. One fused pass per step over
// the matrix: gradient, moments, update, and the projection of the new delta. Two things keep the pass lean:
//  - the first moment is linear in the gradients, so it lives in the k x k space (M1 = lerp of P/L) and is
//    expanded on the fly like the gradient; only the second moment is an M x N array;
//  - the best iterate is never copied: delta lives in two buffers, and a step writes into the buffer that
//    does not hold the best iterate (in place when the current one is not the best).
// The loop rule (loss, best iterate, stop, first moment) is adam_control, shared with the CUDA backend.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.hpp"
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

AdamCpu::AdamCpu(const LowRank& basis, QuantizedTensor& q, const std::vector<double>& p0, Optimizer optimizer, double lr)
    : basis_(basis), q_(q), p0_(p0), p_(p0), m1_(p0.size(), 0.0), grad_(p0.size()), optimizer_(optimizer), lr_(lr) {
    const auto elements = static_cast<std::size_t>(q.rows * q.cols);
    delta_[0].assign(elements, 0.0f);
    delta_[1].assign(elements, 0.0f);
    second_.assign(elements, 0.0f);
}

AdamLoopState AdamCpu::steps(int t0, int count, std::vector<double>& losses) {
    const std::int64_t n = basis_.cols;
    const bool adamw = optimizer_ == Optimizer::AdamW;
    for (int t = t0; t < t0 + count; ++t) {
        double loss = 0;
        const bool go = adam_control(state_, t, p_.data(), static_cast<int>(p_.size()), grad_.data(), m1_.data(), loss);
        losses.push_back(loss);
        if (!go) break;
        const AdamScalars s = adam_scalars(optimizer_, lr_, t + 1);
        const float* src = delta_[state_.current].data();
        float* dst = delta_[state_.target].data();
        const Matrix ug = times_u(basis_, grad_), um = times_u(basis_, m1_);
        const std::vector<double> moved = project_error(basis_, [&](std::int64_t r0, std::int64_t rows, float* e, float* g) {
            low_rank_rows(ug, basis_, r0, rows, g);
            std::vector<float> mrow(static_cast<std::size_t>(rows * n));
            low_rank_rows(um, basis_, r0, rows, mrow.data());
            RowScales scales(q_);
            for (std::int64_t i = 0; i < rows; ++i) {
                const std::size_t off = static_cast<std::size_t>((r0 + i) * n);
                (adamw ? adam_row<true> : adam_row<false>)(g + i * n, mrow.data() + i * n, scales.at(r0 + i), src + off, second_.data() + off,
                                                           dst + off, e + i * n, n, s);
            }
        });
        for (std::size_t i = 0; i < p_.size(); ++i) p_[i] = p0_[i] + moved[i];
        state_.current = state_.target;
    }
    return state_;
}

void AdamCpu::finish(int best_buffer, std::vector<CodeChange>* changes) {
    const float* kept = delta_[best_buffer].data();
    const std::int64_t n = basis_.cols;
    round_offsets(q_, [&](std::int64_t r0, std::int64_t rows, float* out) { std::copy_n(kept + r0 * n, rows * n, out); }, changes);
}

}  // namespace quantflow
