// kernels/cuda/elements.cuh: per-element reads shared by the kernels (the CPU's decode_row_cpu,
// code_values and row_scales, on the device), and the block-wide sum they reduce with.
#pragma once

#include <cstdint>

#include "kernels/cuda/quantize.cuh"
#include "kernels/numerics.hpp"

namespace quantflow::cuda {

__device__ __forceinline__ float load(const DeviceWeight& w, std::int64_t i) {
    switch (w.dtype) {
        case DType::BF16: return bf16_to_f32(static_cast<const std::uint16_t*>(w.data)[i]);
        case DType::F16: return f16_to_f32(static_cast<const std::uint16_t*>(w.data)[i]);
        default: return static_cast<const float*>(w.data)[i];
    }
}

__device__ __forceinline__ float code_value(CodeKind kind, std::uint8_t code) {
    switch (kind) {
        case CodeKind::E4m3: return e4m3_to_f32(code);
        case CodeKind::E5m2: return e5m2_to_f32(code);
        case CodeKind::E2m1: return e2m1_to_f32(code);
        default: return static_cast<float>(static_cast<std::int8_t>(code));
    }
}

// The grid's code nearest x after the clamp of spec 5.1/5.2 (the CPU's round_offsets).
__device__ __forceinline__ std::uint8_t round_code(CodeKind kind, float x) {
    switch (kind) {
        case CodeKind::E4m3: return f32_to_e4m3(clamp_abs(x, kFp8Max));
        case CodeKind::E5m2: return f32_to_e5m2(clamp_abs(x, kE5m2Max));
        case CodeKind::E2m1: return f32_to_e2m1(clamp_abs(x, kE2m1Max));
        default: return static_cast<std::uint8_t>(int8_round(x));
    }
}

// The sign bit of grid_step_bits: sign-magnitude for the float grids, two's complement for int8.
__device__ __forceinline__ std::uint8_t grid_sign_bit(CodeKind kind) {
    return kind == CodeKind::E2m1 ? 0x08 : kind == CodeKind::Int8 ? 0x00 : 0x80;
}

__device__ __forceinline__ std::int64_t cell_of(const ScaleGrid& g, std::int64_t r, std::int64_t c) {
    return (r / g.block_rows) * g.grid_cols + c / g.block_cols;
}

// The sum of v over a block of Threads threads in a fixed tree (deterministic); every thread gets it.
template <int Threads>
__device__ __forceinline__ double block_sum(double v) {
    __shared__ double sum[Threads];
    sum[threadIdx.x] = v;
    __syncthreads();
    for (int step = Threads / 2; step > 0; step /= 2) {
        if (threadIdx.x < step) sum[threadIdx.x] += sum[threadIdx.x + step];
        __syncthreads();
    }
    return sum[0];
}

}  // namespace quantflow::cuda
