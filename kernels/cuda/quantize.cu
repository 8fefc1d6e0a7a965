#include "kernels/cuda/quantize.cuh"

#include <cstring>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/numerics.hpp"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;

// One CUDA block per (cell, part): parts split big cells (a whole tensor) over many blocks.
__global__ void amax_kernel(DeviceWeight w, ScaleGrid g, std::int64_t parts, std::int64_t chunk, unsigned int* amax,
                            unsigned long long* bad_row) {
    const std::int64_t cell = blockIdx.x / parts, part = blockIdx.x % parts;
    const std::int64_t cell_elems = g.block_rows * g.block_cols;
    const std::int64_t r0 = (cell / g.grid_cols) * g.block_rows, c0 = (cell % g.grid_cols) * g.block_cols;
    const std::int64_t begin = part * chunk, end = min(cell_elems, begin + chunk);
    unsigned int m = 0;
    for (std::int64_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
        const std::int64_t r = r0 + e / g.block_cols, c = c0 + e % g.block_cols;
        const unsigned int bits = f32_bits(load(w, r * w.cols + c)) & 0x7FFFFFFFu;
        if (bits >= 0x7F800000u) atomicMin(bad_row, static_cast<unsigned long long>(r));
        m = bits > m ? bits : m;
    }
    __shared__ unsigned int shared[kThreads];
    shared[threadIdx.x] = m;
    __syncthreads();
    for (int step = kThreads / 2; step > 0; step /= 2) {
        if (threadIdx.x < step) shared[threadIdx.x] = max(shared[threadIdx.x], shared[threadIdx.x + step]);
        __syncthreads();
    }
    if (threadIdx.x == 0 && shared[0] > 0) atomicMax(amax + cell, shared[0]);
}

__global__ void encode_kernel(DeviceWeight w, ScaleGrid g, const float* factor, int int_max, std::uint8_t* codes) {
    const std::int64_t n = w.rows * w.cols;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const float x = load(w, i), f = factor[cell_of(g, i / w.cols, i % w.cols)];
        if (int_max == 0) {
            codes[i] = f32_to_e4m3(clamp_abs(x * f, kFp8Max));
        } else {
            int q = static_cast<int>(round_half_even_small(x / f));
            q = q < -int_max ? -int_max : (q > int_max ? int_max : q);
            codes[i] = static_cast<std::uint8_t>(q);
        }
    }
}

// 8 threads per row, thread l summing columns l, l+8, ... in order: the CPU's lane l exactly.
__global__ void gemv_kernel(DeviceWeight w, ScaleGrid g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                            const float* x, float* y) {
    const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 8;
    const int lane = threadIdx.x & 7;
    float acc = 0.0f;
    if (row < w.rows) {
        const std::int64_t base = row * w.cols;
        for (std::int64_t c = lane; c < w.cols; c += 8) {
            const float dq = code_value(kind, codes[base + c]) * scales[cell_of(g, row, c)];
            acc += (load(w, base + c) - dq) * x[c];
        }
    }
    float v[8];
    const int first = (threadIdx.x & 31) & ~7;
    for (int j = 0; j < 8; ++j) v[j] = __shfl_sync(0xFFFFFFFFu, acc, first + j);
    if (lane == 0 && row < w.rows) y[row] = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

__global__ void decode_kernel(DeviceWeight w, float* out) {
    const std::int64_t n = w.rows * w.cols;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
        out[i] = load(w, i);
}

unsigned int grid_for(std::int64_t n) {
    const std::int64_t blocks = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned int>(blocks < 65535 * 32 ? (blocks > 0 ? blocks : 1) : 65535 * 32);
}

}  // namespace

void cell_amax(const DeviceWeight& w, const ScaleGrid& g, unsigned int* amax_bits, unsigned long long* bad_row, cudaStream_t s) {
    const std::int64_t cell_elems = g.block_rows * g.block_cols;
    const std::int64_t chunk = kThreads * 16;
    const std::int64_t parts = (cell_elems + chunk - 1) / chunk;
    amax_kernel<<<static_cast<unsigned int>(g.cells() * parts), kThreads, 0, s>>>(w, g, parts, chunk, amax_bits, bad_row);
    QF_CUDA_CHECK(cudaGetLastError());
}

void encode(const DeviceWeight& w, const ScaleGrid& g, const float* factor, int int_max, std::uint8_t* codes, cudaStream_t s) {
    encode_kernel<<<grid_for(w.rows * w.cols), kThreads, 0, s>>>(w, g, factor, int_max, codes);
    QF_CUDA_CHECK(cudaGetLastError());
}

void residual_gemv(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                   const float* x, float* y, cudaStream_t s) {
    const std::int64_t threads = w.rows * 8;
    gemv_kernel<<<static_cast<unsigned int>((threads + kThreads - 1) / kThreads), kThreads, 0, s>>>(w, g, codes, scales, kind, x, y);
    QF_CUDA_CHECK(cudaGetLastError());
}

void decode(const DeviceWeight& w, float* out, cudaStream_t s) {
    decode_kernel<<<grid_for(w.rows * w.cols), kThreads, 0, s>>>(w, out);
    QF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quantflow::cuda
