#include "kernels/cuda/rounding.cuh"

#include <thrust/execution_policy.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/numerics.hpp"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 16;  // singular components summed per pass over a row

__device__ __forceinline__ float scale_at(const ScaleGrid& g, const float* scales, std::int64_t r, std::int64_t c) {
    return scales[cell_of(g, r, c)];
}

// One block per row; kChunk components per pass (predicated beyond k, so acc stays in registers). Each
// thread sums its columns in double, the warp combines by shuffles, the warps in order: deterministic.
__global__ void project_kernel(DeviceWeight w, ScaleGrid g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                               const float* v, int k, double* t) {
    const std::int64_t r = blockIdx.x, n = w.cols;
    const std::int64_t cell_row = (r / g.block_rows) * g.grid_cols;
    const auto block_cols = static_cast<unsigned int>(g.block_cols);
    __shared__ double warp_sum[kThreads / 32][kChunk];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int j0 = 0; j0 < k; j0 += kChunk) {
        double acc[kChunk];
#pragma unroll
        for (int j = 0; j < kChunk; ++j) acc[j] = 0.0;
        for (std::int64_t c = threadIdx.x; c < n; c += kThreads) {
            const std::int64_t i = r * n + c;
            const float sc = scales[cell_row + static_cast<unsigned int>(c) / block_cols];
            const double e = static_cast<double>(code_value(kind, codes[i])) * sc - load(w, i);
#pragma unroll
            for (int j = 0; j < kChunk; ++j)
                if (j0 + j < k) acc[j] = __fma_rn(e, static_cast<double>(v[static_cast<std::int64_t>(j0 + j) * n + c]), acc[j]);
        }
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
            double x = acc[j];
            for (int off = 16; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
            if (lane == 0) warp_sum[warp][j] = x;
        }
        __syncthreads();
        if (threadIdx.x < kChunk && j0 + static_cast<int>(threadIdx.x) < k) {
            double sum = 0.0;
            for (int x = 0; x < kThreads / 32; ++x) sum += warp_sum[x][threadIdx.x];
            t[r * k + j0 + threadIdx.x] = sum;
        }
        __syncthreads();
    }
}

__global__ void correct_kernel(DeviceWeight w, ScaleGrid g, std::uint8_t* codes, const float* scales, CodeKind kind, const float* uz,
                               const float* v, int k) {
    const std::int64_t total = w.rows * w.cols;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const std::int64_t r = i / w.cols, c = i % w.cols;
        float corr = 0.0f;
        for (int j = 0; j < k; ++j) corr += uz[r * k + j] * v[static_cast<std::int64_t>(j) * w.cols + c];
        const float s = scale_at(g, scales, r, c);
        const float delta = kind != CodeKind::Int8 ? -corr * (1.0f / s) : -corr * s;
        const float x = code_value(kind, codes[i]) + delta;
        codes[i] = round_code(kind, x);
    }
}

// One thread per element (grid-stride over a fixed grid): the element's admissible move (refine_rules.hpp,
// the CPU's rule) appended at *count, and each block's sum of e^2 in a fixed tree (deterministic).
__global__ void midpoint_kernel(DeviceWeight w, ScaleGrid g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                                RefineTables tables, float cost_share, MidpointMove* out, unsigned long long* count,
                                unsigned long long capacity, double* error2_partial) {
    const std::int64_t total = w.rows * w.cols;
    double e2 = 0;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const std::uint8_t code = codes[i];
        const float sc = scale_at(g, scales, i / w.cols, i % w.cols);
        const float e = code_value(kind, code) * sc - load(w, i);
        e2 += static_cast<double>(e) * e;
        MidpointMove mv;
        if (midpoint_move(tables, code, sc, e, cost_share, mv.delta, mv.cost, mv.step)) {
            mv.element = i;
            const unsigned long long at = atomicAdd(count, 1ULL);
            if (at < capacity) out[at] = mv;
        }
    }
    const double block_e2 = block_sum<kThreads>(e2);
    if (threadIdx.x == 0) error2_partial[blockIdx.x] = block_e2;
}

__global__ void move_kernel(const MidpointMove* moves, std::int64_t count, CodeKind kind, std::uint8_t* codes) {
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        std::uint8_t& code = codes[moves[i].element];
        code = grid_step_bits(grid_sign_bit(kind), code, moves[i].step);
    }
}

// e[r, c] = (uy[r] . v[:, c]) * scale^2 in double (the INT8 step operator's full-size product).
__global__ void scaled_low_rank_kernel(std::int64_t rows, std::int64_t cols, ScaleGrid g, const float* scales, const double* uy,
                                       const double* v, int k, double* e) {
    const std::int64_t total = rows * cols;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const std::int64_t r = i / cols, c = i % cols;
        double acc = 0.0;
        for (int j = 0; j < k; ++j) acc += uy[r * k + j] * v[static_cast<std::int64_t>(j) * cols + c];
        const double s = scale_at(g, scales, r, c);
        e[i] = acc * (s * s);
    }
}

// A move's rank value (kernels/refine_rules.hpp, the CPU's formula: --fmad=false keeps the bits equal).
__global__ void midpoint_values_kernel(const MidpointMove* moves, std::size_t count, std::int64_t cols, const double* row,
                                       const double* row_p, const double* col, const double* col_p, double extra, double lambda,
                                       double* value) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
        const MidpointMove mv = moves[i];
        const std::int64_t r = mv.element / cols, c = mv.element % cols;
        const double lev = midpoint_leverage(mv.delta, row[r], col[c], row_p[r], col_p[c], extra);
        value[i] = midpoint_value(mv.delta, mv.cost, lev, lambda);
    }
}

__global__ void gather_moves_kernel(const MidpointMove* moves, const std::uint32_t* index, std::size_t count, MidpointMove* out) {
    for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
        out[i] = moves[index[i]];
}

__global__ void sum_squares_kernel(const double* x, std::int64_t n, double* partial) {
    double acc = 0;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
        acc += x[i] * x[i];
    const double total = block_sum<kThreads>(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Orders: by value (larger first), ties by the lower element; by element.
struct ByValue {
    const double* value;
    const MidpointMove* moves;
    __device__ bool operator()(std::uint32_t a, std::uint32_t b) const {
        return value[a] != value[b] ? value[a] > value[b] : moves[a].element < moves[b].element;
    }
};
struct ByElement {
    __device__ bool operator()(const MidpointMove& a, const MidpointMove& b) const { return a.element < b.element; }
};

unsigned int grid_for(std::int64_t elements) {
    return static_cast<unsigned int>(std::max<std::int64_t>(1, std::min<std::int64_t>((elements + kThreads - 1) / kThreads, 65535LL * 32)));
}

__global__ void offsets_kernel(std::int64_t elements, CodeKind kind, const float* offsets, std::uint8_t* codes) {
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < elements;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const float x = code_value(kind, codes[i]) + offsets[i];
        codes[i] = round_code(kind, x);
    }
}

}  // namespace

void apply_offsets(std::int64_t elements, CodeKind kind, const float* offsets, std::uint8_t* codes, cudaStream_t s) {
    const std::int64_t blocks = std::min<std::int64_t>((elements + kThreads - 1) / kThreads, 65535LL * 32);
    offsets_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, s>>>(elements, kind, offsets, codes);
    QF_CUDA_CHECK(cudaGetLastError());
}

unsigned int midpoint_blocks(std::int64_t elements) {
    return static_cast<unsigned int>(std::max<std::int64_t>(1, std::min<std::int64_t>((elements + kThreads - 1) / kThreads, 4096)));
}

unsigned int find_midpoint_moves(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                                 const RefineTables& tables, float cost_share, MidpointMove* out, unsigned long long* count,
                                 unsigned long long capacity, double* error2_partial, cudaStream_t s) {
    const unsigned int blocks = midpoint_blocks(w.rows * w.cols);
    midpoint_kernel<<<blocks, kThreads, 0, s>>>(w, g, codes, scales, kind, tables, cost_share, out, count, capacity, error2_partial);
    QF_CUDA_CHECK(cudaGetLastError());
    return blocks;
}

std::size_t keep_best_moves(const MidpointMove* moves, std::size_t count, std::size_t keep, std::int64_t cols, const double* row,
                            const double* row_p, const double* col, const double* col_p, double priority_extra, double lambda,
                            MidpointMove* kept, cudaStream_t s) {
    const auto policy = thrust::cuda::par.on(s);
    if (count <= keep) {
        QF_CUDA_CHECK(cudaMemcpyAsync(kept, moves, count * sizeof(MidpointMove), cudaMemcpyDeviceToDevice, s));
        thrust::sort(policy, kept, kept + count, ByElement{});
        QF_CUDA_CHECK(cudaGetLastError());
        return count;
    }
    DeviceBuffer<double> value(count);
    DeviceBuffer<std::uint32_t> index(count);
    midpoint_values_kernel<<<grid_for(static_cast<std::int64_t>(count)), kThreads, 0, s>>>(moves, count, cols, row, row_p, col, col_p,
                                                                                           priority_extra, lambda, value.get());
    QF_CUDA_CHECK(cudaGetLastError());
    thrust::sequence(policy, index.get(), index.get() + count);
    thrust::sort(policy, index.get(), index.get() + count, ByValue{value.get(), moves});
    gather_moves_kernel<<<grid_for(static_cast<std::int64_t>(keep)), kThreads, 0, s>>>(moves, index.get(), keep, kept);
    QF_CUDA_CHECK(cudaGetLastError());
    thrust::sort(policy, kept, kept + keep, ByElement{});
    QF_CUDA_CHECK(cudaGetLastError());
    QF_CUDA_CHECK(cudaStreamSynchronize(s));  // value and index die here
    return keep;
}

double sum_squares(const double* x, std::int64_t n, cudaStream_t s) {
    const unsigned int blocks = midpoint_blocks(n);
    DeviceBuffer<double> partial(blocks);
    sum_squares_kernel<<<blocks, kThreads, 0, s>>>(x, n, partial.get());
    QF_CUDA_CHECK(cudaGetLastError());
    std::vector<double> sums(blocks);
    QF_CUDA_CHECK(cudaMemcpyAsync(sums.data(), partial.get(), blocks * sizeof(double), cudaMemcpyDeviceToHost, s));
    QF_CUDA_CHECK(cudaStreamSynchronize(s));
    double total = 0;
    for (const double v : sums) total += v;
    return total;
}

void move_codes(const MidpointMove* moves, std::int64_t count, CodeKind kind, std::uint8_t* codes, cudaStream_t s) {
    if (count == 0) return;
    move_kernel<<<grid_for(count), kThreads, 0, s>>>(moves, count, kind, codes);
    QF_CUDA_CHECK(cudaGetLastError());
}

void scaled_low_rank(std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales, const double* uy, const double* v,
                     int k, double* e, cudaStream_t s) {
    scaled_low_rank_kernel<<<grid_for(rows * cols), kThreads, 0, s>>>(rows, cols, g, scales, uy, v, k, e);
    QF_CUDA_CHECK(cudaGetLastError());
}

void project_rows(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                  const float* v, int k, double* t, cudaStream_t s) {
    project_kernel<<<static_cast<unsigned int>(w.rows), kThreads, 0, s>>>(w, g, codes, scales, kind, v, k, t);
    QF_CUDA_CHECK(cudaGetLastError());
}

void correct_codes(const DeviceWeight& w, const ScaleGrid& g, std::uint8_t* codes, const float* scales, CodeKind kind,
                   const float* uz, const float* v, int k, cudaStream_t s) {
    const std::int64_t total = w.rows * w.cols;
    const std::int64_t blocks = std::min<std::int64_t>((total + kThreads - 1) / kThreads, 65535LL * 32);
    correct_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, s>>>(w, g, codes, scales, kind, uz, v, k);
    QF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quantflow::cuda
