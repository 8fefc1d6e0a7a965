#include "kernels/cuda/adam_step.cuh"

#include <string>

#include "kernels/cuda/check.cuh"
#include "kernels/error.hpp"

namespace quantflow::cuda {
namespace {

constexpr int kWarps = 4;  // warps per block; each takes 16 rows of the block's column tile
constexpr int kThreads = 32 * kWarps;
constexpr int kFlush = 8;  // n-tiles (8 columns each) summed in float before the projection is added in double
constexpr int kGroup = 4;  // n-tiles whose loads are issued together

// mma.sync m16n8k8 TF32 fragments (lane = 4 g + t): A (16 x 8) a0 (g, t), a1 (g + 8, t), a2 (g, t + 4),
// a3 (g + 8, t + 4); B (8 x 8) b0 (t, g), b1 (t + 4, g); C (16 x 8) c0 (g, 2 t), c1 (g, 2 t + 1), c2 (g + 8, 2 t),
// c3 (g + 8, 2 t + 1).
struct Split4 {
    std::uint32_t hi[4], lo[4];
};
struct Split2 {
    std::uint32_t hi[2], lo[2];
};

__device__ __forceinline__ std::uint32_t to_tf32(float x) {
    std::uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// x = hi + lo to about float32 accuracy, both TF32.
__device__ __forceinline__ void split_tf32(float x, std::uint32_t& hi, std::uint32_t& lo) {
    hi = to_tf32(x);
    lo = to_tf32(x - __uint_as_float(hi));
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += A B in three TF32 products, the small ones first: lo * hi + hi * lo + hi * hi.
__device__ __forceinline__ void mma3(float (&d)[4], const Split4& a, const Split2& b) {
    mma_tf32(d, a.lo, b.hi);
    mma_tf32(d, a.hi, b.lo);
    mma_tf32(d, a.hi, b.hi);
}

// Per (n-tile of 8 columns, lane): K words = for each 8 components of the expansion (B = V[j, c], k = j) b0 hi,
// b0 lo, b1 hi, b1 lo; then for each 8 components of the projection (B[k, n] = V[n, c(k)] with the columns in
// the order the lane's results hold them: k = t <-> column 2 t, k = t + 4 <-> column 2 t + 1) the same four.
template <int K>
__global__ void v_fragments_kernel(const float* v, std::int64_t cols, std::int64_t entries, std::uint32_t* out) {
    const std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * 256 + threadIdx.x;
    if (idx >= entries) return;
    const std::int64_t cb = (idx / 32) * 8;
    const int lane = static_cast<int>(idx % 32), g = lane / 4, t = lane % 4;
    const auto at = [&](int j, std::int64_t c) { return c < cols ? v[j * cols + c] : 0.0f; };
    std::uint32_t* o = out + idx * K;
    for (int ks = 0; ks < K / 8; ++ks, o += 4) {
        split_tf32(at(ks * 8 + t, cb + g), o[0], o[1]);
        split_tf32(at(ks * 8 + t + 4, cb + g), o[2], o[3]);
    }
    for (int jt = 0; jt < K / 8; ++jt, o += 4) {
        split_tf32(at(jt * 8 + g, cb + 2 * t), o[0], o[1]);
        split_tf32(at(jt * 8 + g, cb + 2 * t + 1), o[2], o[3]);
    }
}

// One warp: 16 rows x the block's tile of kAdamTileCols columns, 8 columns (one n-tile) at a time. Its lane
// holds elements (g, 2 t), (g, 2 t + 1), (g + 8, 2 t), (g + 8, 2 t + 1) of each n-tile as the expansion's C
// fragment, updates them, and feeds them as the projection's A fragment (columns permuted as the B fragment's
// rows are). Deterministic: a fixed sequence of mma per warp, tiles summed in double in a fixed order.
template <int K, bool AdamW>
__global__ void __launch_bounds__(kThreads)
    mma_step_kernel(std::int64_t rows, std::int64_t cols, ScaleGrid g, const float* __restrict__ scales, const float* __restrict__ u,
                    const float* __restrict__ z, const uint4* __restrict__ vfrag, AdamScalars sc, const AdamLoopState* st, float* d0,
                    float* d1, float* __restrict__ second,
                    double* __restrict__ t_part) {
    if (st->stopped) return;
    constexpr int KS = K / 8;
    const float* src = st->current ? d1 : d0;
    float* dst = st->target ? d1 : d0;
    const int lane = threadIdx.x % 32, gi = lane / 4, ti = lane % 4;
    const std::int64_t r0 = (static_cast<std::int64_t>(blockIdx.y) * kWarps + threadIdx.x / 32) * 16;
    if (r0 >= rows) return;  // a whole warp: no block-wide barrier below
    const std::int64_t row[2] = {r0 + gi, r0 + gi + 8};
    const bool row_in[2] = {row[0] < rows, row[1] < rows};
    std::int64_t cell_row[2];
    for (int h = 0; h < 2; ++h) cell_row[h] = row_in[h] ? (row[h] / g.block_rows) * g.grid_cols : 0;

    // The expansion's A fragments: (U grad)[row, j] and (U m1)[row, j] for j = ks * 8 + t (+ 4).
    Split4 aq[KS], am[KS];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int h = r % 2, j = ks * 8 + ti + 4 * (r / 2);
            float q = 0.0f, m = 0.0f;
            if (row_in[h])
                for (int a = 0; a < K; ++a) {
                    const float ua = u[row[h] * K + a];
                    q = __fmaf_rn(ua, z[a * K + j], q);
                    m = __fmaf_rn(ua, z[K * K + a * K + j], m);
                }
            split_tf32(q, aq[ks].hi[r], aq[ks].lo[r]);
            split_tf32(m, am[ks].hi[r], am[ks].lo[r]);
        }

    const std::int64_t tile = blockIdx.x;
    const std::int64_t c_end = cols < (tile + 1) * kAdamTileCols ? cols : (tile + 1) * kAdamTileCols;
    const std::int64_t nt_begin = tile * (kAdamTileCols / 8), nt_end = (c_end + 7) / 8;
    // The scale cell's column moves only at n-tile boundaries when cells are 8k columns wide or span the row.
    const bool uniform_cell = g.block_cols % 8 == 0 || g.block_cols >= cols;
    std::int64_t cell_col = (nt_begin * 8) / g.block_cols, next_cell = (cell_col + 1) * g.block_cols;

    double tsum[KS][4] = {};
    float tacc[KS][4] = {};
    int pending = 0;
    for (std::int64_t group = nt_begin; group < nt_end; group += kGroup) {
        // The group's offsets and second moments, all loads in flight before any arithmetic (the step is bound
        // by memory latency otherwise).
        float x0[kGroup][4], v2[kGroup][4];
#pragma unroll
        for (int n = 0; n < kGroup; ++n)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int h = i / 2;
                const std::int64_t col = (group + n) * 8 + 2 * ti + (i & 1);
                x0[n][i] = 0.0f, v2[n][i] = 0.0f;
                if (row_in[h] && col < cols) {
                    x0[n][i] = src[row[h] * cols + col];
                    v2[n][i] = second[row[h] * cols + col];
                }
            }
#pragma unroll
        for (int n = 0; n < kGroup; ++n) {
            const std::int64_t nt = group + n;
            if (nt >= nt_end) break;
            if (uniform_cell && nt * 8 >= next_cell) ++cell_col, next_cell += g.block_cols;
            const uint4* f = vfrag + (nt * 32 + lane) * (K / 4);
            Split2 bg[KS], bt[KS];
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                const uint4 w = f[ks], y = f[KS + ks];
                bg[ks].hi[0] = w.x, bg[ks].lo[0] = w.y, bg[ks].hi[1] = w.z, bg[ks].lo[1] = w.w;
                bt[ks].hi[0] = y.x, bt[ks].lo[0] = y.y, bt[ks].hi[1] = y.z, bt[ks].lo[1] = y.w;
            }
            float dq[4] = {}, dm[4] = {};
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                mma3(dq, aq[ks], bg[ks]);
                mma3(dm, am[ks], bg[ks]);
            }
            float e[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int h = i / 2;
                const std::int64_t col = nt * 8 + 2 * ti + (i & 1);
                e[i] = 0.0f;
                if (row_in[h] && col < cols) {
                    const float sc_i = scales[cell_row[h] + (uniform_cell ? cell_col : col / g.block_cols)];
                    float v = v2[n][i];
                    const float x = adam_update<AdamW>(dq[i] * sc_i, dm[i] * sc_i, v, x0[n][i], sc);
                    second[row[h] * cols + col] = v;
                    dst[row[h] * cols + col] = x;
                    e[i] = x * sc_i;
                }
            }
            Split4 ea;  // A fragment of the projection: k = t <-> column 2 t, k = t + 4 <-> column 2 t + 1
            split_tf32(e[0], ea.hi[0], ea.lo[0]);
            split_tf32(e[2], ea.hi[1], ea.lo[1]);
            split_tf32(e[1], ea.hi[2], ea.lo[2]);
            split_tf32(e[3], ea.hi[3], ea.lo[3]);
            // A fresh accumulator per n-tile, summed in software (round to nearest): the tensor cores' own
            // accumulation over a whole tile drifted (the loss plateau of a k 5 layer moved by 2x).
#pragma unroll
            for (int jt = 0; jt < KS; ++jt) {
                float d[4] = {};
                mma3(d, ea, bt[jt]);
#pragma unroll
                for (int r = 0; r < 4; ++r) tacc[jt][r] += d[r];
            }
            if (++pending == kFlush || nt + 1 == nt_end) {
                pending = 0;
#pragma unroll
                for (int jt = 0; jt < KS; ++jt)
#pragma unroll
                    for (int r = 0; r < 4; ++r) tsum[jt][r] += tacc[jt][r], tacc[jt][r] = 0.0f;
            }
        }
    }
#pragma unroll
    for (int jt = 0; jt < KS; ++jt)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int h = r / 2;
            if (row_in[h]) t_part[(tile * rows + row[h]) * K + jt * 8 + 2 * ti + (r & 1)] = tsum[jt][r];
        }
}

template <int K>
void launch(bool adamw, std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales, const float* u, const float* z,
            const std::uint32_t* vfrag, const AdamScalars& sc, const AdamLoopState* st, float* d0, float* d1, float* second,
            double* t_part, cudaStream_t s) {
    const dim3 grid(static_cast<unsigned int>(adam_column_tiles(cols)), static_cast<unsigned int>((rows + 16 * kWarps - 1) / (16 * kWarps)));
    const auto* f = reinterpret_cast<const uint4*>(vfrag);
    if (adamw)
        mma_step_kernel<K, true><<<grid, kThreads, 0, s>>>(rows, cols, g, scales, u, z, f, sc, st, d0, d1, second, t_part);
    else
        mma_step_kernel<K, false><<<grid, kThreads, 0, s>>>(rows, cols, g, scales, u, z, f, sc, st, d0, d1, second, t_part);
}

}  // namespace

DeviceBuffer<std::uint32_t> adam_v_fragments(const float* v, int K, std::int64_t cols, cudaStream_t s) {
    QF_EXPECT(K == 8 || K == 16, "adam_v_fragments: K must be 8 or 16, not " + std::to_string(K));
    const std::int64_t entries = (cols + 7) / 8 * 32;
    DeviceBuffer<std::uint32_t> out(static_cast<std::size_t>(entries * K), s);
    const auto blocks = static_cast<unsigned int>((entries + 255) / 256);
    if (K == 8)
        v_fragments_kernel<8><<<blocks, 256, 0, s>>>(v, cols, entries, out.get());
    else
        v_fragments_kernel<16><<<blocks, 256, 0, s>>>(v, cols, entries, out.get());
    QF_CUDA_CHECK(cudaGetLastError());
    return out;
}

void adam_mma_step(int K, bool adamw, std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales, const float* u,
                   const float* z, const std::uint32_t* vfrag, const AdamScalars& sc, const AdamLoopState* st, float* d0, float* d1,
                   float* second, double* t_part, cudaStream_t s) {
    if (K == 8)
        launch<8>(adamw, rows, cols, g, scales, u, z, vfrag, sc, st, d0, d1, second, t_part, s);
    else
        launch<16>(adamw, rows, cols, g, scales, u, z, vfrag, sc, st, d0, d1, second, t_part, s);
}

}  // namespace quantflow::cuda
