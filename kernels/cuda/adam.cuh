// kernels/cuda/adam.cuh: AdamW / RAdam learned rounding (spec 5.3) with the loop on the device, run in
// chunks of steps by the driver (RoundingWork::adam_steps).
//
// Every step is three kernels on the work's stream and no host synchronisation: a one-thread control kernel
// (the loop rule of kernels/adam_rules.hpp: loss, best iterate, stop rule, gradient direction and first
// moment in the k x k space), the fused step over the matrix (gradient and first moment expanded from k x k,
// second moment, update into the ping-pong buffer, projection of the new offsets on V per column tile), and
// the projection kernel (column tiles summed, U^T t per block of rows; the next control kernel sums the blocks).
// A chunk is enqueued whole (steps after a stop return at once) and the loop state is read back once per chunk.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/adam_rules.hpp"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/rounding.hpp"

namespace quantflow::cuda {

// Largest k the fused step takes (a row's k components live in registers); larger k runs on the host
// (CudaBackend::host_fallback).
inline constexpr std::int64_t kMaxAdamK = 16;
// Matrix columns per thread of the fused step (kernels/cuda/adam.cu tile_step_kernel), 2 or 4: a thread block
// takes kTileRows (16) rows x 256 * that many columns, each thread its columns' components of V in registers.
// qf_bench_skinny --adam-rows times both against the memory floor.
inline constexpr int kAdamColumnsPerThread = 4;

// The loop's device state for one layer: two offset buffers, the second moment, the k x k state.
class AdamDevice {
public:
    // The leading k (<= kMaxAdamK, else Error) components of `basis` (u rows x basis.k, v basis.k x cols),
    // P0 (k x k) of the current codes; scales and the grid as the codes use them. Offsets start at zero.
    AdamDevice(const LowRank& basis, std::int64_t k, const ScaleGrid& g, const float* scales, const std::vector<double>& p0,
               Optimizer optimizer, double lr, const Stream& s, int columns_per_thread = kAdamColumnsPerThread);
    // Steps t0 .. t0 + count - 1 (stopping early by the loop rule); appends the evaluated losses.
    AdamLoopState steps(int t0, int count, std::vector<double>& losses);
    // codes <- round(code_value + offsets of buffer best_buffer) (spec 5.1/5.2).
    void finish(int best_buffer, CodeKind kind, std::uint8_t* codes);

private:
    std::int64_t rows_, cols_;
    int padded_, kk_;
    ScaleGrid g_;
    const float* scales_;
    Optimizer optimizer_;
    double lr_;
    int per_thread_, tiles_;
    const Stream& s_;
    DeviceBuffer<float> u_, v_, z_, delta0_, delta1_, second_;
    DeviceBuffer<double> p0_, p_, m1_, t_part_, partial_;
    DeviceBuffer<AdamLoopState> state_;
    PinnedBuffer<AdamLoopState> mirror_;
};

}  // namespace quantflow::cuda
