#include "kernels/cuda/adam.cuh"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "kernels/adam_rules.hpp"
#include "kernels/error.hpp"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/cuda/rounding.cuh"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;

// Loop step t's scalar part: p = P0 + the previous step's projection, then adam_observe on one thread over the
// block's shared copy (global memory's latency on a one-thread loop cost ~95 us a step, Nsight Compute) and
// adam_moment on every entry in parallel (the same bits as adam_control). z receives the gradient direction and
// the first moment as floats (2 k x k) for the step; losses[t - t0] the loss (the chunk's buffer). kk <= kThreads.
__global__ void control_kernel(int t, int t0, int kk, AdamLoopState* st, const double* p0, const double* moved, double* p, double* grad,
                               double* m1, float* z, double* losses) {
    if (st->stopped) return;  // every thread reads it before thread 0 may write it (after the barrier)
    __shared__ double sp[kThreads];
    __shared__ double shared_loss;
    __shared__ int go;
    const int i = threadIdx.x;
    if (i < kk) sp[i] = t > 0 ? p0[i] + moved[i] : p[i];
    __syncthreads();
    if (i == 0) {
        AdamLoopState local = *st;
        if (t > 0) local.current = local.target;
        double loss = 0;
        go = adam_observe(local, t, sp, kk, loss);
        *st = local;
        losses[t - t0] = loss;
        shared_loss = loss;
    }
    __syncthreads();
    if (i >= kk) return;
    p[i] = sp[i];
    if (!go) return;
    double g = 0, m = m1[i];
    adam_moment(sp[i], shared_loss, g, m);
    grad[i] = g;
    m1[i] = m;
    z[i] = static_cast<float>(g);
    z[kk + i] = static_cast<float>(m);
}

// One step over kRows rows x all columns (each V value read from cache serves kRows rows): the gradient and first
// moment expanded from z (the control kernel's 2 K x K) through (U grad)[r], (U m1)[r] and V, the second moment,
// the update into the ping-pong buffer, and e = offset * scale for the projection that follows (project_kernel: a
// projection fused here kept K x kRows sums per thread, which capped the occupancy at 25%, issue 10's measurement).
// u is rows x K, v is K x cols (zero-padded beyond the basis' k).
template <int K, int kRows, bool AdamW>
__global__ void __launch_bounds__(kThreads)
    step_kernel(std::int64_t rows, std::int64_t cols, ScaleGrid g, const float* scales, const float* u, const float* z, const float* v,
                AdamScalars sc, const AdamLoopState* st, float* d0, float* d1, float* second, float* e) {
    if (st->stopped) return;
    const float* src = st->current ? d1 : d0;
    float* dst = st->target ? d1 : d0;
    const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kRows;
    __shared__ float urow[kRows][2 * K];  // (U grad)[r] and (U m1)[r]
    __shared__ std::int64_t cell_row[kRows];
    for (int i = threadIdx.x; i < kRows * 2 * K; i += kThreads) {
        const int rr = i / (2 * K), j = i % (2 * K), part = j / K, col = j % K;
        const std::int64_t r = r0 + rr;
        float acc = 0.0f;
        if (r < rows)
            for (int a = 0; a < K; ++a) acc += u[r * K + a] * z[part * K * K + a * K + col];
        urow[rr][j] = acc;
    }
    if (threadIdx.x < kRows) cell_row[threadIdx.x] = ((r0 + threadIdx.x) / g.block_rows) * g.grid_cols;
    __syncthreads();
    const int nrows = static_cast<int>(rows - r0 < kRows ? rows - r0 : kRows);
    const auto block_cols = static_cast<unsigned int>(g.block_cols);
    for (std::int64_t c = threadIdx.x; c < cols; c += kThreads) {
        float vj[K];
#pragma unroll
        for (int j = 0; j < K; ++j) vj[j] = v[j * cols + c];
        const unsigned int cell_col = static_cast<unsigned int>(c) / block_cols;
        for (int rr = 0; rr < nrows; ++rr) {
            float gq = 0.0f, gm = 0.0f;
#pragma unroll
            for (int j = 0; j < K; ++j) {
                gq = __fmaf_rn(urow[rr][j], vj[j], gq);
                gm = __fmaf_rn(urow[rr][K + j], vj[j], gm);
            }
            const std::int64_t i = (r0 + rr) * cols + c;
            const float s = scales[cell_row[rr] + cell_col];
            float v2 = second[i];
            const float x = adam_update<AdamW>(gq * s, gm * s, v2, src[i], sc);
            second[i] = v2;
            dst[i] = x;
            e[i] = x * s;
        }
    }
}

// The projection t[r, j] = sum_c e[r, c] v[j, c] (rows x K): each warp takes kWarpRows rows, its lanes stride over
// the columns (float sums per lane, then a fixed shuffle tree: deterministic), the block's warps read the same V
// columns from L1. (cuBLASLt's float GEMM without workspace took 187 us on 5120 x 5120, k 16: it picked 32x32
// tiles on 160 blocks of 64 threads; Nsight Compute.)
constexpr int kWarpRows = 4;
constexpr int kProjectRows = kWarpRows * kThreads / 32;  // rows per block

template <int K>
__global__ void __launch_bounds__(kThreads)
    project_kernel(const AdamLoopState* st, std::int64_t rows, std::int64_t cols, const float* e, const float* v, float* t) {
    if (st->stopped) return;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const std::int64_t r0 = (static_cast<std::int64_t>(blockIdx.x) * (kThreads / 32) + warp) * kWarpRows;
    if (r0 >= rows) return;  // no barrier below
    const int nrows = static_cast<int>(rows - r0 < kWarpRows ? rows - r0 : kWarpRows);
    float acc[kWarpRows][K];
#pragma unroll
    for (int rr = 0; rr < kWarpRows; ++rr)
#pragma unroll
        for (int j = 0; j < K; ++j) acc[rr][j] = 0.0f;
    for (std::int64_t c = lane; c < cols; c += 32) {
        float vj[K];
#pragma unroll
        for (int j = 0; j < K; ++j) vj[j] = v[j * cols + c];
#pragma unroll
        for (int rr = 0; rr < kWarpRows; ++rr) {
            const float x = rr < nrows ? e[(r0 + rr) * cols + c] : 0.0f;
#pragma unroll
            for (int j = 0; j < K; ++j) acc[rr][j] = __fmaf_rn(x, vj[j], acc[rr][j]);
        }
    }
#pragma unroll
    for (int rr = 0; rr < kWarpRows; ++rr)
#pragma unroll
        for (int j = 0; j < K; ++j) {
            float x = acc[rr][j];
            for (int off = 16; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
            if (lane == 0 && rr < nrows) t[(r0 + rr) * K + j] = x;
        }
}

// The U^T reduction of t (rows x K, the projection's e V^T) in double: partial[slice][i][j] = sum over the rows of one
// slice of u[r, i] * t[r, j] (one block per (i, slice)), then moved = the slices summed in order. Deterministic.
constexpr int kSlices = 8;

template <int K>
__global__ void reduce_partial_kernel(const AdamLoopState* st, const float* u, const float* t, std::int64_t rows, double* partial) {
    if (st->stopped) return;
    const int i = blockIdx.x % K, slice = blockIdx.x / K;
    const std::int64_t per = (rows + kSlices - 1) / kSlices, r0 = slice * per, r1 = r0 + per < rows ? r0 + per : rows;
    double acc[K];
#pragma unroll
    for (int j = 0; j < K; ++j) acc[j] = 0.0;
    for (std::int64_t r = r0 + threadIdx.x; r < r1; r += kThreads) {
        const double ui = u[r * K + i];
#pragma unroll
        for (int j = 0; j < K; ++j) acc[j] += ui * static_cast<double>(t[r * K + j]);
    }
    for (int j = 0; j < K; ++j) {
        const double total = block_sum<kThreads>(acc[j]);
        if (threadIdx.x == 0) partial[(slice * K + i) * K + j] = total;
        __syncthreads();  // block_sum's shared array is reused by the next j
    }
}

__global__ void reduce_final_kernel(const AdamLoopState* st, const double* partial, int kk, double* moved) {
    if (st->stopped) return;
    for (int x = threadIdx.x; x < kk; x += blockDim.x) {
        double sum = 0.0;
        for (int slice = 0; slice < kSlices; ++slice) sum += partial[slice * kk + x];
        moved[x] = sum;
    }
}

template <int K, int kRows>
void launch_step(bool adamw, std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales,
                 const float* u, const float* z, const float* v, const AdamScalars& sc, const AdamLoopState* st, float* d0, float* d1,
                 float* second, float* e, cudaStream_t s) {
    const auto blocks = static_cast<unsigned int>((rows + kRows - 1) / kRows);
    if (adamw)
        step_kernel<K, kRows, true><<<blocks, kThreads, 0, s>>>(rows, cols, g, scales, u, z, v, sc, st, d0, d1, second, e);
    else
        step_kernel<K, kRows, false><<<blocks, kThreads, 0, s>>>(rows, cols, g, scales, u, z, v, sc, st, d0, d1, second, e);
}

using StepLauncher = void (*)(bool, std::int64_t, std::int64_t, const ScaleGrid&, const float*, const float*, const float*,
                              const float*, const AdamScalars&, const AdamLoopState*, float*, float*, float*, float*, cudaStream_t);

StepLauncher step_launcher(int K, int rows) {
    constexpr StepLauncher table[3][3] = {{launch_step<4, 4>, launch_step<4, 8>, launch_step<4, 16>},
                                          {launch_step<8, 4>, launch_step<8, 8>, launch_step<8, 16>},
                                          {launch_step<16, 4>, launch_step<16, 8>, launch_step<16, 16>}};
    return table[K == 4 ? 0 : K == 8 ? 1 : 2][rows == 4 ? 0 : rows == 8 ? 1 : 2];
}

// The projection of e on V, then its U^T reduction into moved (K x K).
void launch_project(int K, const AdamLoopState* st, std::int64_t rows, std::int64_t cols, const float* e, const float* v, const float* u,
                    float* t, double* partial, double* moved, cudaStream_t s) {
    const auto project_blocks = static_cast<unsigned int>((rows + kProjectRows - 1) / kProjectRows);
    if (K == 4) project_kernel<4><<<project_blocks, kThreads, 0, s>>>(st, rows, cols, e, v, t);
    else if (K == 8) project_kernel<8><<<project_blocks, kThreads, 0, s>>>(st, rows, cols, e, v, t);
    else project_kernel<16><<<project_blocks, kThreads, 0, s>>>(st, rows, cols, e, v, t);
    const auto blocks = static_cast<unsigned int>(K * kSlices);
    if (K == 4) reduce_partial_kernel<4><<<blocks, kThreads, 0, s>>>(st, u, t, rows, partial);
    else if (K == 8) reduce_partial_kernel<8><<<blocks, kThreads, 0, s>>>(st, u, t, rows, partial);
    else reduce_partial_kernel<16><<<blocks, kThreads, 0, s>>>(st, u, t, rows, partial);
    reduce_final_kernel<<<1, kThreads, 0, s>>>(st, partial, K * K, moved);
}

// The basis zero-padded to K components (K in 4, 8, 16: the kernels are compiled for those).
int padded_k(std::int64_t k) { return k <= 4 ? 4 : k <= 8 ? 8 : 16; }

}  // namespace

AdamDevice::AdamDevice(const LowRank& basis, std::int64_t k, const ScaleGrid& g, const float* scales, const std::vector<double>& p0,
                       Optimizer optimizer, double lr, const Stream& s, int rows_per_block)
    : rows_(basis.rows), cols_(basis.cols), padded_(padded_k(k)), kk_(padded_ * padded_), g_(g), scales_(scales), optimizer_(optimizer),
      lr_(lr), rows_per_block_(rows_per_block), s_(s) {
    QF_EXPECT(rows_per_block == 4 || rows_per_block == 8 || rows_per_block == 16,
              "AdamDevice: rows per block must be 4, 8 or 16, not " + std::to_string(rows_per_block));
    QF_EXPECT(k >= 1 && k <= kMaxAdamK, "AdamW/RAdam on the GPU takes k <= " + std::to_string(kMaxAdamK) + " components, not " +
                                            std::to_string(k) + " (the backend runs such layers on the host)");
    const int K = padded_;
    const std::size_t n = static_cast<std::size_t>(rows_ * cols_);
    std::vector<float> up(static_cast<std::size_t>(rows_ * K), 0.0f), vp(static_cast<std::size_t>(K * cols_), 0.0f);
    std::vector<double> p0p(static_cast<std::size_t>(kk_), 0.0);
    for (std::int64_t r = 0; r < rows_; ++r)
        for (std::int64_t j = 0; j < k; ++j) up[static_cast<std::size_t>(r * K + j)] = basis.u[static_cast<std::size_t>(r * basis.k + j)];
    std::copy_n(basis.v.begin(), k * cols_, vp.begin());  // the leading k rows, then zero rows
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j) p0p[static_cast<std::size_t>(i * K + j)] = p0[static_cast<std::size_t>(i * k + j)];

    u_ = DeviceBuffer<float>(up.size());
    v_ = DeviceBuffer<float>(vp.size());
    z_ = DeviceBuffer<float>(static_cast<std::size_t>(2 * kk_));
    delta0_ = DeviceBuffer<float>(n);
    delta1_ = DeviceBuffer<float>(n);
    second_ = DeviceBuffer<float>(n);
    for (DeviceBuffer<double>* b : {&p0_, &p_, &moved_, &grad_, &m1_}) *b = DeviceBuffer<double>(p0p.size());
    e_ = DeviceBuffer<float>(n);
    t_ = DeviceBuffer<float>(static_cast<std::size_t>(rows_ * K));
    partial_ = DeviceBuffer<double>(static_cast<std::size_t>(kSlices * kk_));
    state_ = DeviceBuffer<AdamLoopState>(1);
    mirror_ = PinnedBuffer<AdamLoopState>(1);
    const AdamLoopState start;
    upload(u_, up.data(), up.size(), s);
    upload(v_, vp.data(), vp.size(), s);
    upload(p0_, p0p.data(), p0p.size(), s);
    upload(p_, p0p.data(), p0p.size(), s);
    upload(state_, &start, 1, s);
    QF_CUDA_CHECK(cudaMemsetAsync(m1_.get(), 0, m1_.size() * sizeof(double), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(delta0_.get(), 0, n * sizeof(float), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(second_.get(), 0, n * sizeof(float), s.get()));
    s.sync();  // the host vectors above die here
}

AdamLoopState AdamDevice::steps(int t0, int count, std::vector<double>& losses) {
    if (count <= 0) return {};
    const bool adamw = optimizer_ == Optimizer::AdamW;
    const StepLauncher launch = step_launcher(padded_, rows_per_block_);
    DeviceBuffer<double> chunk_losses(static_cast<std::size_t>(count));
    for (int step = t0; step < t0 + count; ++step) {
        control_kernel<<<1, kThreads, 0, s_.get()>>>(step, t0, kk_, state_.get(), p0_.get(), moved_.get(), p_.get(), grad_.get(), m1_.get(),
                                              z_.get(), chunk_losses.get());
        const AdamScalars sc = adam_scalars(optimizer_, lr_, step + 1);
        launch(adamw, rows_, cols_, g_, scales_, u_.get(), z_.get(), v_.get(), sc, state_.get(), delta0_.get(), delta1_.get(),
               second_.get(), e_.get(), s_.get());
        launch_project(padded_, state_.get(), rows_, cols_, e_.get(), v_.get(), u_.get(), t_.get(), partial_.get(), moved_.get(), s_.get());
    }
    QF_CUDA_CHECK(cudaGetLastError());
    QF_CUDA_CHECK(cudaMemcpyAsync(mirror_.get(), state_.get(), sizeof(AdamLoopState), cudaMemcpyDeviceToHost, s_.get()));
    s_.sync();
    const AdamLoopState end = mirror_[0];
    // Steps evaluated in this chunk: up to the one that stopped the loop (its loss is written too).
    const int evaluated = std::clamp(end.iterations - t0, 0, count);
    const std::size_t before = losses.size();
    losses.resize(before + static_cast<std::size_t>(evaluated));
    if (evaluated > 0) download(losses.data() + before, chunk_losses, static_cast<std::size_t>(evaluated), s_);
    s_.sync();
    return end;
}

void AdamDevice::finish(int best_buffer, bool fp8, std::uint8_t* codes) {
    apply_offsets(rows_ * cols_, fp8, best_buffer ? delta1_.get() : delta0_.get(), codes, s_.get());
}

}  // namespace quantflow::cuda
