// Top-k singular subspaces on the CPU (spec 5.3): the randomized range finder with power iterations
// (Halko, Martinsson & Tropp 2011, algorithm 4.4) by default, LAPACK gesdd with --full_matrix.
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <string>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/error.hpp"
#include "kernels/random.hpp"

namespace quantflow {
namespace {

std::string shape_text(std::string_view name, std::int64_t rows, std::int64_t cols) {
    return "tensor '" + std::string(name) + "' [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
}

// SVD of a small dense matrix a [m, n] (destroyed): the first k left vectors, values and right vectors.
void small_svd(std::string_view name, Matrix& a, std::int64_t k, Matrix& u, std::vector<float>& sigma, Matrix& vt) {
    const std::int64_t m = a.rows, n = a.cols, r = std::min(m, n);
    Matrix uu(m, r), vv(r, n);
    std::vector<float> s(static_cast<std::size_t>(r));
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', static_cast<lapack_int>(m), static_cast<lapack_int>(n),
                                     a.data.data(), static_cast<lapack_int>(n), s.data(), uu.data.data(),
                                     static_cast<lapack_int>(r), vv.data.data(), static_cast<lapack_int>(n));
    if (info > 0) {  // gesdd's divide and conquer did not converge: QR iteration is slower but sturdier
        std::vector<float> superb(static_cast<std::size_t>(r));
        info = LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'S', 'S', static_cast<lapack_int>(m), static_cast<lapack_int>(n),
                              a.data.data(), static_cast<lapack_int>(n), s.data(), uu.data.data(),
                              static_cast<lapack_int>(r), vv.data.data(), static_cast<lapack_int>(n), superb.data());
    }
    QF_EXPECT(info == 0, "SVD of " + shape_text(name, m, n) + " failed (LAPACK info " + std::to_string(info) + ")");
    u = Matrix(m, k);
    for (std::int64_t i = 0; i < m; ++i) std::copy_n(uu.row(i), k, u.row(i));
    sigma.assign(s.begin(), s.begin() + k);
    vt = Matrix(k, n);
    std::copy_n(vv.data.data(), k * n, vt.data.data());
}

}  // namespace

LowRank top_k_svd_cpu(std::string_view name, const TensorView& w, const SvdSettings& settings) {
    use_single_threaded_blas();
    const std::int64_t m = w.rows, n = w.cols, small = std::min(m, n);
    const std::int64_t k = std::clamp<std::int64_t>(settings.k, 1, small);
    LowRank out;
    out.rows = m;
    out.cols = n;
    out.k = k;
    Matrix u, vt;
    if (settings.exact) {
        Matrix a = decode_matrix(w);
        small_svd(name, a, k, u, out.sigma, vt);
    } else {  // the products read W in its file dtype (dense_cpu.cpp)
        // The power iterations end on the right: Z = orth(W^T Y), then Y = W Z, and W ~ Y Z^T (Rayleigh-Ritz on
        // span(Z)): the SVD of the tall Y gives U, and V^T = Vy^T Z^T. One product with W fewer than B = Q^T W
        // after the last Y (7 passes at 3 iterations, not 8), for an overlap with the exact top-16 subspaces of
        // >= 0.9993 where B's gave >= 0.9998 (tools/bench_svd_accuracy.py, structured WAN shapes, seeds 0 and 1).
        const std::int64_t l = std::min<std::int64_t>(k + std::max(0, settings.oversample), small);
        Matrix omega(n, l), y(m, l), z(n, l);
        fill_normal(settings.seed, 1.0, omega.data);
        gemm_nn(w, omega.data.data(), l, y.data.data());
        orthonormalize_columns(y);
        for (int i = 0; i < std::max(1, settings.power_iterations); ++i) {
            if (i > 0) orthonormalize_columns(y);
            gemm_tn(w, y.data.data(), l, z.data.data());
            orthonormalize_columns(z);
            gemm_nn(w, z.data.data(), l, y.data.data());
        }
        Matrix vyt;  // the first k right singular vectors of Y [m, l], as rows
        small_svd(name, y, k, u, out.sigma, vyt);
        vt = Matrix(k, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(k), static_cast<int>(n), static_cast<int>(l), 1.0f,
                    vyt.data.data(), static_cast<int>(l), z.data.data(), static_cast<int>(l), 0.0f, vt.data.data(),
                    static_cast<int>(n));
    }
    out.u = std::move(u.data);
    out.v = std::move(vt.data);
    return out;
}

}  // namespace quantflow
