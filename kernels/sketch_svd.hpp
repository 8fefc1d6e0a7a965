// kernels/sketch_svd.hpp: the randomized top-k SVD both backends run (spec 5.3; Halko, Martinsson & Tropp 2011,
// algorithm 4.4, with the power iterations ending on the right).
//
// The backend keeps the sketch's two panels, Y [rows, l] and Z [cols, l] (l = k + oversample), where it computes:
// the products with the weight, their Gram matrices in double and their products with small l x l matrices. The
// driver works on the host only with l x l matrices: each orthonormalisation is CholeskyQR2 (Cholesky of the Gram
// matrix, P <- P R^-1, twice), and the final small SVD is the eigendecomposition of Y's Gram matrix. A panel whose
// Gram matrix is too ill-conditioned for that (a zero or low-rank weight) is brought to the host once for
// Householder QR (LAPACK), or for gesdd at the end.
//
// On the GPU this keeps the host out of the O((m + n) l^2) work and keeps every library out of the sketch:
// cuSOLVER's randomized SVD loaded its kernels on first use (0.16-0.18 s for the first wave of layers, H200),
// cuBLASLt's first GEMM of a type costs 70-140 ms, and host Householder QR of a 5120 x 32 panel takes 3.4 ms.
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/rounding.hpp"

namespace quantflow {

enum class SketchPanel { Left, Right };  // Y [rows, l], Z [cols, l]

class SketchPanels {
public:
    virtual ~SketchPanels() = default;
    // A panel's contents to or from the host, row-major [its rows, l].
    virtual void set(SketchPanel p, const float* host) = 0;
    virtual void get(SketchPanel p, float* host) = 0;
    // Left: Y = W Z. Right: Z = W^T Y.
    virtual void multiply(SketchPanel to) = 0;
    // g [l, l] = P^T P, summed in double.
    virtual void gram(SketchPanel p, double* g) = 0;
    // P = P R, r [l, l] row-major.
    virtual void right_multiply(SketchPanel p, const float* r) = 0;
};

// The sketch's width l for a [rows, cols] weight: k + oversample, at most the smaller side.
std::int64_t sketch_columns(std::int64_t rows, std::int64_t cols, const SvdSettings& settings);

// The top-k singular triplets of the [rows, cols] weight whose panels (of sketch_columns' width) `panels` holds
// (settings.exact is not looked at).
LowRank sketch_svd(std::string_view name, std::int64_t rows, std::int64_t cols, const SvdSettings& settings, SketchPanels& panels);

}  // namespace quantflow
