#include "kernels/cpu/dense_cpu.hpp"

#include <cblas.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/dtype.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

std::int64_t bands(std::int64_t n, std::int64_t band) { return (n + band - 1) / band; }

}  // namespace

std::int64_t band_rows(std::int64_t cols) { return std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(cols, 1)); }

Matrix decode_matrix(const TensorView& w) {
    Matrix m(w.rows, w.cols);
    const std::int64_t band = band_rows(w.cols);
    oneapi::tbb::parallel_for(std::int64_t{0}, bands(w.rows, band), [&](std::int64_t t) {
        for (std::int64_t r = t * band; r < std::min(w.rows, (t + 1) * band); ++r) decode_row_cpu(w, r, 0, w.cols, m.row(r));
    });
    return m;
}

namespace {

// The SVD's skinny products (p = k + oversampling columns, a few dozen) in plain loops: OpenBLAS packed the
// weight into its panel layout on every call, which cost as much as the multiply (perf: sgemm_otcopy/itcopy
// 14% of a 2-core default run, the kernel 14%), 10 times per layer. Here the skinny side is cut into tiles of
// kTile columns (zero-padded) and the weight is streamed once per tile in its file dtype, a few rows at a time
// decoded into a small buffer (a float copy of the whole weight cost 283 MB per FFN layer, its page faults and
// a pass). Every output is a sum over the long dimension in order, each term added by a fused multiply-add
// (std::fma, QF_FMA_CLONES): the same bits on every vector width, thread count and x86-64 (FMA halved the
// arithmetic of the separate multiply and add, which bound the products).
constexpr std::int64_t kTile = 32;       // output columns per pass over the weight
constexpr std::int64_t kRowBlock = 8;    // rows of A sharing each tile row (gemm_nn): 16 accumulators of 16 lanes
constexpr std::int64_t kSweepRows = 8;   // rows of A added per sweep of z (gemm_tn)
constexpr std::int64_t kColBand = 1024;  // columns of A per task (gemm_tn): runs of 4 KB per row (256: 35 ms, 1024: 19 ms)

// Columns [t0, t0 + kTile) of b [rows, p] as rows x kTile floats, zero-padded.
std::vector<float> tile_of(const float* b, std::int64_t rows, std::int64_t p, std::int64_t t0) {
    std::vector<float> t(static_cast<std::size_t>(rows * kTile), 0.0f);
    const std::int64_t w = std::min(kTile, p - t0);
    for (std::int64_t r = 0; r < rows; ++r) std::copy_n(b + r * p + t0, w, t.data() + r * kTile);
    return t;
}

// The weight's row spans that the next block will decode, fetched into the cache while this block computes: the
// decode waited on memory (perf: 13% of a 2-core default run on its first load).
struct Ahead {
    const char* first = nullptr;  // the first span's first byte; nullptr: no next block
    std::int64_t stride = 0;      // bytes from one span to the next
    std::int64_t rows = 0;
    std::int64_t elem = 4;        // bytes per element

    Ahead() = default;
    Ahead(const TensorView& w, std::int64_t row, std::int64_t rows_, std::int64_t col)
        : first(reinterpret_cast<const char*>(w.data)), stride(0), rows(rows_),
          elem(dtype_bits(w.dtype) / 8) {
        stride = w.cols * elem;
        first += row * stride + col * elem;
        if (rows <= 0) first = nullptr;
    }
    // Called at element c of the block's loop: the lines where the spans' element c starts a new 64 bytes.
    void fetch(std::int64_t c) const {
        if (first == nullptr || ((c * elem) & 63) != 0) return;
        for (std::int64_t i = 0; i < rows; ++i) __builtin_prefetch(first + i * stride + c * elem);
    }
};

// out[i, :] = a[i, :] tile for the rows i < rows (<= kRowBlock) of a [rows, n]: out is rows x kTile.
QF_FMA_CLONES void nn_block(const float* __restrict a, std::int64_t n, const float* __restrict tile, std::int64_t rows,
                            float* __restrict out, const Ahead& ahead) {
    if (rows == kRowBlock) {
        float acc[kRowBlock][kTile] = {};
        for (std::int64_t c = 0; c < n; ++c) {
            ahead.fetch(c);
            const float* t = tile + c * kTile;
            for (std::int64_t i = 0; i < kRowBlock; ++i) {
                const float w = a[i * n + c];
                for (std::int64_t j = 0; j < kTile; ++j) acc[i][j] = std::fma(w, t[j], acc[i][j]);
            }
        }
        for (std::int64_t i = 0; i < kRowBlock; ++i) std::copy_n(acc[i], kTile, out + i * kTile);
        return;
    }
    for (std::int64_t i = 0; i < rows; ++i) {
        float acc[kTile] = {};
        const float* ar = a + i * n;
        for (std::int64_t c = 0; c < n; ++c)
            for (std::int64_t j = 0; j < kTile; ++j) acc[j] = std::fma(ar[c], tile[c * kTile + j], acc[j]);
        std::copy_n(acc, kTile, out + i * kTile);
    }
}

// z[c, :] += sum over i < rows (<= kSweepRows) of a[i, c] tile[i, :] for c < cols, i in order: a is rows x cols,
// tile rows x kTile, z cols x kTile.
QF_FMA_CLONES void tn_sweep(const float* __restrict a, std::int64_t rows, std::int64_t cols, const float* __restrict tile,
                            float* __restrict z, const Ahead& ahead) {
    if (rows == kSweepRows) {
        for (std::int64_t c = 0; c < cols; ++c) {
            ahead.fetch(c);
            float* __restrict zc = z + c * kTile;
            float w[kSweepRows];
            for (std::int64_t i = 0; i < kSweepRows; ++i) w[i] = a[i * cols + c];
            for (std::int64_t j = 0; j < kTile; ++j) {
                float s = zc[j];
                for (std::int64_t i = 0; i < kSweepRows; ++i) s = std::fma(w[i], tile[i * kTile + j], s);
                zc[j] = s;
            }
        }
        return;
    }
    for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t c = 0; c < cols; ++c) {
            float* __restrict zc = z + c * kTile;
            const float w = a[i * cols + c];
            for (std::int64_t j = 0; j < kTile; ++j) zc[j] = std::fma(w, tile[i * kTile + j], zc[j]);
        }
}

}  // namespace

void gemm_nn(const TensorView& a, const float* b, std::int64_t p, float* c) {
    constexpr std::int64_t kBand = 64;
    const std::int64_t m = a.rows, n = a.cols;
    for (std::int64_t t0 = 0; t0 < p; t0 += kTile) {
        const std::vector<float> tile = tile_of(b, n, p, t0);
        const std::int64_t w = std::min(kTile, p - t0);
        oneapi::tbb::parallel_for(std::int64_t{0}, bands(m, kBand), [&](std::int64_t t) {
            const std::int64_t r0 = t * kBand, r1 = std::min(m, r0 + kBand);
            const auto rows = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(kRowBlock * n));
            float out[kRowBlock * kTile];
            for (std::int64_t r = r0; r < r1; r += kRowBlock) {
                const std::int64_t count = std::min(kRowBlock, r1 - r);
                for (std::int64_t i = 0; i < count; ++i) decode_row_cpu(a, r + i, 0, n, rows.get() + i * n);
                nn_block(rows.get(), n, tile.data(), count, out, Ahead(a, r + kRowBlock, std::min(kRowBlock, r1 - r - kRowBlock), 0));
                for (std::int64_t i = 0; i < count; ++i) std::copy_n(out + i * kTile, w, c + (r + i) * p + t0);
            }
        });
    }
}

void gemm_tn(const TensorView& a, const float* b, std::int64_t p, float* c) {
    const std::int64_t m = a.rows, n = a.cols;
    for (std::int64_t t0 = 0; t0 < p; t0 += kTile) {
        const std::vector<float> tile = tile_of(b, m, p, t0);
        const std::int64_t w = std::min(kTile, p - t0);
        oneapi::tbb::parallel_for(std::int64_t{0}, bands(n, kColBand), [&](std::int64_t t) {
            const std::int64_t c0 = t * kColBand, cols = std::min(n, c0 + kColBand) - c0;
            std::vector<float> z(static_cast<std::size_t>(cols * kTile), 0.0f);
            const auto rows = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(kSweepRows * cols));
            for (std::int64_t r = 0; r < m; r += kSweepRows) {
                const std::int64_t count = std::min(kSweepRows, m - r);
                for (std::int64_t i = 0; i < count; ++i) decode_row_cpu(a, r + i, c0, cols, rows.get() + i * cols);
                tn_sweep(rows.get(), count, cols, tile.data() + r * kTile, z.data(),
                         Ahead(a, r + kSweepRows, std::min(kSweepRows, m - r - kSweepRows), c0));
            }
            for (std::int64_t i = 0; i < cols; ++i) std::copy_n(z.data() + i * kTile, w, c + (c0 + i) * p + t0);
        });
    }
}

std::array<float, 256> code_values(QuantFormat format) {
    std::array<float, 256> v{};
    for (int c = 0; c < 256; ++c)
        v[static_cast<std::size_t>(c)] = code_value(format, static_cast<std::uint8_t>(c));
    return v;
}

void row_scales(const QuantizedTensor& q, std::int64_t r, float* out) {
    const std::int64_t block_rows = scale_block_rows(q.spec, q.rows), block_cols = scale_block_cols(q.spec, q.cols);
    const std::int64_t grid_cols = scale_cols(q.spec, q.cols);
    const float* s = q.scales.data() + (r / block_rows) * grid_cols;
    for (std::int64_t b = 0; b < grid_cols; ++b)
        std::fill(out + b * block_cols, out + std::min((b + 1) * block_cols, q.cols), q.global_scale * s[b]);
}

RowScales::RowScales(const QuantizedTensor& q)
    : q_(q), block_rows_(std::max<std::int64_t>(1, scale_block_rows(q.spec, q.rows))), d_(static_cast<std::size_t>(q.cols)) {}

const float* RowScales::at(std::int64_t r) {
    if (r / block_rows_ != filled_) {
        row_scales(q_, r, d_.data());
        filled_ = r / block_rows_;
    }
    return d_.data();
}

}  // namespace quantflow

namespace quantflow {

std::vector<double> project_error(const LowRank& basis,
                                  const std::function<void(std::int64_t, std::int64_t, float*, float*)>& fill) {
    const std::int64_t m = basis.rows, n = basis.cols, k = basis.k;
    Matrix t(m, k);
    const std::int64_t band = band_rows(n);
    oneapi::tbb::parallel_for(std::int64_t{0}, (m + band - 1) / band, [&](std::int64_t b) {
        const std::int64_t r0 = b * band, rows = std::min(m, r0 + band) - r0;
        // Not zeroed: fill writes every element (zeroing them was 2% of a default run, perf).
        const auto e = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(rows * n));
        const auto scratch = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(rows * n));
        fill(r0, rows, e.get(), scratch.get());
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(k), static_cast<int>(n),
                    1.0f, e.get(), static_cast<int>(n), basis.v.data(), static_cast<int>(n), 0.0f, t.row(r0),
                    static_cast<int>(k));
    });
    return reduce_projection(basis, t);
}

std::vector<double> project_error_f64(const LowRank& basis, const std::function<void(std::int64_t, std::int64_t, double*)>& fill) {
    const std::int64_t m = basis.rows, n = basis.cols, k = basis.k;
    const std::vector<double> v(basis.v.begin(), basis.v.end());
    std::vector<double> t(static_cast<std::size_t>(m * k));
    const std::int64_t band = band_rows(n);
    oneapi::tbb::parallel_for(std::int64_t{0}, (m + band - 1) / band, [&](std::int64_t b) {
        const std::int64_t r0 = b * band, rows = std::min(m, r0 + band) - r0;
        const auto e = std::make_unique_for_overwrite<double[]>(static_cast<std::size_t>(rows * n));  // fill writes it all
        fill(r0, rows, e.get());
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(k), static_cast<int>(n),
                    1.0, e.get(), static_cast<int>(n), v.data(), static_cast<int>(n), 0.0, t.data() + r0 * k, static_cast<int>(k));
    });
    return reduce_projection(basis, t.data());
}

std::vector<double> reduce_projection(const LowRank& basis, const double* t) {
    const std::int64_t k = basis.k;
    std::vector<double> p(static_cast<std::size_t>(k * k), 0.0);
    for (std::int64_t r = 0; r < basis.rows; ++r)
        for (std::int64_t i = 0; i < k; ++i)
            for (std::int64_t j = 0; j < k; ++j)
                p[static_cast<std::size_t>(i * k + j)] += static_cast<double>(basis.u[static_cast<std::size_t>(r * k + i)]) * t[r * k + j];
    return p;
}

std::vector<double> reduce_projection(const LowRank& basis, const Matrix& t) {
    const std::int64_t k = basis.k;
    std::vector<double> p(static_cast<std::size_t>(k * k), 0.0);
    for (std::int64_t r = 0; r < basis.rows; ++r) {
        const float* u = basis.u.data() + r * k;
        const float* tr = t.row(r);
        for (std::int64_t i = 0; i < k; ++i)
            for (std::int64_t j = 0; j < k; ++j) p[static_cast<std::size_t>(i * k + j)] += static_cast<double>(u[i]) * tr[j];
    }
    return p;
}

Matrix times_u(const LowRank& basis, const std::vector<double>& z) {
    const std::int64_t k = basis.k;
    Matrix out(basis.rows, k);
    std::vector<float> zf(z.begin(), z.end());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(basis.rows), static_cast<int>(k), static_cast<int>(k), 1.0f,
                basis.u.data(), static_cast<int>(k), zf.data(), static_cast<int>(k), 0.0f, out.data.data(), static_cast<int>(k));
    return out;
}

void low_rank_rows(const Matrix& uz, const LowRank& basis, std::int64_t r0, std::int64_t rows, float* out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(basis.cols),
                static_cast<int>(basis.k), 1.0f, uz.row(r0), static_cast<int>(basis.k), basis.v.data(), static_cast<int>(basis.cols),
                0.0f, out, static_cast<int>(basis.cols));
}


}  // namespace quantflow
