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
constexpr int kWarps = kThreads / 32;

// Loop step t's scalar part: p = P0 + the previous step's projection, then adam_observe on one thread over the
// block's shared copy (global memory's latency on a one-thread loop cost ~95 us a step, Nsight Compute) and
// adam_moment on every entry in parallel (the same bits as adam_control). z receives the gradient direction and
// the first moment as floats (2 k x k) for the step; losses[t - t0] the loss (the chunk's buffer). kk <= kThreads.
__global__ void control_kernel(int t, int t0, int kk, AdamLoopState* st, const double* p0, const double* moved, double* p, double* m1,
                               float* z, double* losses) {
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
    m1[i] = m;  // the gradient direction lives on only in z
    z[i] = static_cast<float>(g);
    z[kk + i] = static_cast<float>(m);
}

// One step over kRows rows x all columns (each V value read from cache serves kRows rows). u is rows x K, v is K x cols (zero-padded beyond the basis' k),
// z the control kernel's 2 K x K. t[r, j] = sum_c offset * scale * v[j, c]: per-thread float sums, reduced
// over the warp by shuffles (fixed pattern), then over the warps in double (fixed order): deterministic.
template <int K, int kRows, bool AdamW>
__global__ void __launch_bounds__(kThreads, K * kRows >= 32 ? 1 : 2)
    step_kernel(std::int64_t rows, std::int64_t cols, ScaleGrid g, const float* scales, const float* u, const float* z, const float* v,
                AdamScalars sc, const AdamLoopState* st, float* d0, float* d1, float* second, double* t) {
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
    float acc[kRows][K];
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr)
#pragma unroll
        for (int j = 0; j < K; ++j) acc[rr][j] = 0.0f;
    for (std::int64_t c = threadIdx.x; c < cols; c += kThreads) {
        float vj[K];
#pragma unroll
        for (int j = 0; j < K; ++j) vj[j] = v[j * cols + c];
        const unsigned int cell_col = static_cast<unsigned int>(c) / block_cols;
#pragma unroll
        for (int rr = 0; rr < kRows; ++rr) {
            if (rr >= nrows) break;
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
            const float e = x * s;
#pragma unroll
            for (int j = 0; j < K; ++j) acc[rr][j] = __fmaf_rn(e, vj[j], acc[rr][j]);
        }
    }
    __shared__ double warp_sum[kWarps][kRows][K];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr)
#pragma unroll
        for (int j = 0; j < K; ++j) {
            float x = acc[rr][j];
            for (int off = 16; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
            if (lane == 0) warp_sum[warp][rr][j] = x;
        }
    __syncthreads();
    for (int i = threadIdx.x; i < nrows * K; i += kThreads) {
        const int rr = i / K, j = i % K;
        double sum = 0.0;
        for (int w = 0; w < kWarps; ++w) sum += warp_sum[w][rr][j];
        t[(r0 + rr) * K + j] = sum;
    }
}

// moved[i, j] = sum_r u[r, i] * t[r, j] (K x K), one block per entry, fixed reduction order.
__global__ void reduce_kernel(const AdamLoopState* st, const float* u, const double* t, std::int64_t rows, int k, double* moved) {
    if (st->stopped) return;
    const int i = blockIdx.x / k, j = blockIdx.x % k;
    double acc = 0.0;
    for (std::int64_t r = threadIdx.x; r < rows; r += kThreads) acc += static_cast<double>(u[r * k + i]) * t[r * k + j];
    const double total = block_sum<kThreads>(acc);
    if (threadIdx.x == 0) moved[blockIdx.x] = total;
}

template <int K, int kRows>
void launch_step(bool adamw, std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales,
                 const float* u, const float* z, const float* v, const AdamScalars& sc, const AdamLoopState* st, float* d0, float* d1,
                 float* second, double* t, cudaStream_t s) {
    const auto blocks = static_cast<unsigned int>((rows + kRows - 1) / kRows);
    if (adamw)
        step_kernel<K, kRows, true><<<blocks, kThreads, 0, s>>>(rows, cols, g, scales, u, z, v, sc, st, d0, d1, second, t);
    else
        step_kernel<K, kRows, false><<<blocks, kThreads, 0, s>>>(rows, cols, g, scales, u, z, v, sc, st, d0, d1, second, t);
}

using StepLauncher = void (*)(bool, std::int64_t, std::int64_t, const ScaleGrid&, const float*, const float*, const float*,
                              const float*, const AdamScalars&, const AdamLoopState*, float*, float*, float*, double*, cudaStream_t);

StepLauncher step_launcher(int K, int rows) {
    constexpr StepLauncher table[3][3] = {{launch_step<4, 1>, launch_step<4, 2>, launch_step<4, 4>},
                                          {launch_step<8, 1>, launch_step<8, 2>, launch_step<8, 4>},
                                          {launch_step<16, 1>, launch_step<16, 2>, launch_step<16, 4>}};
    return table[K == 4 ? 0 : K == 8 ? 1 : 2][rows == 1 ? 0 : rows == 2 ? 1 : 2];
}

// The basis zero-padded to K components (K in 4, 8, 16: the kernels are compiled for those).
int padded_k(std::int64_t k) { return k <= 4 ? 4 : k <= 8 ? 8 : 16; }

}  // namespace

AdamDevice::AdamDevice(const LowRank& basis, std::int64_t k, const ScaleGrid& g, const float* scales, const std::vector<double>& p0,
                       Optimizer optimizer, double lr, const Stream& s, int rows_per_block)
    : rows_(basis.rows), cols_(basis.cols), padded_(padded_k(k)), kk_(padded_ * padded_), g_(g), scales_(scales), optimizer_(optimizer),
      lr_(lr), rows_per_block_(rows_per_block), s_(s) {
    QF_EXPECT(rows_per_block == 1 || rows_per_block == 2 || rows_per_block == 4,
              "AdamDevice: rows per block must be 1, 2 or 4, not " + std::to_string(rows_per_block));
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

    u_ = DeviceBuffer<float>(up.size(), s.get());
    v_ = DeviceBuffer<float>(vp.size(), s.get());
    z_ = DeviceBuffer<float>(static_cast<std::size_t>(2 * kk_), s.get());
    delta0_ = DeviceBuffer<float>(n, s.get());
    delta1_ = DeviceBuffer<float>(n, s.get());
    second_ = DeviceBuffer<float>(n, s.get());
    for (DeviceBuffer<double>* b : {&p0_, &p_, &moved_, &m1_}) *b = DeviceBuffer<double>(p0p.size(), s.get());
    t_ = DeviceBuffer<double>(static_cast<std::size_t>(rows_ * K), s.get());
    state_ = DeviceBuffer<AdamLoopState>(1, s.get());
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
    DeviceBuffer<double> chunk_losses(static_cast<std::size_t>(count), s_.get());
    for (int step = t0; step < t0 + count; ++step) {
        control_kernel<<<1, kThreads, 0, s_.get()>>>(step, t0, kk_, state_.get(), p0_.get(), moved_.get(), p_.get(), m1_.get(),
                                              z_.get(), chunk_losses.get());
        const AdamScalars sc = adam_scalars(optimizer_, lr_, step + 1);
        launch(adamw, rows_, cols_, g_, scales_, u_.get(), z_.get(), v_.get(), sc, state_.get(), delta0_.get(), delta1_.get(),
               second_.get(), t_.get(), s_.get());
        reduce_kernel<<<static_cast<unsigned int>(kk_), kThreads, 0, s_.get()>>>(state_.get(), u_.get(), t_.get(), rows_, padded_,
                                                                                 moved_.get());
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
