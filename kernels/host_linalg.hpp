// kernels/host_linalg.hpp: dense linear algebra on the host with LAPACK and OpenBLAS, for both backends (the
// randomized SVD's QR factorisations and small SVD, the exact SVD of --full_matrix).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/matrix.hpp"

namespace quantflow {

// OpenBLAS runs single-threaded inside our tasks: every entry point that calls it establishes this itself (the
// setting is process-global, so a caller or another library may have changed it).
void use_single_threaded_blas();

// LAPACK's SVD of a small dense matrix a [m, n] (destroyed): the first k left vectors u [m, k], values and right
// vectors vt [k, n]. gesdd, and gesvd's QR iteration where divide and conquer does not converge.
void host_svd(std::string_view name, Matrix& a, std::int64_t k, Matrix& u, std::vector<float>& sigma, Matrix& vt);

// Replaces the columns of y [rows, cols] (rows >= cols) by an orthonormal basis of their span (QR).
void orthonormalize_columns(Matrix& y);

// R^-1 for the upper Cholesky factor R of the symmetric positive definite g [n, n] (g = R^T R), row-major in
// float; false where the factorisation fails or R's diagonal spans more than 1 / min_ratio (g too
// ill-conditioned for CholeskyQR in float).
bool cholesky_inverse(const double* g, std::int64_t n, double min_ratio, std::vector<float>& r_inverse);

// The eigenvalues of the symmetric g [n, n], descending, and their eigenvectors as the columns of vectors [n, n]
// (row-major). LAPACK dsyevd.
void symmetric_eigen(const double* g, std::int64_t n, std::vector<double>& values, std::vector<double>& vectors);

}  // namespace quantflow
