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
