#include "kernels/cuda/svd.cuh"

#include <algorithm>

#include "kernels/cuda/elements.cuh"

namespace quantflow::cuda {
namespace {

constexpr int kLanes = 32;        // sketch columns per pass of a product kernel (a warp's width)
constexpr int kRowsPerBlock = 8;  // Y = W Z: a warp per weight row
constexpr int kTileCols = 128;    // Y = W Z: columns of Z staged in shared memory per step
constexpr int kTileRows = 64;     // Z = W^T Y and the Gram matrices: panel rows staged per step
constexpr int kThreads = 256;
constexpr std::int64_t kGramTileFloats = 12288;

__host__ __device__ inline std::int64_t lesser(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

std::int64_t slices_for(std::int64_t rows) { return std::clamp<std::int64_t>(rows / 256, 1, 32); }

// y[r, j0 + j] = sum_c W[r, c] z[c, j0 + j] for j < 32: each warp takes a row, each lane every 32nd column, and
// the lanes' sums are added in a fixed tree.
__global__ void times_kernel(DeviceWeight w, const float* z, std::int64_t l, float* y) {
    __shared__ float tile[kTileCols][kLanes + 1];
    const int lane = threadIdx.x % kLanes, warp = threadIdx.x / kLanes;
    const std::int64_t r = blockIdx.x * static_cast<std::int64_t>(kRowsPerBlock) + warp, j0 = blockIdx.y * static_cast<std::int64_t>(kLanes);
    const int width = static_cast<int>(lesser(std::int64_t{kLanes}, l - j0));
    float acc[kLanes] = {};
    for (std::int64_t c0 = 0; c0 < w.cols; c0 += kTileCols) {
        __syncthreads();
        for (int i = threadIdx.x; i < kTileCols * kLanes; i += blockDim.x) {
            const int c = i / kLanes, j = i % kLanes;
            tile[c][j] = c0 + c < w.cols && j < width ? z[(c0 + c) * l + j0 + j] : 0.0f;
        }
        __syncthreads();
        if (r >= w.rows) continue;
        for (int t = lane; t < kTileCols && c0 + t < w.cols; t += kLanes) {
            const float x = load(w, r * w.cols + c0 + t);
#pragma unroll
            for (int j = 0; j < kLanes; ++j) acc[j] = fmaf(x, tile[t][j], acc[j]);
        }
    }
    if (r >= w.rows) return;
#pragma unroll
    for (int j = 0; j < kLanes; ++j) {
        float v = acc[j];
        for (int step = kLanes / 2; step > 0; step /= 2) v += __shfl_xor_sync(0xffffffffu, v, step);
        acc[j] = v;
    }
    if (lane < width) {
        float mine = 0.0f;
#pragma unroll
        for (int j = 0; j < kLanes; ++j) mine = j == lane ? acc[j] : mine;
        y[r * l + j0 + lane] = mine;
    }
}

// partial[s, c, j0 + j] = sum over slice s's rows r of W[r, c] y[r, j0 + j]: a thread per weight column.
__global__ void times_transposed_kernel(DeviceWeight w, const float* y, std::int64_t l, std::int64_t slice_rows, float* partial) {
    __shared__ float tile[kTileRows][kLanes];
    const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    const std::int64_t s = blockIdx.y, j0 = blockIdx.z * static_cast<std::int64_t>(kLanes);
    const int width = static_cast<int>(lesser(std::int64_t{kLanes}, l - j0));
    const std::int64_t r_begin = s * slice_rows, r_end = lesser(w.rows, r_begin + slice_rows);
    float acc[kLanes] = {};
    for (std::int64_t r0 = r_begin; r0 < r_end; r0 += kTileRows) {
        __syncthreads();
        for (int i = threadIdx.x; i < kTileRows * kLanes; i += blockDim.x) {
            const int r = i / kLanes, j = i % kLanes;
            tile[r][j] = r0 + r < r_end && j < width ? y[(r0 + r) * l + j0 + j] : 0.0f;
        }
        __syncthreads();
        if (c >= w.cols) continue;
        const int count = static_cast<int>(lesser(std::int64_t{kTileRows}, r_end - r0));
        for (int r = 0; r < count; ++r) {
            const float x = load(w, (r0 + r) * w.cols + c);
#pragma unroll
            for (int j = 0; j < kLanes; ++j) acc[j] = fmaf(x, tile[r][j], acc[j]);
        }
    }
    if (c >= w.cols) return;
    float* out = partial + (s * w.cols + c) * l + j0;
    for (int j = 0; j < width; ++j) out[j] = acc[j];
}

// out[i] = sum_s partial[s, i], in slice order (W^T Y's columns in float, the Gram matrices in double).
template <typename T>
__global__ void sum_slices_kernel(const T* partial, std::int64_t slices, std::int64_t count, T* out) {
    const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (i >= count) return;
    T sum = 0;
    for (std::int64_t s = 0; s < slices; ++s) sum += partial[s * count + i];
    out[i] = sum;
}

// partial[s, e] for entries e = (a, b) of the l x l Gram matrix: the sum over slice s's panel rows of
// p[r, a] p[r, b] in double, a thread per entry.
__global__ void gram_kernel(const float* p, std::int64_t rows, std::int64_t l, std::int64_t slice_rows, std::int64_t tile_rows,
                            double* partial) {
    extern __shared__ float panel_rows[];  // [tile_rows, l]
    const std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x, s = blockIdx.y;
    const std::int64_t a = e / l, b = e % l;
    const std::int64_t r_begin = s * slice_rows, r_end = lesser(rows, r_begin + slice_rows);
    double acc = 0.0;
    for (std::int64_t r0 = r_begin; r0 < r_end; r0 += tile_rows) {
        __syncthreads();
        const std::int64_t count = lesser(tile_rows, r_end - r0);
        for (std::int64_t i = threadIdx.x; i < count * l; i += blockDim.x) panel_rows[i] = p[r0 * l + i];
        __syncthreads();
        if (e >= l * l) continue;
        for (std::int64_t r = 0; r < count; ++r)
            acc += static_cast<double>(panel_rows[r * l + a]) * static_cast<double>(panel_rows[r * l + b]);
    }
    if (e < l * l) partial[s * l * l + e] = acc;
}

// out[r, j] = sum_i p[r, i] rr[i, j], a thread per output element.
__global__ void right_multiply_kernel(const float* p, std::int64_t rows, std::int64_t l, const float* rr, float* out) {
    const std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (e >= rows * l) return;
    const std::int64_t r = e / l, j = e % l;
    float sum = 0.0f;
    for (std::int64_t i = 0; i < l; ++i) sum = fmaf(p[r * l + i], rr[i * l + j], sum);
    out[e] = sum;
}

unsigned int blocks_for(std::int64_t count) { return static_cast<unsigned int>((count + kThreads - 1) / kThreads); }

}  // namespace

DevicePanels::DevicePanels(const DeviceWeight& w, std::int64_t l, const Stream& stream)
    : w_(w),
      l_(l),
      stream_(stream),
      y_(static_cast<std::size_t>(std::max(w.rows, w.cols) * l), stream.get()),
      z_(static_cast<std::size_t>(std::max(w.rows, w.cols) * l), stream.get()),
      spare_(static_cast<std::size_t>(std::max(w.rows, w.cols) * l), stream.get()),
      partial_(static_cast<std::size_t>(slices_for(w.rows) * w.cols * l), stream.get()),
      small_(static_cast<std::size_t>(l * l), stream.get()),
      gram_partial_(static_cast<std::size_t>(slices_for(std::max(w.rows, w.cols)) * l * l), stream.get()),
      gram_(static_cast<std::size_t>(l * l), stream.get()) {}

void DevicePanels::set(SketchPanel p, const float* host) { upload(panel(p), host, static_cast<std::size_t>(length(p) * l_), stream_); }

void DevicePanels::get(SketchPanel p, float* host) {
    download(host, panel(p), static_cast<std::size_t>(length(p) * l_), stream_);
    stream_.sync();
}

void DevicePanels::multiply(SketchPanel to) {
    const auto chunks = static_cast<unsigned int>((l_ + kLanes - 1) / kLanes);
    if (to == SketchPanel::Left) {
        const dim3 grid(static_cast<unsigned int>((w_.rows + kRowsPerBlock - 1) / kRowsPerBlock), chunks);
        times_kernel<<<grid, kRowsPerBlock * kLanes, 0, stream_.get()>>>(w_, z_.get(), l_, y_.get());
    } else {
        const std::int64_t slices = slices_for(w_.rows), slice_rows = (w_.rows + slices - 1) / slices;
        const dim3 grid(blocks_for(w_.cols), static_cast<unsigned int>(slices), chunks);
        times_transposed_kernel<<<grid, kThreads, 0, stream_.get()>>>(w_, y_.get(), l_, slice_rows, partial_.get());
        QF_CUDA_CHECK(cudaGetLastError());
        sum_slices_kernel<float><<<blocks_for(w_.cols * l_), kThreads, 0, stream_.get()>>>(partial_.get(), slices, w_.cols * l_, z_.get());
    }
    QF_CUDA_CHECK(cudaGetLastError());
}

void DevicePanels::gram(SketchPanel p, double* g) {
    const std::int64_t rows = length(p), slices = slices_for(rows), slice_rows = (rows + slices - 1) / slices;
    const dim3 grid(blocks_for(l_ * l_), static_cast<unsigned int>(slices));
    const std::int64_t tile_rows = std::clamp<std::int64_t>(kGramTileFloats / l_, 1, kTileRows);  // within 48 KB of shared memory
    const auto shared = static_cast<std::size_t>(tile_rows * l_) * sizeof(float);
    gram_kernel<<<grid, kThreads, shared, stream_.get()>>>(panel(p).get(), rows, l_, slice_rows, tile_rows, gram_partial_.get());
    QF_CUDA_CHECK(cudaGetLastError());
    sum_slices_kernel<double><<<blocks_for(l_ * l_), kThreads, 0, stream_.get()>>>(gram_partial_.get(), slices, l_ * l_, gram_.get());
    QF_CUDA_CHECK(cudaGetLastError());
    QF_CUDA_CHECK(cudaMemcpyAsync(g, gram_.get(), static_cast<std::size_t>(l_ * l_) * sizeof(double), cudaMemcpyDeviceToHost, stream_.get()));
    stream_.sync();
}

void DevicePanels::right_multiply(SketchPanel p, const float* r) {
    upload(small_, r, static_cast<std::size_t>(l_ * l_), stream_);
    const std::int64_t rows = length(p);
    right_multiply_kernel<<<blocks_for(rows * l_), kThreads, 0, stream_.get()>>>(panel(p).get(), rows, l_, small_.get(), spare_.get());
    QF_CUDA_CHECK(cudaGetLastError());
    std::swap(panel(p), spare_);  // all three hold max(rows, cols) x l floats
}

}  // namespace quantflow::cuda
