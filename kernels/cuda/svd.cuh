// kernels/cuda/svd.cuh: top-k singular subspaces with cuSOLVER's randomized SVD (cusolverDnXgesvdr).
#pragma once

#include "kernels/cuda/handles.cuh"
#include "kernels/rounding.hpp"

namespace quantflow::cuda {

// w_f32: the weight as row-major float32 on the device (overwritten). Oversampling and power iterations come
// from `settings`, clamped so that k + p <= min(rows, cols) (cuSOLVER's rule).
LowRank randomized_svd(Solver& solver, const Stream& stream, float* w_f32, std::int64_t rows, std::int64_t cols,
                       const SvdSettings& settings);

}  // namespace quantflow::cuda
