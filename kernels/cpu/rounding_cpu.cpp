// Learned rounding, `original` optimizer, in closed form (spec 5.3).
//
// The reference's loop, in dequantized space (D = stored scale, m = 1/D the FP8 multiplier):
//   FP8:  q -= lr * (U (P/L) V) * m   =>  W_hat -= lr * U (P/L) V          (the scale cancels)
//   INT8: q -= lr * (U (P/L) V) * D   =>  W_hat -= lr * (U (P/L) V) * D^2  (the block scale enters twice)
// Every step moves W_hat by U Y V for some k x k Y, so the iterates stay in {W_hat0 - (U Z V) * D^2}
// (INT8) or {W_hat0 - U Z V} (FP8) and the projected error follows P(Z) = P0 - A(Z) with
//   A(Y) = U^T ((U Y V) * D^2) V^T   (INT8),   A = identity (FP8: P stays parallel to P0, L(t+1) = |L(t) - lr|).
// So the loop runs on k x k matrices: Z accumulates lr * P/L, the schedule sees the same losses, and only
// the kept Z is applied to the M x N codes, once, before the final rounding. For INT8 A is a k^2 x k^2
// matrix built from per-block Gram matrices (KSpace), or applied with full-size products when k is too big
// for that to pay (Direct).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

// A(Y) with full-size products (4 M N k flops), in double like the k-space operator.
std::vector<double> apply_direct(const QuantizedTensor& q, const LowRank& basis, const std::vector<double>& y) {
    const std::int64_t k = basis.k, n = basis.cols;
    std::vector<double> uy(static_cast<std::size_t>(basis.rows * k), 0.0);
    const std::vector<double> v(basis.v.begin(), basis.v.end());
    for (std::int64_t r = 0; r < basis.rows; ++r)
        for (std::int64_t i = 0; i < k; ++i)
            for (std::int64_t j = 0; j < k; ++j)
                uy[static_cast<std::size_t>(r * k + j)] += static_cast<double>(basis.u[static_cast<std::size_t>(r * k + i)]) * y[static_cast<std::size_t>(i * k + j)];
    return project_error_f64(basis, [&](std::int64_t r0, std::int64_t rows, double* e) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(n), static_cast<int>(k), 1.0,
                    uy.data() + r0 * k, static_cast<int>(k), v.data(), static_cast<int>(n), 0.0, e, static_cast<int>(n));
        std::vector<float> d(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < rows; ++i) {
            row_scales(q, r0 + i, d.data());
            double* er = e + i * n;
            for (std::int64_t c = 0; c < n; ++c) {
                const double s = d[static_cast<std::size_t>(c)];
                er[c] *= s * s;
            }
        }
    });
}

// Gram matrix of the k columns of a [rows, k] matrix (by_columns) or of the k rows of a [k, cols] one.
std::vector<double> gram(const std::vector<float>& a, std::int64_t rows, std::int64_t cols, bool by_columns) {
    const std::int64_t k = by_columns ? cols : rows, len = by_columns ? rows : cols;
    std::vector<double> g(static_cast<std::size_t>(k * k), 0.0);
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j) {
            double s = 0;
            for (std::int64_t t = 0; t < len; ++t) {
                const auto x = by_columns ? t * cols + i : i * cols + t, y = by_columns ? t * cols + j : j * cols + t;
                s += static_cast<double>(a[static_cast<std::size_t>(x)]) * a[static_cast<std::size_t>(y)];
            }
            g[static_cast<std::size_t>(i * k + j)] = s;
        }
    return g;
}

// a * y * b for k x k matrices.
std::vector<double> sandwich(const std::vector<double>& a, const std::vector<double>& y, const std::vector<double>& b, std::int64_t k) {
    std::vector<double> ay(static_cast<std::size_t>(k * k), 0.0), out(ay.size(), 0.0);
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t t = 0; t < k; ++t)
            for (std::int64_t j = 0; j < k; ++j) ay[static_cast<std::size_t>(i * k + j)] += a[static_cast<std::size_t>(i * k + t)] * y[static_cast<std::size_t>(t * k + j)];
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t t = 0; t < k; ++t)
            for (std::int64_t j = 0; j < k; ++j) out[static_cast<std::size_t>(i * k + j)] += ay[static_cast<std::size_t>(i * k + t)] * b[static_cast<std::size_t>(t * k + j)];
    return out;
}

bool use_k_space(const QuantizedTensor& q, const LowRank& basis, const RoundingSettings& s) {
    if (s.int8_mode != KSpaceMode::Auto) return s.int8_mode == KSpaceMode::KSpace;
    const double k = static_cast<double>(basis.k), k4 = k * k * k * k;
    if (k4 * 8 * 3 > static_cast<double>(1ull << 30)) return false;  // the operator and its factors above 1 GiB
    const double build = 2.0 * static_cast<double>(scale_rows(q.spec, q.rows)) * k4;
    const double direct = 4.0 * static_cast<double>(basis.rows) * static_cast<double>(basis.cols) * k;
    return build + s.num_iter * 2.0 * k4 < s.num_iter * direct;
}

}  // namespace

std::vector<double> initial_projection(const TensorView& w, const QuantizedTensor& q, const LowRank& basis) {
    const auto values = code_values(q.spec.format);
    const std::int64_t n = basis.cols;
    return project_error_f64(basis, [&](std::int64_t r0, std::int64_t rows, double* e) {
        std::vector<float> d(static_cast<std::size_t>(n)), wrow(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < rows; ++i) {
            decode_row_cpu(w, r0 + i, 0, n, wrow.data());
            row_scales(q, r0 + i, d.data());
            const std::uint8_t* codes = q.codes.data() + (r0 + i) * n;
            double* er = e + i * n;
            for (std::int64_t c = 0; c < n; ++c)
                er[c] = static_cast<double>(values[codes[c]]) * d[static_cast<std::size_t>(c)] - wrow[static_cast<std::size_t>(c)];
        }
    });
}

double apply_offsets(const TensorView& w, const LowRank& basis, QuantizedTensor& q,
                     const std::function<void(std::int64_t, std::int64_t, float*)>& delta) {
    const auto values = code_values(q.spec.format);
    const bool fp8 = is_fp8(q.spec.format);
    const std::int64_t n = basis.cols;
    const auto p = project_error(basis, [&](std::int64_t r0, std::int64_t rows, float* e, float* x) {
        delta(r0, rows, x);
        std::vector<float> d(static_cast<std::size_t>(n)), wrow(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < rows; ++i) {
            std::uint8_t* codes = q.codes.data() + (r0 + i) * n;
            float* xr = x + i * n;
            for (std::int64_t c = 0; c < n; ++c) xr[c] += values[codes[c]];
            if (fp8) {
                encode_fp8_cpu(xr, n, 1.0f, codes);
            } else {
                for (std::int64_t c = 0; c < n; ++c) codes[c] = static_cast<std::uint8_t>(int8_round(xr[c]));
            }
            decode_row_cpu(w, r0 + i, 0, n, wrow.data());
            row_scales(q, r0 + i, d.data());
            float* er = e + i * n;
            for (std::int64_t c = 0; c < n; ++c)
                er[c] = values[codes[c]] * d[static_cast<std::size_t>(c)] - wrow[static_cast<std::size_t>(c)];
        }
    });
    return frobenius(p);
}

std::vector<double> int8_step_operator(const QuantizedTensor& q, const LowRank& basis) {
    const std::int64_t k = basis.k, kk = k * k;
    const std::int64_t sr = scale_rows(q.spec, q.rows), sc = scale_cols(q.spec, q.cols);
    const std::int64_t br = scale_block_rows(q.spec, q.rows), bc = scale_block_cols(q.spec, q.cols);
    // X[R] = sum over the rows m of block row R of u_m u_m^T; GV[C] = sum over the columns n of block column
    // C of v_n v_n^T; H[R] = sum_C D_RC^2 GV[C]. Then A'[(i,a),(j,b)] = sum_R X[R](i,a) H[R](j,b).
    std::vector<double> x(static_cast<std::size_t>(sr * kk), 0.0), gv(static_cast<std::size_t>(sc * kk), 0.0);
    for (std::int64_t m = 0; m < q.rows; ++m) {
        const float* u = basis.u.data() + m * k;
        double* xr = x.data() + (m / br) * kk;
        for (std::int64_t i = 0; i < k; ++i)
            for (std::int64_t a = 0; a < k; ++a) xr[i * k + a] += static_cast<double>(u[i]) * u[a];
    }
    for (std::int64_t j = 0; j < k; ++j)
        for (std::int64_t b = 0; b < k; ++b) {
            const float* vj = basis.v.data() + j * q.cols;
            const float* vb = basis.v.data() + b * q.cols;
            for (std::int64_t cb = 0; cb < sc; ++cb) {
                double s = 0;
                for (std::int64_t n = cb * bc; n < (cb + 1) * bc; ++n) s += static_cast<double>(vj[n]) * vb[n];
                gv[static_cast<std::size_t>(cb * kk + j * k + b)] = s;
            }
        }
    std::vector<double> s2(static_cast<std::size_t>(sr * sc)), h(static_cast<std::size_t>(sr * kk)), ap(static_cast<std::size_t>(kk * kk));
    for (std::size_t i = 0; i < s2.size(); ++i) s2[i] = static_cast<double>(q.scales[i]) * q.scales[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(sr), static_cast<int>(kk), static_cast<int>(sc), 1.0,
                s2.data(), static_cast<int>(sc), gv.data(), static_cast<int>(kk), 0.0, h.data(), static_cast<int>(kk));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(kk), static_cast<int>(kk), static_cast<int>(sr), 1.0,
                x.data(), static_cast<int>(kk), h.data(), static_cast<int>(kk), 0.0, ap.data(), static_cast<int>(kk));
    std::vector<double> a(static_cast<std::size_t>(kk * kk));  // A[(i,j),(a,b)] = A'[(i,a),(j,b)]
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j)
            for (std::int64_t ai = 0; ai < k; ++ai)
                for (std::int64_t b = 0; b < k; ++b)
                    a[static_cast<std::size_t>((i * k + j) * kk + ai * k + b)] = ap[static_cast<std::size_t>((i * k + ai) * kk + j * k + b)];
    return a;
}

OriginalLoop run_original_loop(const std::vector<double>& p0, const QuantizedTensor& q, const LowRank& basis,
                               const RoundingSettings& settings) {
    const bool fp8 = is_fp8(q.spec.format);
    const std::int64_t k = basis.k, kk = k * k;
    std::function<std::vector<double>(const std::vector<double>&)> apply_a;
    std::vector<double> a_matrix;
    std::vector<double> gu, gv;
    if (fp8) {
        // A(Y) = (U^T U) Y (V V^T): the identity for an exactly orthonormal basis; the Gram matrices keep the
        // float32 basis' tiny departures from it, so the closed form follows the loop to double precision.
        gu = gram(basis.u, basis.rows, k, true);
        gv = gram(basis.v, k, basis.cols, false);
        apply_a = [&](const std::vector<double>& y) { return sandwich(gu, y, gv, k); };
    } else if (use_k_space(q, basis, settings)) {
        a_matrix = int8_step_operator(q, basis);
        apply_a = [&](const std::vector<double>& y) {
            std::vector<double> out(static_cast<std::size_t>(kk), 0.0);
            cblas_dgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(kk), static_cast<int>(kk), 1.0, a_matrix.data(),
                        static_cast<int>(kk), y.data(), 1, 0.0, out.data(), 1);
            return out;
        };
    } else {
        apply_a = [&](const std::vector<double>& y) { return apply_direct(q, basis, y); };
    }

    OriginalLoop loop;
    RoundingStats& stats = loop.stats;
    stats.k = k;
    stats.initial_loss = frobenius(p0);
    LrSchedule schedule(settings.lr, q.rows, q.cols, !fp8);
    std::vector<double> p = p0, z(static_cast<std::size_t>(kk), 0.0), step(static_cast<std::size_t>(kk));
    loop.best_z = z;
    for (int t = 0; t < settings.num_iter; ++t) {
        const double loss = frobenius(p);
        ++stats.iterations;
        stats.losses.push_back(loss);
        const auto verdict = schedule.observe(loss);
        if (verdict.improved) {
            loop.best_z = z;
            stats.best_iteration = t;
            stats.best_loss = loss;
        }
        if (verdict.stop) break;
        const double scale = schedule.lr() / std::max(loss, 1e-20);
        for (std::int64_t i = 0; i < kk; ++i) {
            step[static_cast<std::size_t>(i)] = p[static_cast<std::size_t>(i)] * scale;
            z[static_cast<std::size_t>(i)] += step[static_cast<std::size_t>(i)];
        }
        const std::vector<double> moved = apply_a(step);
        for (std::int64_t i = 0; i < kk; ++i) p[static_cast<std::size_t>(i)] -= moved[static_cast<std::size_t>(i)];
        if (settings.on_progress) settings.on_progress("optimize", t + 1, settings.num_iter);
    }
    return loop;
}

RoundingStats round_original_cpu(const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                 QuantizedTensor& q) {
    const bool fp8 = is_fp8(q.spec.format);
    OriginalLoop loop = run_original_loop(initial_projection(w, q, basis), q, basis, settings);
    RoundingStats& stats = loop.stats;
    if (stats.best_iteration == 0) {
        stats.final_loss = stats.initial_loss;
        return stats;
    }
    // One rank-k correction, then the final rounding: q = q0 - (U Z V) * (FP8: 1/D, INT8: D).
    const Matrix uz = times_u(basis, loop.best_z);
    const std::int64_t n = basis.cols;
    stats.final_loss = apply_offsets(w, basis, q, [&](std::int64_t r0, std::int64_t rows, float* out) {
        low_rank_rows(uz, basis, r0, rows, out);
        std::vector<float> d(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < rows; ++i) {
            row_scales(q, r0 + i, d.data());
            float* o = out + i * n;
            for (std::int64_t c = 0; c < n; ++c) {
                const float s = d[static_cast<std::size_t>(c)];
                o[c] = fp8 ? -o[c] * (1.0f / s) : -o[c] * s;
            }
        }
    });
    return stats;
}

}  // namespace quantflow

namespace quantflow {

RoundingStats learned_round_cpu(std::string_view name, const TensorView& w, const LowRank& basis,
                                const RoundingSettings& settings, QuantizedTensor& q) {
    QF_EXPECT(basis.rows == w.rows && basis.cols == w.cols && q.rows == w.rows && q.cols == w.cols,
              "tensor '" + std::string(name) + "': basis [" + std::to_string(basis.rows) + ", " + std::to_string(basis.cols) +
                  "] does not match the weight [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
    const bool narrower = settings.optimizer_k > 0 && settings.optimizer_k < basis.k;
    const LowRank narrow = narrower ? leading_components(basis, settings.optimizer_k) : LowRank{};
    const LowRank& used = narrower ? narrow : basis;
    RoundingStats stats = settings.optimizer == Optimizer::Original ? round_original_cpu(w, used, settings, q)
                                                                    : round_adam_cpu(w, used, settings, q);
    stats.rounded_loss = stats.final_loss;
    if (settings.rounding_aware) {
        if (settings.on_progress) settings.on_progress("round", 0, 1);
        const double wide = refine_rounding_cpu(w, basis, q, used.k, stats.flips);
        stats.final_loss = narrower ? frobenius(initial_projection(w, q, used)) : wide;
    }
    return stats;
}

}  // namespace quantflow
