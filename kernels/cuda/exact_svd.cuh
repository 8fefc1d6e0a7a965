// kernels/cuda/exact_svd.cuh: the exact top-k SVD on the GPU with cuSOLVER (cusolverDnXgesvd), for `--full_matrix`
// on weights whose sides both exceed kExactSvdSide; smaller ones keep LAPACK on the host (milliseconds there, and
// cuSOLVER loads its kernels on first use, 0.16-0.18 s on an H200). gesvd wants a column-major m x n with m >= n:
// the row-major weight already is its transpose in column-major order when cols >= rows; otherwise a kernel writes
// it column by column.
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/rounding.hpp"

namespace quantflow::cuda {

LowRank exact_svd(std::string_view name, const DeviceWeight& w, std::int64_t k, const Stream& stream);

// Device bytes exact_svd holds for a [rows, cols] weight: the float matrix, U and V^T ('S'), the values and
// gesvd's workspace (as measured on an H200, exact_svd.cu).
std::uint64_t exact_svd_device_bytes(std::int64_t rows, std::int64_t cols);

}  // namespace quantflow::cuda
