// kernels/cuda/adam_step.cuh: the fused AdamW / RAdam step over the matrix on the tensor cores (spec 5.3).
//
// A step expands the gradient direction and the first moment from the k x k space (G = (U z) V^T, two
// products of K components), updates the second moment and the offsets element by element, and projects the
// new offsets back on V (t = E V, rows x K). Both products run as mma.sync m16n8k8 TF32 with three terms
// (hi*hi + hi*lo + lo*hi of each operand split into two TF32 parts: float32 accuracy), so the step's cost is
// the element-wise update and the memory it moves, not 3 K multiply-adds per element on the CUDA cores.
#pragma once

#include <cstdint>

#include "kernels/adam_rules.hpp"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"

namespace quantflow::cuda {

// Columns of one tile of the step: t_part holds one rows x K slice per tile (summed in tile order after).
inline constexpr std::int64_t kAdamTileCols = 512;
inline std::int64_t adam_column_tiles(std::int64_t cols) { return (cols + kAdamTileCols - 1) / kAdamTileCols; }

// V (K x cols, K = 8 or 16, zero rows beyond the basis) as the step's B fragments, TF32 hi and lo parts.
DeviceBuffer<std::uint32_t> adam_v_fragments(const float* v, int K, std::int64_t cols, cudaStream_t s);

// One step: offsets of buffer st->current -> buffer st->target, second moment in place, t_part[tile, r, :]
// = the new offsets' projection on V over the tile's columns (double). u is rows x K, z the control kernel's
// 2 K x K (gradient direction, first moment). Nothing when st->stopped.
void adam_mma_step(int K, bool adamw, std::int64_t rows, std::int64_t cols, const ScaleGrid& g, const float* scales, const float* u,
                   const float* z, const std::uint32_t* vfrag, const AdamScalars& sc, const AdamLoopState* st, float* d0, float* d1,
                   float* second, double* t_part, cudaStream_t s);

}  // namespace quantflow::cuda
