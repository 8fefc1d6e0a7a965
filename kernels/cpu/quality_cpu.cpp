// Error metrics of a quantized layer against its original (compare, --report), band by band: the weight is
// never held in float32 as a whole.
#include <cblas.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/error.hpp"

namespace quantflow {

QualityMetrics measure_cpu(const TensorView& w, const QuantizedTensor& q, const LowRank* basis, const QualityInputs& in) {
    use_single_threaded_blas();
    const std::int64_t m = w.rows, n = w.cols, samples = in.samples;
    QF_EXPECT(static_cast<std::int64_t>(in.x.size()) == n * samples, "measure: test inputs do not match the weight width");
    const std::int64_t k = basis ? basis->k : 0;
    const auto values = code_values(q.spec.format);
    const std::int64_t band = band_rows(n);
    const std::int64_t count = (m + band - 1) / band;
    struct Partial {
        double w2 = 0, e2 = 0, y2 = 0, d2 = 0;
    };
    std::vector<Partial> partial(static_cast<std::size_t>(count));
    Matrix t(m, std::max<std::int64_t>(k, 1));
    oneapi::tbb::parallel_for(std::int64_t{0}, count, [&](std::int64_t b) {
        const std::int64_t r0 = b * band, rows = std::min(m, r0 + band) - r0;
        std::vector<float> wb(static_cast<std::size_t>(rows * n)), eb(wb.size());
        RowScales scales(q);
        Partial& acc = partial[static_cast<std::size_t>(b)];
        for (std::int64_t i = 0; i < rows; ++i) {
            float* wr = wb.data() + i * n;
            float* er = eb.data() + i * n;
            decode_row_cpu(w, r0 + i, 0, n, wr);
            const float* d = scales.at(r0 + i);
            const std::uint8_t* codes = q.codes.data() + (r0 + i) * n;
            for (std::int64_t c = 0; c < n; ++c) {
                er[c] = values[codes[c]] * d[c] - wr[c];
                acc.w2 += static_cast<double>(wr[c]) * wr[c];
                acc.e2 += static_cast<double>(er[c]) * er[c];
            }
        }
        if (basis)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(k), static_cast<int>(n),
                        1.0f, eb.data(), static_cast<int>(n), basis->v.data(), static_cast<int>(n), 0.0f, t.row(r0),
                        static_cast<int>(k));
        if (samples == 0) return;
        std::vector<float> y(static_cast<std::size_t>(rows * samples)), dy(y.size());
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(samples),
                    static_cast<int>(n), 1.0f, wb.data(), static_cast<int>(n), in.x.data(), static_cast<int>(samples), 0.0f,
                    y.data(), static_cast<int>(samples));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(samples),
                    static_cast<int>(n), 1.0f, eb.data(), static_cast<int>(n), in.x.data(), static_cast<int>(samples), 0.0f,
                    dy.data(), static_cast<int>(samples));
        for (std::int64_t i = 0; i < rows; ++i) {
            const auto r = static_cast<std::size_t>(r0 + i);
            const double b0 = in.bias.empty() ? 0.0 : in.bias[r];
            const double db = in.bias.empty() || in.bias_new.empty() ? 0.0 : static_cast<double>(in.bias_new[r]) - in.bias[r];
            for (std::int64_t s = 0; s < samples; ++s) {
                const double yv = y[static_cast<std::size_t>(i * samples + s)] + b0;
                const double dv = dy[static_cast<std::size_t>(i * samples + s)] + db;
                acc.y2 += yv * yv;
                acc.d2 += dv * dv;
            }
        }
    });
    Partial total;
    for (const auto& p : partial) {
        total.w2 += p.w2;
        total.e2 += p.e2;
        total.y2 += p.y2;
        total.d2 += p.d2;
    }
    QualityMetrics out{std::sqrt(total.w2), std::sqrt(total.e2), 0.0, std::sqrt(total.y2), std::sqrt(total.d2)};
    if (basis) out.projected_error = frobenius(reduce_projection(*basis, t));
    return out;
}

}  // namespace quantflow
