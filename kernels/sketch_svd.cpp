#include "kernels/sketch_svd.hpp"

#include <cblas.h>

#include <algorithm>
#include <string>

#include "kernels/host_linalg.hpp"
#include "kernels/random.hpp"

namespace quantflow {

LowRank sketch_svd(std::string_view name, std::int64_t rows, std::int64_t cols, const SvdSettings& settings, SketchProducts& products) {
    use_single_threaded_blas();
    const std::int64_t m = rows, n = cols, small = std::min(m, n);
    const std::int64_t k = std::clamp<std::int64_t>(settings.k, 1, small);
    // The power iterations end on the right: Z = orth(W^T Y), then Y = W Z, and W ~ Y Z^T (Rayleigh-Ritz on
    // span(Z)): the SVD of the tall Y gives U, and V^T = Vy^T Z^T. One product with W fewer than B = Q^T W
    // after the last Y (7 passes at 3 iterations, not 8), for an overlap with the exact top-16 subspaces of
    // >= 0.9993 where B's gave >= 0.9998 (tools/bench_svd_accuracy.py, structured WAN shapes, seeds 0 and 1).
    const std::int64_t l = std::min<std::int64_t>(k + std::max(0, settings.oversample), small);
    Matrix omega(n, l), y(m, l), z(n, l);
    fill_normal(settings.seed, 1.0, omega.data);
    products.times(omega.data.data(), l, y.data.data());
    orthonormalize_columns(y);
    for (int i = 0; i < std::max(1, settings.power_iterations); ++i) {
        if (i > 0) orthonormalize_columns(y);
        products.times_transposed(y.data.data(), l, z.data.data());
        orthonormalize_columns(z);
        products.times(z.data.data(), l, y.data.data());
    }
    LowRank out;
    out.rows = m;
    out.cols = n;
    out.k = k;
    Matrix u, vyt;  // the first k right singular vectors of Y [m, l], as rows
    host_svd(name, y, k, u, out.sigma, vyt);
    Matrix vt(k, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(k), static_cast<int>(n), static_cast<int>(l), 1.0f,
                vyt.data.data(), static_cast<int>(l), z.data.data(), static_cast<int>(l), 0.0f, vt.data.data(), static_cast<int>(n));
    out.u = std::move(u.data);
    out.v = std::move(vt.data);
    return out;
}

}  // namespace quantflow
