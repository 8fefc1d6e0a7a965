#include "kernels/cuda/adam.cuh"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "kernels/adam_rules.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/cuda/rounding.cuh"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunkSteps = 25;
constexpr int kDefaultRows = 1;  // measured on an H100 (tools/bench_gpu.py --adam-rows 1,2,4): 14.6 s vs 19.0 / 18.8 s  // steps enqueued between two reads of the loop state

// Loop step t's scalar part (one thread): p = P0 + the previous step's projection, then adam_control.
// z receives the gradient direction and the first moment as floats (2 k x k) for the fused step.
__global__ void control_kernel(int t, int kk, AdamLoopState* st, const double* p0, const double* moved, double* p, double* grad,
                               double* m1, float* z, double* losses) {
    if (st->stopped) return;
    if (t > 0) {
        for (int i = 0; i < kk; ++i) p[i] = p0[i] + moved[i];
        st->current = st->target;
    }
    double loss = 0;
    const bool go = adam_control(*st, t, p, kk, grad, m1, loss);
    losses[t] = loss;
    if (!go) return;
    for (int i = 0; i < kk; ++i) {
        z[i] = static_cast<float>(grad[i]);
        z[kk + i] = static_cast<float>(m1[i]);
    }
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
    __shared__ double sum[kThreads];
    sum[threadIdx.x] = acc;
    __syncthreads();
    for (int step = kThreads / 2; step > 0; step /= 2) {
        if (threadIdx.x < step) sum[threadIdx.x] += sum[threadIdx.x + step];
        __syncthreads();
    }
    if (threadIdx.x == 0) moved[blockIdx.x] = sum[0];
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

// Rows per block: QF_ADAM_ROWS (1, 2 or 4) picks it for the benchmark that chose the default.
int rows_per_block() {
    const char* env = std::getenv("QF_ADAM_ROWS");
    const int r = env ? std::atoi(env) : kDefaultRows;
    return r == 1 || r == 2 || r == 4 ? r : kDefaultRows;
}

StepLauncher step_launcher(int K, int rows) {
    constexpr StepLauncher table[3][3] = {{launch_step<4, 1>, launch_step<4, 2>, launch_step<4, 4>},
                                          {launch_step<8, 1>, launch_step<8, 2>, launch_step<8, 4>},
                                          {launch_step<16, 1>, launch_step<16, 2>, launch_step<16, 4>}};
    return table[K == 4 ? 0 : K == 8 ? 1 : 2][rows == 1 ? 0 : rows == 2 ? 1 : 2];
}

// The basis zero-padded to K components (K in 4, 8, 16: the kernels are compiled for those).
int padded_k(std::int64_t k) { return k <= 4 ? 4 : k <= 8 ? 8 : 16; }

}  // namespace

RoundingStats adam_on_device(const LowRank& used, const ScaleGrid& g, const float* scales, bool fp8, std::uint8_t* codes,
                             const std::vector<double>& p0, const RoundingSettings& settings, const Stream& s) {
    const std::int64_t rows = used.rows, cols = used.cols, k = used.k;
    const int K = padded_k(k), kk = K * K;
    const std::size_t n = static_cast<std::size_t>(rows * cols);
    std::vector<float> up(static_cast<std::size_t>(rows * K), 0.0f), vp(static_cast<std::size_t>(K * cols), 0.0f);
    std::vector<double> p0p(static_cast<std::size_t>(kk), 0.0);
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < k; ++j) up[static_cast<std::size_t>(r * K + j)] = used.u[static_cast<std::size_t>(r * k + j)];
    std::copy(used.v.begin(), used.v.end(), vp.begin());  // k x cols, then zero rows
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j) p0p[static_cast<std::size_t>(i * K + j)] = p0[static_cast<std::size_t>(i * k + j)];

    const int steps = std::max(settings.num_iter, 0);
    DeviceBuffer<float> du(up.size()), dv(vp.size()), z(static_cast<std::size_t>(2 * kk));
    DeviceBuffer<float> delta0(n), delta1(n), second(n);
    DeviceBuffer<double> dp0(p0p.size()), p(p0p.size()), moved(p0p.size()), grad(p0p.size()), m1(p0p.size());
    DeviceBuffer<double> t(static_cast<std::size_t>(rows * K)), losses(static_cast<std::size_t>(std::max(steps, 1)));
    DeviceBuffer<AdamLoopState> state(1);
    PinnedBuffer<AdamLoopState> mirror(2);
    const AdamLoopState start;
    upload(du, up.data(), up.size(), s);
    upload(dv, vp.data(), vp.size(), s);
    upload(dp0, p0p.data(), p0p.size(), s);
    upload(p, p0p.data(), p0p.size(), s);
    upload(state, &start, 1, s);
    QF_CUDA_CHECK(cudaMemsetAsync(m1.get(), 0, m1.size() * sizeof(double), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(delta0.get(), 0, n * sizeof(float), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(second.get(), 0, n * sizeof(float), s.get()));

    const bool adamw = settings.optimizer == Optimizer::AdamW;
    const StepLauncher launch = step_launcher(K, rows_per_block());
    const Event done[2];
    for (int t0 = 0, chunk = 0; t0 < steps; t0 += kChunkSteps, ++chunk) {
        for (int step = t0; step < std::min(steps, t0 + kChunkSteps); ++step) {
            control_kernel<<<1, 1, 0, s.get()>>>(step, kk, state.get(), dp0.get(), moved.get(), p.get(), grad.get(), m1.get(), z.get(),
                                                 losses.get());
            const AdamScalars sc = adam_scalars(settings.optimizer, settings.lr, step + 1);
            launch(adamw, rows, cols, g, scales, du.get(), z.get(), dv.get(), sc, state.get(), delta0.get(), delta1.get(), second.get(),
                   t.get(), s.get());
            reduce_kernel<<<static_cast<unsigned int>(kk), kThreads, 0, s.get()>>>(state.get(), du.get(), t.get(), rows, K, moved.get());
        }
        QF_CUDA_CHECK(cudaGetLastError());
        // Read the state of the chunk before this one while this one runs: the GPU never waits for the host.
        QF_CUDA_CHECK(cudaMemcpyAsync(&mirror[chunk % 2], state.get(), sizeof(AdamLoopState), cudaMemcpyDeviceToHost, s.get()));
        done[chunk % 2].record(s.get());
        if (chunk > 0) {
            done[(chunk - 1) % 2].sync();
            const AdamLoopState& seen = mirror[(chunk - 1) % 2];
            if (settings.on_progress) settings.on_progress("optimize", seen.iterations, settings.num_iter);
            if (seen.stopped) break;
        }
    }
    AdamLoopState end;
    download(&end, state, 1, s);
    s.sync();
    RoundingStats stats;
    stats.k = k;
    stats.initial_loss = frobenius(p0);
    stats.iterations = end.iterations;
    stats.best_iteration = end.best_iteration;
    stats.best_loss = end.best_loss;
    if (settings.on_progress) settings.on_progress("optimize", end.iterations, settings.num_iter);
    stats.losses.resize(static_cast<std::size_t>(end.iterations));
    if (end.iterations > 0) download(stats.losses.data(), losses, stats.losses.size(), s);
    if (end.best_iteration > 0) apply_offsets(static_cast<std::int64_t>(n), fp8, end.best_buffer ? delta1.get() : delta0.get(), codes, s.get());
    s.sync();
    return stats;
}

}  // namespace quantflow::cuda
