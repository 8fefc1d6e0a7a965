// kernels/cuda/rounding.cuh: the full-size parts of `original` learned rounding and of the rounding-aware
// finish on the GPU (their k x k loops run on the host, shared with the CPU backend: kernels/cpu/rounding_cpu.hpp;
// AdamW / RAdam run entirely on the device: adam.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/quantize.cuh"
#include "kernels/adam_rules.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow::cuda {

// The fused alternative to skinny.cuh's project_rows_lt (kept as the baseline that tools/bench_skinny_gpu.cu
// measures cuBLASLt against; the backend uses cuBLASLt, which is faster).
// t[r, j] = sum_c e[r, c] * v[j, c] in double, e = code_value * scale - w: the error of the codes projected on
// the k right singular vectors (v is k x cols, row-major). One block per row, fixed reduction order.
void project_rows(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, bool fp8,
                  const float* v, int k, double* t, cudaStream_t s);

// codes <- round(code_value - (uz[r] . v[:, c]) * (FP8: 1/scale, INT8: scale)): the closed form's one rank-k
// correction and the final rounding of spec 5.1/5.2. uz is rows x k.
void correct_codes(const DeviceWeight& w, const ScaleGrid& g, std::uint8_t* codes, const float* scales, bool fp8,
                   const float* uz, const float* v, int k, cudaStream_t s);

// The rounding-aware finish's candidate pass: G = up[r] . v[:, c], e = code_value * scale - w, and
// refine_candidate() for every element (the CPU's rule). Candidates are appended at *count (up to
// `capacity`; the caller checks for overflow); error2_partial[block] gets each block's sum of e^2 (a fixed
// grid, summed in order on the host: deterministic). Returns the number of blocks.
unsigned int refine_candidates(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, bool fp8,
                               const float* up, const float* v, int k, const RefineTables& tables, RefineCandidate* out,
                               unsigned long long* count, unsigned long long capacity, double* error2_partial, cudaStream_t s);
unsigned int refine_blocks(std::int64_t elements);

// codes <- round(code_value + offset[i]) (spec 5.1/5.2 clamp and rounding).
void apply_offsets(std::int64_t elements, bool fp8, const float* offsets, std::uint8_t* codes, cudaStream_t s);

}  // namespace quantflow::cuda
