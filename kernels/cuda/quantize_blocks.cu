// kernels/cuda/quantize_blocks.cu: float8_e5m2, mxfp8 and nvfp4 round-to-nearest on the GPU, the twins of
// kernels/cpu/quantize_blocks_cpu.cpp and quantize_cpu.cpp's e5m2 path: the same numerics.hpp functions in the
// same order (IEEE division, no FMA contraction), so codes and scales are bit-identical (test_cuda_vs_cpu).
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per (row, block): blocks are 16 or 32 elements, so a thread reads one short contiguous run.
__global__ void block_scaled_kernel(DeviceWeight w, bool nvfp4, float global, float* scales, std::uint8_t* codes,
                                    unsigned long long* bad_row) {
    const std::int64_t size = nvfp4 ? 16 : 32;
    const std::int64_t blocks = (w.cols + size - 1) / size;
    const std::int64_t id = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (id >= w.rows * blocks) return;
    const std::int64_t r = id / blocks, c0 = (id % blocks) * size;
    const std::int64_t n = min(size, w.cols - c0), base = r * w.cols + c0;
    unsigned int m = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const unsigned int bits = f32_bits(load(w, base + i)) & 0x7FFFFFFFu;
        m = bits > m ? bits : m;
    }
    if (m >= 0x7F800000u) {
        atomicMin(bad_row, static_cast<unsigned long long>(r));
        return;
    }
    const float amax = bits_f32(m);
    if (nvfp4) {
        const float wanted = (amax / kE2m1Max) / global;
        const float block = e4m3_to_f32(f32_to_e4m3(wanted < kFp8Max ? wanted : kFp8Max));
        scales[id] = block;
        const float total = global * block;
        for (std::int64_t i = 0; i < n; ++i)
            codes[base + i] = total == 0.0f ? std::uint8_t{0} : f32_to_e2m1(clamp_abs(load(w, base + i) / total, kE2m1Max));
        return;
    }
    const std::uint8_t byte = mxfp8_scale_byte(amax);
    scales[id] = e8m0_to_f32(byte);
    const float scale = bits_f32(byte == 0 ? 0x00400000u : static_cast<unsigned int>(byte) << 23);
    for (std::int64_t i = 0; i < n; ++i)
        codes[base + i] = amax == 0.0f ? std::uint8_t{0} : f32_to_e4m3(clamp_abs(load(w, base + i) / scale, kFp8Max));
}

// nvfp4's scale search on one (row, block of 16) per thread: search_block_scales_cpu (quantize_blocks_cpu.cpp)
// with the same functions in the same order (the encode is f32_to_e2m1 of the clamped quotient, which the CPU's
// e2m1_lane equals for every non-NaN quotient). block_error2[id] gets the block's round-to-nearest error.
__global__ void scale_search_kernel(DeviceWeight w, float global, float* scales, std::uint8_t* codes, double* block_error2) {
    const std::int64_t blocks = (w.cols + 15) / 16;
    const std::int64_t id = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (id >= w.rows * blocks) return;
    const std::int64_t r = id / blocks, c0 = (id % blocks) * 16, base = r * w.cols + c0;
    const int n = static_cast<int>(w.cols - c0 < 16 ? w.cols - c0 : 16);
    float x[16];
    for (int i = 0; i < n; ++i) x[i] = load(w, base + i);
    std::uint8_t trial[16], best_codes[16];
    double error2 = 0, along = 0;
    const auto encode = [&](float total) {
        error2 = 0, along = 0;
        for (int i = 0; i < n; ++i) {
            trial[i] = f32_to_e2m1(clamp_abs(x[i] / total, kE2m1Max));
            const double e = static_cast<double>(e2m1_to_f32(trial[i]) * total) - x[i];
            error2 += e * e;
            along += e * x[i];
        }
    };
    float scale = scales[id];
    encode(global * scale);
    block_error2[id] = error2;
    if (scale == 0.0f) return;  // an all-zero block
    double norm2 = 0;
    for (int i = 0; i < n; ++i) norm2 += static_cast<double>(x[i]) * x[i];
    const auto score = [&] { return error2 + kAlongWeight * along * along / norm2; };
    const int code = f32_to_e4m3(scale);
    double best = score();
    bool changed = false;
    for (int c = max(1, code - kScaleSearchBelow); c <= min(0x7E, code + kScaleSearchAbove); ++c) {
        const float candidate = e4m3_to_f32(static_cast<std::uint8_t>(c));
        if (c == code || global * candidate == 0.0f) continue;
        encode(global * candidate);
        const double e = score();
        if (e < best) {  // ties keep round-to-nearest's scale
            best = e;
            scale = candidate;
            changed = true;
            for (int i = 0; i < n; ++i) best_codes[i] = trial[i];
        }
    }
    if (!changed) return;
    scales[id] = scale;
    for (int i = 0; i < n; ++i) codes[base + i] = best_codes[i];
}

__global__ void e5m2_kernel(DeviceWeight w, float multiplier, std::uint8_t* codes) {
    const std::int64_t n = w.rows * w.cols;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
        codes[i] = f32_to_e5m2(clamp_abs(load(w, i) * multiplier, kE5m2Max));
}

}  // namespace

void encode_block_scaled(const DeviceWeight& w, bool nvfp4, float global, float* scales, std::uint8_t* codes,
                         unsigned long long* bad_row, cudaStream_t s) {
    const std::int64_t size = nvfp4 ? 16 : 32;
    const std::int64_t threads = w.rows * ((w.cols + size - 1) / size);
    block_scaled_kernel<<<static_cast<unsigned int>((threads + kThreads - 1) / kThreads), kThreads, 0, s>>>(w, nvfp4, global, scales,
                                                                                                           codes, bad_row);
    QF_CUDA_CHECK(cudaGetLastError());
}

void search_nvfp4_scales(const DeviceWeight& w, float global, float* scales, std::uint8_t* codes, double* block_error2, cudaStream_t s) {
    const std::int64_t threads = w.rows * ((w.cols + 15) / 16);
    scale_search_kernel<<<static_cast<unsigned int>((threads + kThreads - 1) / kThreads), kThreads, 0, s>>>(w, global, scales, codes,
                                                                                                           block_error2);
    QF_CUDA_CHECK(cudaGetLastError());
}

void encode_e5m2(const DeviceWeight& w, float multiplier, std::uint8_t* codes, cudaStream_t s) {
    const std::int64_t blocks = (w.rows * w.cols + kThreads - 1) / kThreads;
    e5m2_kernel<<<static_cast<unsigned int>(blocks < 65535 * 32 ? (blocks > 0 ? blocks : 1) : 65535 * 32), kThreads, 0, s>>>(w, multiplier,
                                                                                                                          codes);
    QF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace quantflow::cuda
