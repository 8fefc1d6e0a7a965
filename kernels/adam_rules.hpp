// kernels/adam_rules.hpp: one element of one PyTorch AdamW / RAdam step (spec 5.3), shared by the CPU loop
// and the CUDA kernel. With g the gradient and m the first moment (both already times the element's scale):
//   v = beta2 v + (1 - beta2) g^2
//   AdamW: x = x * decay - step_size * m / (sqrt(v) / bc2_sqrt + eps)
//   RAdam: x = x - step_size * m * (rect > 0 ? rect * bc2_sqrt / (sqrt(v) + eps) : 1)
#pragma once

#include <cmath>

#include "kernels/numerics.hpp"
#include "kernels/rounding.hpp"

namespace quantflow {

struct AdamScalars {
    float b2, one_minus_b2, decay, step_size, bc2_sqrt, eps, rect;
};

inline AdamScalars adam_scalars(Optimizer optimizer, double lr, int t) {
    const AdamStep a = adam_step_scalars(optimizer, lr, t);
    return {static_cast<float>(AdamConstants::beta2), static_cast<float>(1.0 - AdamConstants::beta2), static_cast<float>(a.decay),
            static_cast<float>(a.step_size), static_cast<float>(a.bc2_sqrt), static_cast<float>(AdamConstants::eps),
            static_cast<float>(a.rect)};
}

// The loop's state between steps (shared by the CPU loop and the CUDA backend's device-side loop).
struct AdamLoopState {
    double best_loss = INFINITY;
    int iterations = 0;      // losses evaluated
    int best_iteration = 0;  // the iterate whose loss was best
    int current = 0;         // buffer holding the current iterate
    int best_buffer = 0;     // buffer holding the best iterate
    int target = 0;          // buffer the next step writes (never the best one unless it is also the current)
    int stopped = 0;         // the loss reached 1e-8: no more steps
};

// The scalar part of loop step t over the k x k projection p (kk entries): the loss ||p||, the best iterate,
// the stop rule. Returns false when the loop stops; loss receives ||p|| either way; then (when true) every entry
// gets adam_moment, and the step writes the buffer st.target.
QF_HOST_DEVICE bool adam_observe(AdamLoopState& st, int t, const double* p, int kk, double& loss) {
    double s = 0;
    for (int i = 0; i < kk; ++i) s += p[i] * p[i];
    loss = sqrt(s);
    st.iterations = t + 1;
    if (loss < st.best_loss) {
        st.best_loss = loss;
        st.best_buffer = st.current;
        st.best_iteration = t;
    }
    if (st.best_loss < 1e-8) {
        st.stopped = 1;
        return false;
    }
    st.target = st.current == st.best_buffer ? 1 - st.current : st.current;
    return true;
}

// One entry's gradient direction grad = p / L and torch's first-moment lerp m1 += (1-b1)(grad-m1) (the first
// moment is linear in the gradients, so it lives in the k x k space). Entries are independent: a device may run
// them in parallel with the same bits.
QF_HOST_DEVICE void adam_moment(double p, double loss, double& grad, double& m1) {
    const double inv = loss > 1e-20 ? loss : 1e-20;
    grad = p / inv;
    m1 += (1.0 - AdamConstants::beta1) * (grad - m1);  // torch: exp_avg.lerp_(grad, 1 - beta1)
}

// adam_observe, then adam_moment of every entry.
QF_HOST_DEVICE bool adam_control(AdamLoopState& st, int t, const double* p, int kk, double* grad, double* m1, double& loss) {
    if (!adam_observe(st, t, p, kk, loss)) return false;
    for (int i = 0; i < kk; ++i) adam_moment(p[i], loss, grad[i], m1[i]);
    return true;
}

template <bool AdamW>
QF_HOST_DEVICE float adam_update(float g, float m, float& v, float x, const AdamScalars& s) {
    const float vv = v * s.b2 + s.one_minus_b2 * (g * g);
    v = vv;
    if constexpr (AdamW) {
        return x * s.decay - s.step_size * (m / (sqrtf(vv) / s.bc2_sqrt + s.eps));
    } else {
        const float adapt = s.rect > 0.0f ? s.rect * (s.bc2_sqrt / (sqrtf(vv) + s.eps)) : 1.0f;
        return x - s.step_size * m * adapt;
    }
}

}  // namespace quantflow
