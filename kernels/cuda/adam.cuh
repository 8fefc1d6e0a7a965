// kernels/cuda/adam.cuh: AdamW / RAdam learned rounding (spec 5.3) with the whole loop on the device.
//
// Every step is three kernels on the caller's stream and no host synchronisation: a one-thread control kernel
// (the loop rule of kernels/adam_rules.hpp: loss, best iterate, stop rule, gradient direction and first
// moment in the k x k space), the fused step over the matrix (gradient and first moment expanded from k x k,
// second moment, update into the ping-pong buffer, projection of the new offsets on V), and the U^T reduction.
// The host enqueues steps in chunks and only reads the loop state back once per chunk (progress, early stop).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/rounding.hpp"

namespace quantflow::cuda {

// Largest k the fused step takes (a row's k components live in registers); larger k runs on the CPU.
inline constexpr std::int64_t kMaxAdamK = 16;

// Runs the loop from P0 (k x k, the projection of the round-to-nearest codes) on the basis `used` (k <=
// kMaxAdamK) and, when an iterate beat the start, applies the best offsets to the device codes (rounded as
// spec 5.1/5.2). stats.final_loss is left to the caller.
RoundingStats adam_on_device(const LowRank& used, const ScaleGrid& g, const float* scales, bool fp8, std::uint8_t* codes,
                             const std::vector<double>& p0, const RoundingSettings& settings, const Stream& s);

}  // namespace quantflow::cuda
