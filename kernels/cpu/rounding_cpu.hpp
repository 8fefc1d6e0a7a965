// kernels/cpu/rounding_cpu.hpp: the CPU backend's learned-rounding primitives (kernels/rounding_work.hpp),
// private to kernels/cpu. The driver is kernels/learned_rounding.cpp.
//
// Notation: q0 = the codes as float values, D = dequantization scale of each element (the stored scale),
// W_hat = (q0 + delta) * D.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "kernels/adam_rules.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"
#include "kernels/rounding_work.hpp"

namespace quantflow {

// E = dequant(q) - W, projected in double: P = U^T E V^T; error2 (when given) receives ||E||^2.
std::vector<double> initial_projection(const TensorView& w, const QuantizedTensor& q, const LowRank& basis, double* error2 = nullptr);

// Rewrites q's codes from q0 + delta (delta(r0, rows, out) fills rows x cols offsets in code units), with the
// final clamp and rounding of spec 5.1/5.2.
void round_offsets(QuantizedTensor& q, const std::function<void(std::int64_t, std::int64_t, float*)>& delta);

// AdamW / RAdam's state on the CPU (adam_cpu.cpp): two offset buffers, the second moment, and the k x k loop
// state; the RoundingWork methods of the same names delegate here.
class AdamCpu {
public:
    AdamCpu(const LowRank& basis, QuantizedTensor& q, const std::vector<double>& p0, Optimizer optimizer, double lr);
    AdamLoopState steps(int t0, int count, std::vector<double>& losses);
    void finish(int best_buffer);

private:
    const LowRank& basis_;
    QuantizedTensor& q_;
    std::vector<double> p0_, p_, m1_, grad_;
    Optimizer optimizer_;
    double lr_;
    std::vector<float> delta_[2], second_;
    AdamLoopState state_;
};

std::unique_ptr<RoundingWork> make_rounding_work_cpu(std::string_view name, const TensorView& w, const LowRank& basis, QuantizedTensor& q);

}  // namespace quantflow
