#include "kernels/host_linalg.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <string>

#include "kernels/error.hpp"

namespace quantflow {

void use_single_threaded_blas() { openblas_set_num_threads(1); }

void host_svd(std::string_view name, Matrix& a, std::int64_t k, Matrix& u, std::vector<float>& sigma, Matrix& vt) {
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
    QF_EXPECT(info == 0, "SVD of tensor '" + std::string(name) + "' [" + std::to_string(m) + ", " + std::to_string(n) +
                             "] failed (LAPACK info " + std::to_string(info) + ")");
    u = Matrix(m, k);
    for (std::int64_t i = 0; i < m; ++i) std::copy_n(uu.row(i), k, u.row(i));
    sigma.assign(s.begin(), s.begin() + k);
    vt = Matrix(k, n);
    std::copy_n(vv.data.data(), k * n, vt.data.data());
}

void orthonormalize_columns(Matrix& y) {
    const auto m = static_cast<lapack_int>(y.rows), n = static_cast<lapack_int>(y.cols);
    std::vector<float> tau(static_cast<std::size_t>(n));
    lapack_int info = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, m, n, y.data.data(), n, tau.data());
    if (info == 0) info = LAPACKE_sorgqr(LAPACK_ROW_MAJOR, m, n, n, y.data.data(), n, tau.data());
    QF_EXPECT(info == 0, "QR of a " + std::to_string(m) + "x" + std::to_string(n) + " sketch failed (LAPACK info " +
                             std::to_string(info) + ")");
}

bool cholesky_inverse(const double* g, std::int64_t n, double min_ratio, std::vector<float>& r_inverse) {
    std::vector<double> r(g, g + n * n);
    const auto ln = static_cast<lapack_int>(n);
    if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', ln, r.data(), ln) != 0) return false;
    double lo = r[0], hi = r[0];
    for (std::int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, r[static_cast<std::size_t>(i * n + i)]);
        hi = std::max(hi, r[static_cast<std::size_t>(i * n + i)]);
    }
    if (!(lo > min_ratio * hi)) return false;
    if (LAPACKE_dtrtri(LAPACK_ROW_MAJOR, 'U', 'N', ln, r.data(), ln) != 0) return false;
    r_inverse.assign(static_cast<std::size_t>(n * n), 0.0f);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = i; j < n; ++j) r_inverse[static_cast<std::size_t>(i * n + j)] = static_cast<float>(r[static_cast<std::size_t>(i * n + j)]);
    return true;
}

void symmetric_eigen(const double* g, std::int64_t n, std::vector<double>& values, std::vector<double>& vectors) {
    std::vector<double> a(g, g + n * n), w(static_cast<std::size_t>(n));
    const auto ln = static_cast<lapack_int>(n);
    const lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', ln, a.data(), ln, w.data());
    QF_EXPECT(info == 0, "eigendecomposition of a " + std::to_string(n) + "x" + std::to_string(n) + " Gram matrix failed (LAPACK info " +
                             std::to_string(info) + ")");
    values.resize(static_cast<std::size_t>(n));
    vectors.resize(static_cast<std::size_t>(n * n));
    for (std::int64_t j = 0; j < n; ++j) {  // ascending from LAPACK: column n - 1 - j is the j-th largest
        values[static_cast<std::size_t>(j)] = w[static_cast<std::size_t>(n - 1 - j)];
        for (std::int64_t i = 0; i < n; ++i) vectors[static_cast<std::size_t>(i * n + j)] = a[static_cast<std::size_t>(i * n + n - 1 - j)];
    }
}

}  // namespace quantflow
