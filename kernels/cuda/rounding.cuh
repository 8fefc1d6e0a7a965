// kernels/cuda/rounding.cuh: the full-size kernels of learned rounding's primitives on the GPU (the
// RoundingWork of rounding_work.cu; the driver and its k x k loops are kernels/learned_rounding.cpp;
// AdamW / RAdam's fused step is adam.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/quantize.cuh"
#include "kernels/refine_rules.hpp"
#include "kernels/rounding_work.hpp"

namespace quantflow::cuda {

// The fused alternative to skinny.cuh's project_rows_lt (kept as the baseline that tools/bench_skinny_gpu.cu
// measures cuBLASLt against; the backend uses cuBLASLt, which is faster).
// t[r, j] = sum_c e[r, c] * v[j, c] in double, e = code_value * scale - w: the error of the codes projected on
// the k right singular vectors (v is k x cols, row-major). One block per row, fixed reduction order.
void project_rows(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                  const float* v, int k, double* t, cudaStream_t s);

// codes <- round(code_value - (uz[r] . v[:, c]) * (FP8: 1/scale, INT8: scale)): the closed form's one rank-k
// correction and the final rounding of spec 5.1/5.2. uz is rows x k.
void correct_codes(const DeviceWeight& w, const ScaleGrid& g, std::uint8_t* codes, const float* scales, CodeKind kind,
                   const float* uz, const float* v, int k, cudaStream_t s);

// The rounding-aware finish's candidate pass: e = code_value * scale - w and midpoint_move() for every element
// (the CPU's rule). Moves are appended at *count in no particular order (the caller sorts them); at most
// `capacity` are stored, *count says how many there were (the caller retries with a larger buffer).
// error2_partial[block] gets each block's sum of e^2 (a fixed grid, summed in order on the host:
// deterministic). Returns the number of blocks (midpoint_blocks).
unsigned int find_midpoint_moves(const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales, CodeKind kind,
                                 const RefineTables& tables, float cost_share, MidpointMove* out, unsigned long long* count,
                                 unsigned long long capacity, double* error2_partial, cudaStream_t s);
unsigned int midpoint_blocks(std::int64_t elements);

// The selection rule of RoundingWork::midpoint_moves on the device (the CPU's is keep_best_moves): of the `count`
// moves (any order), the `keep` with the largest midpoint_value (ties: the lower element) are written to `kept`
// in element order; all of them, in element order, when count <= keep. row / row_p (rows doubles) and col / col_p
// (cols doubles) are device copies of the query's leverage. Returns the number written.
std::size_t keep_best_moves(const MidpointMove* moves, std::size_t count, std::size_t keep, std::int64_t cols, const double* row,
                            const double* row_p, const double* col, const double* col_p, double priority_extra, double lambda,
                            MidpointMove* kept, cudaStream_t s);

// sum of x[i]^2 over n doubles: fixed per-block trees, then the blocks in order on the host (deterministic).
double sum_squares(const double* x, std::int64_t n, cudaStream_t s);

// codes[move.element] <- grid_step(code, move.step) for each of the `count` moves (distinct elements).
void move_codes(const MidpointMove* moves, std::int64_t count, CodeKind kind, std::uint8_t* codes, cudaStream_t s);

// e[r, c] = (uy[r] . v[:, c]) * scale[cell]^2 in double: uy is rows x k, v is k x cols.
void scaled_low_rank(std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales, const double* uy, const double* v,
                     int k, double* e, cudaStream_t s);

// codes <- round(code_value + offset[i]) (spec 5.1/5.2 clamp and rounding).
void apply_offsets(std::int64_t elements, CodeKind kind, const float* offsets, std::uint8_t* codes, cudaStream_t s);

}  // namespace quantflow::cuda
