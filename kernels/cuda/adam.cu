#include "kernels/cuda/adam.cuh"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "kernels/adam_rules.hpp"
#include "kernels/error.hpp"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/rounding.cuh"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Loop step t's scalar part: p = P0 + the previous step's projection, then adam_observe on one thread over the
// block's shared copy (global memory's latency on a one-thread loop cost ~95 us a step, Nsight Compute) and
// adam_moment on every entry in parallel (the same bits as adam_control). z receives the gradient direction and
// the first moment as floats (2 k x k) for the step; losses[t - t0] the loss (the chunk's buffer). kk <= kThreads.
__global__ void control_kernel(int t, int t0, int kk, AdamLoopState* st, const double* p0, const double* partial, int parts, double* p,
                               double* m1, float* z, double* losses) {
    if (st->stopped) return;  // every thread reads it before thread 0 may write it (after the barrier)
    __shared__ double sp[kThreads];
    __shared__ double shared_loss;
    __shared__ int go;
    const int i = threadIdx.x;
    if (i < kk) {
        double moved = 0.0;  // the previous step's U^T t, summed over project_kernel's blocks in order
        for (int b = 0; b < parts; ++b) moved += partial[b * kk + i];
        sp[i] = t > 0 ? p0[i] + moved : p[i];
    }
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

// Halving exchanges over the lane bits O, O / 2, ... of the N values a[0..N): the lane whose bit O is set keeps
// the upper half (summed with its partner's copy), the other the lower; j gathers the choices, high bit first.
template <int N, int O>
__device__ __forceinline__ void halve_lanes(float* a, int lane, int& j) {
    if constexpr (N > 1) {
        const bool high = (lane & O) != 0;
#pragma unroll
        for (int i = 0; i < N / 2; ++i) {
            const float send = high ? a[i] : a[N / 2 + i];
            const float keep = high ? a[N / 2 + i] : a[i];
            a[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
        }
        j = 2 * j + (high ? 1 : 0);
        halve_lanes<N / 2, O / 2>(a, lane, j);
    }
}

// The K sums a[0..K) of a warp's 32 lanes, transposed: halving exchanges (K - 1 shuffles for K values instead of
// 5 K), then plain exchanges over the remaining lane bits. Returns the sum of component j (set here); every lane
// holding the same j holds the same bits. Fixed pattern: deterministic.
template <int K>
__device__ __forceinline__ float warp_transpose_sum(float (&a)[K], int lane, int& j) {
    j = 0;
    halve_lanes<K, 16>(a, lane, j);
    float x = a[0];
#pragma unroll
    for (int o = 16 / K; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Matrix rows per block of the tiled step: 16 rather than 32 leaves smaller last waves (5120 x 5120 on 132 SMs:
// 0.276 -> 0.258 ms per step, qf_bench_skinny --adam-rows; 13824 x 5120 unchanged).
constexpr int kTileRows = 16;

// One step over a tile of kTileRows rows x kThreads * P columns: each thread keeps its P columns' K components
// of V in registers for all the tile's rows (V is read once per tile, not once per row), and each row's
// projection t[r, :] = sum_c e[r, c] v[:, c] is summed per thread over its P columns in float, over the warp
// by warp_transpose_sum, over the warps in double (fixed order) into t_part[tile, r, :] (tiles x rows x K).
template <int K, int P, bool AdamW>
__global__ void __launch_bounds__(kThreads, P == 4 ? 2 : 3)
    tile_step_kernel(std::int64_t rows, std::int64_t cols, ScaleGrid g, const float* __restrict__ scales, const float* __restrict__ u,
                     const float* __restrict__ z, const float* __restrict__ v, AdamScalars sc, const AdamLoopState* st, float* d0, float* d1,
                     float* __restrict__ second, double* __restrict__ t_part) {
    if (st->stopped) return;
    const float* src = st->current ? d1 : d0;
    float* dst = st->target ? d1 : d0;
    const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * kTileRows;
    const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * (kThreads * P);
    const int nrows = static_cast<int>(rows - r0 < kTileRows ? rows - r0 : kTileRows);
    __shared__ __align__(16) float urow[kTileRows][2 * K];  // (U grad)[r] and (U m1)[r]
    __shared__ float warp_part[kWarps][kTileRows][K];
    for (int i = threadIdx.x; i < kTileRows * 2 * K; i += kThreads) {
        const int rr = i / (2 * K), j = i % (2 * K), part = j / K, col = j % K;
        float acc = 0.0f;
        if (rr < nrows)
            for (int a = 0; a < K; ++a) acc += u[(r0 + rr) * K + a] * z[part * K * K + a * K + col];
        urow[rr][j] = acc;
    }
    float vj[P][K];
    std::int64_t col[P];
    unsigned int cell_col[P];
#pragma unroll
    for (int p = 0; p < P; ++p) {
        col[p] = c0 + p * kThreads + threadIdx.x;
        const bool in = col[p] < cols;
        cell_col[p] = in ? static_cast<unsigned int>(col[p] / g.block_cols) : 0u;
#pragma unroll
        for (int j = 0; j < K; ++j) vj[p][j] = in ? v[j * cols + col[p]] : 0.0f;
    }
    __syncthreads();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // Row rr + 1's offsets, second moments and scales are loaded while row rr computes (the loop is otherwise
    // bound by memory latency: one row's loads, then its arithmetic and the warp's exchanges).
    float next_x[P], next_v2[P], next_s[P];
    // The scale cell's row moves only at multiples of block_rows (tracked, not divided: a 64-bit division per
    // row cost as much as the row's arithmetic); the scales are reloaded only then.
    std::int64_t cell_row = (r0 / g.block_rows) * g.grid_cols, next_cell = (r0 / g.block_rows + 1) * g.block_rows;
    const auto load_row = [&](int rr) {
        const std::int64_t r = r0 + rr;
        const bool new_cell = rr == 0 || r >= next_cell;
        if (r >= next_cell) cell_row += g.grid_cols, next_cell += g.block_rows;
        const float* src_row = src + r * cols;
        const float* second_row = second + r * cols;
#pragma unroll
        for (int p = 0; p < P; ++p) {
            if (col[p] >= cols) continue;
            next_x[p] = src_row[col[p]];
            next_v2[p] = second_row[col[p]];
            if (new_cell) next_s[p] = scales[cell_row + cell_col[p]];
        }
    };
    load_row(0);
    for (int rr = 0; rr < nrows; ++rr) {
        float x0[P], v2[P], s[P];
#pragma unroll
        for (int p = 0; p < P; ++p) x0[p] = next_x[p], v2[p] = next_v2[p], s[p] = next_s[p];
        if (rr + 1 < nrows) load_row(rr + 1);
        const std::int64_t r = r0 + rr;
        float acc[K];
#pragma unroll
        for (int j = 0; j < K; ++j) acc[j] = 0.0f;
#pragma unroll
        for (int p = 0; p < P; ++p) {
            if (col[p] >= cols) continue;
            float gq = 0.0f, gm = 0.0f;
#pragma unroll
            for (int j = 0; j < K; ++j) {
                gq = __fmaf_rn(urow[rr][j], vj[p][j], gq);
                gm = __fmaf_rn(urow[rr][K + j], vj[p][j], gm);
            }
            const std::int64_t i = r * cols + col[p];
            const float x = adam_update<AdamW>(gq * s[p], gm * s[p], v2[p], x0[p], sc);
            second[i] = v2[p];
            dst[i] = x;
            const float e = x * s[p];
#pragma unroll
            for (int j = 0; j < K; ++j) acc[j] = __fmaf_rn(e, vj[p][j], acc[j]);
        }
        int j = 0;
        const float sum = warp_transpose_sum<K>(acc, lane, j);
        if ((lane & (32 / K - 1)) == 0) warp_part[warp][rr][j] = sum;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nrows * K; i += kThreads) {
        const int rr = i / K, j = i % K;
        double sum = 0.0;
        for (int w = 0; w < kWarps; ++w) sum += warp_part[w][rr][j];
        t_part[(static_cast<std::int64_t>(blockIdx.x) * rows + r0 + rr) * K + j] = sum;
    }
}

constexpr int kProjectRows = 32;  // rows staged in shared memory per round of project_kernel

// partial[block, i, j] = sum over the block's rows r of u[r, i] * t[r, j], t[r, j] = sum over the column tiles
// of t_part[tile, r, j] in tile order. Rows are split evenly over the blocks (by rows alone): deterministic.
// The control kernel sums the blocks' K x K partials in block order.
__global__ void project_kernel(const AdamLoopState* st, const float* u, const double* t_part, int tiles, std::int64_t rows, int K,
                               double* partial) {
    if (st->stopped) return;
    __shared__ double ts[kProjectRows][16];
    __shared__ float us[kProjectRows][16];
    const std::int64_t per_block = (rows + gridDim.x - 1) / gridDim.x;
    const std::int64_t begin = blockIdx.x * per_block, end = begin + per_block < rows ? begin + per_block : rows;
    const int kk = K * K, i = threadIdx.x / K, j = threadIdx.x % K;
    double acc = 0.0;
    for (std::int64_t r0 = begin; r0 < end; r0 += kProjectRows) {
        for (int idx = threadIdx.x; idx < kProjectRows * K; idx += kThreads) {
            const int rr = idx / K, c = idx % K;
            const std::int64_t r = r0 + rr;
            double sum = 0.0;
            float uu = 0.0f;
            if (r < end) {
                for (int tile = 0; tile < tiles; ++tile) sum += t_part[(tile * rows + r) * K + c];
                uu = u[r * K + c];
            }
            ts[rr][c] = sum;
            us[rr][c] = uu;
        }
        __syncthreads();
        if (threadIdx.x < kk)
            for (int rr = 0; rr < kProjectRows; ++rr) acc += static_cast<double>(us[rr][i]) * ts[rr][j];
        __syncthreads();
    }
    if (threadIdx.x < kk) partial[blockIdx.x * kk + threadIdx.x] = acc;
}

// Blocks of project_kernel for a matrix of `rows` rows: enough to spread the rows, few enough that the
// control kernel's sum over them stays short.
int project_blocks(std::int64_t rows) { return static_cast<int>(std::min<std::int64_t>(64, (rows + 255) / 256)); }

template <int K, int P>
void launch_tile_step(bool adamw, std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales,
                      const float* u, const float* z, const float* v, const AdamScalars& sc, const AdamLoopState* st, float* d0,
                      float* d1, float* second, double* t, cudaStream_t s) {
    const dim3 grid(static_cast<unsigned int>((cols + kThreads * P - 1) / (kThreads * P)),
                    static_cast<unsigned int>((rows + kTileRows - 1) / kTileRows));
    if (adamw)
        tile_step_kernel<K, P, true><<<grid, kThreads, 0, s>>>(rows, cols, g, scales, u, z, v, sc, st, d0, d1, second, t);
    else
        tile_step_kernel<K, P, false><<<grid, kThreads, 0, s>>>(rows, cols, g, scales, u, z, v, sc, st, d0, d1, second, t);
}

using StepLauncher = void (*)(bool, std::int64_t, std::int64_t, const ScaleGrid&, const float*, const float*, const float*,
                              const float*, const AdamScalars&, const AdamLoopState*, float*, float*, float*, double*, cudaStream_t);

StepLauncher step_launcher(int K, int per_thread) {
    constexpr StepLauncher table[3][2] = {{launch_tile_step<4, 2>, launch_tile_step<4, 4>},
                                          {launch_tile_step<8, 2>, launch_tile_step<8, 4>},
                                          {launch_tile_step<16, 2>, launch_tile_step<16, 4>}};
    return table[K == 4 ? 0 : K == 8 ? 1 : 2][per_thread == 2 ? 0 : 1];
}

// Column tiles of the step: kThreads * per_thread columns each.
int column_tiles(int per_thread, std::int64_t cols) { return static_cast<int>((cols + kThreads * per_thread - 1) / (kThreads * per_thread)); }

// The basis zero-padded to K components (K in 4, 8, 16: the kernels are compiled for those).
int padded_k(std::int64_t k) { return k <= 4 ? 4 : k <= 8 ? 8 : 16; }

}  // namespace

AdamDevice::AdamDevice(const LowRank& basis, std::int64_t k, const ScaleGrid& g, const float* scales, const std::vector<double>& p0,
                       Optimizer optimizer, double lr, const Stream& s, int columns_per_thread)
    : rows_(basis.rows), cols_(basis.cols), padded_(padded_k(k)), kk_(padded_ * padded_), g_(g), scales_(scales), optimizer_(optimizer),
      lr_(lr), per_thread_(columns_per_thread), tiles_(column_tiles(columns_per_thread, basis.cols)), s_(s) {
    QF_EXPECT(columns_per_thread == 2 || columns_per_thread == 4,
              "AdamDevice: columns per thread must be 2 or 4, not " + std::to_string(columns_per_thread));
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
    for (DeviceBuffer<double>* b : {&p0_, &p_, &m1_}) *b = DeviceBuffer<double>(p0p.size(), s.get());
    partial_ = DeviceBuffer<double>(static_cast<std::size_t>(project_blocks(rows_) * kk_), s.get());
    t_part_ = DeviceBuffer<double>(static_cast<std::size_t>(tiles_ * rows_ * K), s.get());
    state_ = DeviceBuffer<AdamLoopState>(1, s.get());
    mirror_ = PinnedBuffer<AdamLoopState>(1);
    const AdamLoopState start;
    upload(u_, up.data(), up.size(), s);
    upload(v_, vp.data(), vp.size(), s);
    upload(p0_, p0p.data(), p0p.size(), s);
    upload(p_, p0p.data(), p0p.size(), s);
    upload(state_, &start, 1, s);
    QF_CUDA_CHECK(cudaMemsetAsync(m1_.get(), 0, m1_.size() * sizeof(double), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(partial_.get(), 0, partial_.size() * sizeof(double), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(delta0_.get(), 0, n * sizeof(float), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(second_.get(), 0, n * sizeof(float), s.get()));
    s.sync();  // the host vectors above die here
}

AdamLoopState AdamDevice::steps(int t0, int count, std::vector<double>& losses) {
    if (count <= 0) return {};
    const bool adamw = optimizer_ == Optimizer::AdamW;
    const StepLauncher launch = step_launcher(padded_, per_thread_);
    const int parts = project_blocks(rows_);
    DeviceBuffer<double> chunk_losses(static_cast<std::size_t>(count), s_.get());
    for (int step = t0; step < t0 + count; ++step) {
        control_kernel<<<1, kThreads, 0, s_.get()>>>(step, t0, kk_, state_.get(), p0_.get(), partial_.get(), parts, p_.get(), m1_.get(),
                                              z_.get(), chunk_losses.get());
        const AdamScalars sc = adam_scalars(optimizer_, lr_, step + 1);
        launch(adamw, rows_, cols_, g_, scales_, u_.get(), z_.get(), v_.get(), sc, state_.get(), delta0_.get(), delta1_.get(),
               second_.get(), t_part_.get(), s_.get());
        project_kernel<<<static_cast<unsigned int>(parts), kThreads, 0, s_.get()>>>(state_.get(), u_.get(), t_part_.get(), tiles_, rows_,
                                                                                    padded_, partial_.get());
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

void AdamDevice::finish(int best_buffer, CodeKind kind, std::uint8_t* codes) {
    apply_offsets(rows_ * cols_, kind, best_buffer ? delta1_.get() : delta0_.get(), codes, s_.get());
}

}  // namespace quantflow::cuda
