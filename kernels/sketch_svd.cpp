#include "kernels/sketch_svd.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/host_linalg.hpp"
#include "kernels/random.hpp"

namespace quantflow {
namespace {

// CholeskyQR's first pass takes panels whose Cholesky factor's diagonal spans at most 1e5 (the float panel
// P R^-1 then deviates from orthonormal by about 1e5 float epsilons, 6e-3, which the second pass removes); the
// second pass's panel is near orthonormal, so its factor's diagonal must too. Others go to Householder QR.
constexpr double kFirstPassRatio = 1e-5, kSecondPassRatio = 0.5;
// The final SVD divides by the k-th singular value: it must be at least this fraction of the first.
constexpr double kSmallestSigma = 1e-5;

struct Sketch {
    SketchPanels& panels;
    std::int64_t rows, cols, l;
    std::int64_t length(SketchPanel p) const { return p == SketchPanel::Left ? rows : cols; }

    void householder(SketchPanel p) {
        Matrix a(length(p), l);
        panels.get(p, a.data.data());
        orthonormalize_columns(a);
        panels.set(p, a.data.data());
    }

    void orthonormalize(SketchPanel p) {
        std::vector<double> g(static_cast<std::size_t>(l * l));
        std::vector<float> r_inverse;
        for (const double ratio : {kFirstPassRatio, kSecondPassRatio}) {
            panels.gram(p, g.data());
            if (!cholesky_inverse(g.data(), l, ratio, r_inverse)) return householder(p);
            panels.right_multiply(p, r_inverse.data());
        }
    }
};

}  // namespace

std::int64_t sketch_columns(std::int64_t rows, std::int64_t cols, const SvdSettings& settings) {
    const std::int64_t small = std::min(rows, cols), k = std::clamp<std::int64_t>(settings.k, 1, small);
    return std::min<std::int64_t>(k + std::max(0, settings.oversample), small);
}

LowRank sketch_svd(std::string_view name, std::int64_t rows, std::int64_t cols, const SvdSettings& settings, SketchPanels& panels) {
    use_single_threaded_blas();
    const std::int64_t m = rows, n = cols, k = std::clamp<std::int64_t>(settings.k, 1, std::min(m, n));
    const std::int64_t l = sketch_columns(rows, cols, settings);
    Sketch sketch{panels, m, n, l};
    // The power iterations end on the right: Z = orth(W^T Y), then Y = W Z, and W ~ Y Z^T (Rayleigh-Ritz on
    // span(Z)): the SVD of the tall Y gives U, and V^T = Vy^T Z^T. One product with W fewer than B = Q^T W
    // after the last Y (7 passes at 3 iterations, not 8), for an overlap with the exact top-16 subspaces of
    // >= 0.9993 where B's gave >= 0.9998 (tools/bench_svd_accuracy.py, structured WAN shapes, seeds 0 and 1).
    {
        std::vector<float> omega(static_cast<std::size_t>(n * l));
        fill_signs(settings.seed, omega);
        panels.set(SketchPanel::Right, omega.data());
    }
    panels.multiply(SketchPanel::Left);
    sketch.orthonormalize(SketchPanel::Left);
    for (int i = 0; i < std::max(1, settings.power_iterations); ++i) {
        if (i > 0) sketch.orthonormalize(SketchPanel::Left);
        panels.multiply(SketchPanel::Right);
        sketch.orthonormalize(SketchPanel::Right);
        panels.multiply(SketchPanel::Left);
    }
    LowRank out;
    out.rows = m;
    out.cols = n;
    out.k = k;
    // Y = Uy S Vy^T from Y^T Y = Vy S^2 Vy^T: U = Y Vy S^-1 (the first k columns of Y Vy [S^-1 | 0]).
    std::vector<double> g(static_cast<std::size_t>(l * l)), values, vectors;
    panels.gram(SketchPanel::Left, g.data());
    symmetric_eigen(g.data(), l, values, vectors);
    Matrix u(m, l), vyt(k, l);
    const double top = std::sqrt(std::max(values[0], 0.0));
    if (top > 0 && std::sqrt(std::max(values[static_cast<std::size_t>(k - 1)], 0.0)) >= kSmallestSigma * top) {
        std::vector<float> scaled(static_cast<std::size_t>(l * l), 0.0f);
        for (std::int64_t j = 0; j < k; ++j) {
            const double sigma = std::sqrt(values[static_cast<std::size_t>(j)]);
            out.sigma.push_back(static_cast<float>(sigma));
            for (std::int64_t i = 0; i < l; ++i) {
                const double v = vectors[static_cast<std::size_t>(i * l + j)];
                scaled[static_cast<std::size_t>(i * l + j)] = static_cast<float>(v / sigma);
                vyt.row(j)[i] = static_cast<float>(v);
            }
        }
        panels.right_multiply(SketchPanel::Left, scaled.data());
        panels.get(SketchPanel::Left, u.data.data());
    } else {  // rank below k (a zero or low-rank weight): LAPACK's SVD of Y on the host
        panels.get(SketchPanel::Left, u.data.data());
        Matrix uk;
        host_svd(name, u, k, uk, out.sigma, vyt);
        u = std::move(uk);
    }
    Matrix uk(m, k), z(n, l), vt(k, n);
    for (std::int64_t r = 0; r < m; ++r) std::copy_n(u.row(r), k, uk.row(r));
    panels.get(SketchPanel::Right, z.data.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(k), static_cast<int>(n), static_cast<int>(l), 1.0f,
                vyt.data.data(), static_cast<int>(l), z.data.data(), static_cast<int>(l), 0.0f, vt.data.data(), static_cast<int>(n));
    out.u = std::move(uk.data);
    out.v = std::move(vt.data);
    return out;
}

}  // namespace quantflow
