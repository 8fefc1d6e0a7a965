// kernels/cuda/quantize.cuh: round-to-nearest quantization and the bias-correction product on the GPU.
//
// Every value is computed with the scalar functions of numerics.hpp in the same order as the CPU backend
// (no FMA contraction: the CUDA sources build with --fmad=false), so codes, scales and corrected biases are
// bit-identical to the CPU's; tests/test_cuda_vs_cpu.cpp checks it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/dtype.hpp"

namespace quantflow::cuda {

// A weight on the device in its file dtype (F32, F16 or BF16), row-major.
struct DeviceWeight {
    const void* data = nullptr;
    DType dtype = DType::F32;
    std::int64_t rows = 0, cols = 0;
};

// The scale grid: cells of block_rows x block_cols elements, grid_cols cells per grid row.
struct ScaleGrid {
    std::int64_t block_rows = 1, block_cols = 1, grid_rows = 1, grid_cols = 1;
    std::int64_t cells() const { return grid_rows * grid_cols; }
};

// amax_bits[cell] = largest |x| of the cell as float32 bits (must start at 0); bad_row = lowest row holding a
// NaN or Inf (must start at UINT64_MAX).
void cell_amax(const DeviceWeight& w, const ScaleGrid& g, unsigned int* amax_bits, unsigned long long* bad_row, cudaStream_t s);

// codes[i] = int_max 0 (FP8): e4m3(clamp(x * factor[cell], +-448)); otherwise (INT8, INT4):
// clamp(round_half_even(x / factor[cell]), +-int_max).
void encode(const DeviceWeight& w, const ScaleGrid& g, const float* factor, int int_max, std::uint8_t* codes, cudaStream_t s);

// ConvRot (convrot.cu): out = w with each group of g columns rotated by H_g (kernels/convrot.hpp), float32.
void rotate_groups(const DeviceWeight& w, std::int64_t g, float* out, cudaStream_t s);

// mxfp8 (nvfp4 = false) or nvfp4 round-to-nearest (quantize_blocks.cu): codes [rows * cols], one per element;
// scales [rows * ceil(cols / block)] (2^e, or the e4m3 block scale under nvfp4's global scale); bad_row as
// cell_amax's. The CPU twin is quantize_blocks_cpu.cpp.
void encode_block_scaled(const DeviceWeight& w, bool nvfp4, float global, float* scales, std::uint8_t* codes,
                         unsigned long long* bad_row, cudaStream_t s);
// nvfp4's scale search (Backend::search_block_scales) in place on round-to-nearest's scales and codes, one
// thread per block of 16; block_error2 [rows * blocks] receives each block's round-to-nearest squared error.
// The twin of search_block_scales_cpu: the same scales and codes.
void search_nvfp4_scales(const DeviceWeight& w, float global, float* scales, std::uint8_t* codes, double* block_error2, cudaStream_t s);
// codes[i] = e5m2(clamp(x * multiplier, +-57344)).
void encode_e5m2(const DeviceWeight& w, float multiplier, std::uint8_t* codes, cudaStream_t s);

// How a code byte decodes (numerics.hpp): int8 two's complement (also int4), e4m3, e5m2, E2M1.
enum class CodeKind : int { Int8, E4m3, E5m2, E2m1 };

// y[r] = sum_c (w[r,c] - code_value * scale[cell]) * x[c], in the CPU's 8 fixed lanes and combination order (nvfp4:
// scales already multiplied by the global scale, as the CPU forms global * block scale first).
void residual_gemv(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                   const float* x, float* y, cudaStream_t s);

// out = w as float32 (row-major).
void decode(const DeviceWeight& w, float* out, cudaStream_t s);

}  // namespace quantflow::cuda
