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

}  // namespace quantflow
