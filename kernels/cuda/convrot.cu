// kernels/cuda/convrot.cu: ConvRot's group rotation on the GPU, the twin of kernels/cpu/convrot_cpu.cpp.
//
// Groups are contiguous in the row-major weight (cols is a multiple of g), so the weight is a flat run of
// groups. A CUDA block takes `per` consecutive groups into shared memory as doubles and runs the butterfly
// stages of kernels/convrot.hpp (hadamard_quad: the same additions in the same order as the CPU), one stage at
// a time with every quad of the chunk in parallel, then scales by 2^-n and rounds to float32 once.
#include "kernels/convrot.hpp"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/cuda/quantize.cuh"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kChunk = 1024;  // elements per CUDA block when groups are small (8 KiB of doubles)

__global__ void rotate_kernel(DeviceWeight w, std::int64_t g, std::int64_t per, float* out) {
    extern __shared__ double x[];
    const std::int64_t groups = w.rows * w.cols / g;
    const std::int64_t first = blockIdx.x * per;
    const std::int64_t count = min(per, groups - first);
    const std::int64_t base = first * g, n = count * g;
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = static_cast<double>(load(w, base + i));
    __syncthreads();
    const std::int64_t quads = g / 4;
    for (std::int64_t s = 1; s < g; s *= 4) {
        for (std::int64_t t = threadIdx.x; t < count * quads; t += blockDim.x) hadamard_quad(x + (t / quads) * g, s, t % quads);
        __syncthreads();
    }
    const double f = hadamard_norm(g);
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) out[base + i] = static_cast<float>(x[i] * f);
}

}  // namespace

void rotate_groups(const DeviceWeight& w, std::int64_t g, float* out, cudaStream_t s) {
    const std::int64_t per = g >= kChunk ? 1 : kChunk / g;
    const std::int64_t groups = w.rows * w.cols / g;
    const std::int64_t blocks = (groups + per - 1) / per;
    if (blocks == 0) return;
    const std::size_t shared = static_cast<std::size_t>(per * g) * sizeof(double);
    rotate_kernel<<<static_cast<unsigned int>(blocks), kThreads, shared, s>>>(w, g, per, out);
    QF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quantflow::cuda
