// kernels/cpu/dense_cpu.hpp: dense float32 building blocks of the CPU backend's SVD, learned rounding and
// quality metrics (private to kernels/cpu).
//
// Products are split into fixed bands run in oneTBB tasks (the SVD's skinny ones in plain loops, the rest one
// single-threaded OpenBLAS call per band):
// the partition does not depend on the thread count, no band sums another band's terms, so every result
// is bit-identical whatever the parallelism (OpenBLAS's own threads are switched off by the backend).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kernels/host_linalg.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"

namespace quantflow {

// The whole weight as float32 (exact for F32/F16/BF16).
Matrix decode_matrix(const TensorView& w);

// The SVD's skinny products with the weight A [m, n] in its file dtype (B and C float, row-major):
// C = A * B, B [n, p], C [m, p]: bands of A's rows.
void gemm_nn(const TensorView& a, const float* b, std::int64_t p, float* c);
// C = A^T * B, B [m, p], C [n, p]: bands of A's columns.
void gemm_tn(const TensorView& a, const float* b, std::int64_t p, float* c);

// The 256 values a code byte decodes to (e4m3 or int8), before the scale.
std::array<float, 256> code_values(QuantFormat format);

// The dequantization scale of every column of row r (expanded from the scale grid), out has q.cols entries.
void row_scales(const QuantizedTensor& q, std::int64_t r, float* out);

// row_scales for the rows of a pass in order, expanded again only where a row starts another row of the scale grid:
// once per band for per-tensor scales, where expanding every row was 2.4% of a 2-core default run (perf).
class RowScales {
public:
    explicit RowScales(const QuantizedTensor& q);
    const float* at(std::int64_t r);

private:
    const QuantizedTensor& q_;
    std::int64_t block_rows_, filled_ = -1;
    std::vector<float> d_;
};

// Rows per band for a band-parallel pass over a [rows, cols] matrix (about 256 KiB of floats per band).
std::int64_t band_rows(std::int64_t cols);

}  // namespace quantflow

namespace quantflow {

// P = U^T E V^T (k x k, accumulated in double) for an error matrix E [basis.rows, basis.cols] produced band
// by band: fill(r0, rows, e, scratch) writes rows r0..r0+rows-1 of E into e (rows x cols); scratch has the
// same size for the callback's own use.
std::vector<double> project_error(const LowRank& basis,
                                  const std::function<void(std::int64_t, std::int64_t, float*, float*)>& fill);

// The same in double precision throughout (fill writes doubles): for the closed forms, whose decisions
// depend on losses far below float32 resolution of the error.
std::vector<double> project_error_f64(const LowRank& basis, const std::function<void(std::int64_t, std::int64_t, double*)>& fill);

// P = U^T T for T = E V^T [basis.rows, k], summed in double in row order.
std::vector<double> reduce_projection(const LowRank& basis, const Matrix& t);
std::vector<double> reduce_projection(const LowRank& basis, const double* t);

// U * Z for a k x k Z (double): basis.rows x k floats.
Matrix times_u(const LowRank& basis, const std::vector<double>& z);
// Rows r0 .. r0+rows-1 of (U Z) V, given uz = times_u(basis, z): rows x basis.cols floats into out.
void low_rank_rows(const Matrix& uz, const LowRank& basis, std::int64_t r0, std::int64_t rows, float* out);


}  // namespace quantflow
