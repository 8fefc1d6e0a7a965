// kernels/sketch_svd.hpp: the randomized top-k SVD both backends run (spec 5.3; Halko, Martinsson & Tropp 2011,
// algorithm 4.4, with the power iterations ending on the right). The backend supplies the two products with the
// weight; the sketch's QR factorisations and the small SVD run on the host with LAPACK. They are O((m + n) l^2)
// on l = k + oversample columns, against the products' O(m n l), and on the GPU they keep cuSOLVER out of
// the conversion: its randomized SVD loaded its kernels on first use, which held the first wave of layers
// 0.16-0.18 s each (H200, issue 10's stop-23 note).
#pragma once

#include <cstdint>
#include <string_view>

#include "kernels/rounding.hpp"

namespace quantflow {

// The products of one weight W [rows, cols] with the sketch's columns (row-major float matrices).
class SketchProducts {
public:
    virtual ~SketchProducts() = default;
    // y [rows, l] = W x, x [cols, l].
    virtual void times(const float* x, std::int64_t l, float* y) = 0;
    // z [cols, l] = W^T y, y [rows, l].
    virtual void times_transposed(const float* y, std::int64_t l, float* z) = 0;
};

// The top-k singular triplets of the [rows, cols] weight behind `products` (settings.exact is not looked at).
LowRank sketch_svd(std::string_view name, std::int64_t rows, std::int64_t cols, const SvdSettings& settings, SketchProducts& products);

}  // namespace quantflow
