// kernels/cpu/block_rows_cpu.hpp: one row of mxfp8 / nvfp4 round-to-nearest (notes/comfyui-new-formats.md 4-5),
// each step a loop the compiler vectorises (QF_VECTOR_CLONES). Blocks run along the row, 32 (mxfp8) or 16
// (nvfp4) elements, the last one possibly partial. Every value is the float32 operation comfy-kitchen's eager
// quantizer performs (divisions stay divisions), so the bytes equal the scalar twins in numerics.hpp on every
// ISA level (test_block_rows.cpp).
#pragma once

#include <cstdint>

namespace quantflow {

// mxfp8: scales[b] = e8m0_to_f32(mxfp8_scale_byte(amax of block b)), codes[i] = e4m3(x[i] / 2^e), an all-zero
// block's codes 0. Returns false, with scales and codes unspecified, when x holds NaN or Inf.
bool mxfp8_row_cpu(const float* x, std::int64_t n, float* scales, std::uint8_t* codes);

// nvfp4 with global scale `global`: scales[b] = e4m3 round trip of min((amax / 6) / global, 448), codes as
// nvfp4_codes_cpu. Returns false, with scales and codes unspecified, when x holds NaN or Inf.
bool nvfp4_row_cpu(const float* x, std::int64_t n, float global, float* scales, std::uint8_t* codes);

// nvfp4 codes from given block scales: f32_to_e2m1(x[i] / (global * scale)), code 0 in a block of scale 0.
void nvfp4_codes_cpu(const float* x, std::int64_t n, float global, const float* scales, std::uint8_t* codes);

// One block of n <= 16: f32_to_e2m1(x[i] / total) for any total (no zero-block rule; the scale search's trials).
void e2m1_block_cpu(const float* x, std::int64_t n, float total, std::uint8_t* codes);

}  // namespace quantflow
