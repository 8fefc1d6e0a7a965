// The learned-rounding driver (spec 5.3): `original` in closed form, the AdamW / RAdam loop, then the
// rounding-aware finish (learned_rounding_finish.cpp), over a backend's RoundingWork.
//
// `original`, in dequantized space (D = stored scale, m = 1/D the FP8 multiplier):
//   FP8:  q -= lr * (U (P/L) V) * m   =>  W_hat -= lr * U (P/L) V          (the scale cancels)
//   INT8: q -= lr * (U (P/L) V) * D   =>  W_hat -= lr * (U (P/L) V) * D^2  (the block scale enters twice)
// Every step moves W_hat by U Y V for some k x k Y, so the iterates stay in {W_hat0 - (U Z V) * D^2} (INT8)
// or {W_hat0 - U Z V} (FP8) and the projected error follows P(Z) = P0 - A(Z) with
//   A(Y) = U^T ((U Y V) * D^2) V^T   (INT8),   A(Y) = (U^T U) Y (V V^T)   (FP8: the identity up to the float32
// basis' departures from orthonormality, which the Gram matrices keep so the loop is followed to double precision).
// So the loop runs on k x k matrices and only the kept Z is applied to the M x N codes, once. For INT8, A is
// a k^2 x k^2 matrix built from per-block Gram matrices, or applied with full-size products when k is too large.
#include "kernels/learned_rounding.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>

#include "kernels/backend.hpp"
#include "kernels/error.hpp"

namespace quantflow {
namespace {

constexpr int kAdamChunk = 25;  // Adam steps per adam_steps call: progress and early stop between chunks

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// Gram matrix of the k columns of a [rows, k] matrix (by_columns) or of the k rows of a [k, cols] one.
std::vector<double> gram(const std::vector<float>& a, std::int64_t rows, std::int64_t cols, bool by_columns) {
    const std::int64_t k = by_columns ? cols : rows, len = by_columns ? rows : cols;
    std::vector<double> g(at(k * k), 0.0);
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j) {
            double s = 0;
            for (std::int64_t t = 0; t < len; ++t) {
                const auto x = by_columns ? t * cols + i : i * cols + t, y = by_columns ? t * cols + j : j * cols + t;
                s += static_cast<double>(a[at(x)]) * a[at(y)];
            }
            g[at(i * k + j)] = s;
        }
    return g;
}

// a * y * b for k x k matrices.
std::vector<double> sandwich(const std::vector<double>& a, const std::vector<double>& y, const std::vector<double>& b, std::int64_t k) {
    std::vector<double> ay(at(k * k), 0.0), out(ay.size(), 0.0);
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t t = 0; t < k; ++t)
            for (std::int64_t j = 0; j < k; ++j) ay[at(i * k + j)] += a[at(i * k + t)] * y[at(t * k + j)];
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t t = 0; t < k; ++t)
            for (std::int64_t j = 0; j < k; ++j) out[at(i * k + j)] += ay[at(i * k + t)] * b[at(t * k + j)];
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

// Projects the optimizer's rounded codes into p (and stats.final_loss). With quantflow's extensions on, a result
// whose ||W_hat - W|| exceeds (1 + allowance) times round-to-nearest's is dropped: round-to-nearest comes back
// (P0 with it) and the finish works from there within its whole budget.
void project_or_revert(RoundingWork& work, std::int64_t k, const RoundingSettings& settings, double allowance, double rtn_error2,
                       const std::vector<double>& p0, std::vector<double>& p, RoundingStats& stats) {
    double error2 = 0;
    p = work.project(k, &error2);
    stats.final_loss = frobenius(p);
    if (settings.rounding_aware && error2 > (1 + allowance) * (1 + allowance) * rtn_error2) {
        work.reset_codes();
        p = p0;
        stats.final_loss = stats.initial_loss;
        stats.optimizer_reverted = true;
    }
}

// Both optimizers leave in `p` the projection of the codes they return (on their k components) and in rtn_error2
// ||W_hat - W||^2 of round-to-nearest (measured in their first projection).
RoundingStats run_original(RoundingWork& work, const LowRank& used, const RoundingSettings& settings, const QuantizedTensor& q,
                           std::vector<double>& p, double& rtn_error2) {
    p = work.project(used.k, &rtn_error2);
    if (settings.rtn_error2 > 0) rtn_error2 = settings.rtn_error2;  // the codes on entry came from a scale search
    const std::vector<double> p0 = p;
    OriginalLoop loop = run_original_loop(p, q, used, settings, work);
    RoundingStats& stats = loop.stats;
    stats.final_loss = stats.initial_loss;
    if (stats.best_iteration > 0) {
        work.correct_and_round(loop.best_z, used.k);
        // The rounded correction can cost more Frobenius error than the finish may spend (+0.066% measured on a
        // small block2d layer) for about 1% of L.
        project_or_revert(work, used.k, settings, settings.finish_budget, rtn_error2, p0, p, stats);
    }
    return stats;
}

RoundingStats run_adam(RoundingWork& work, std::int64_t k, const RoundingSettings& settings, std::vector<double>& p,
                       double& rtn_error2) {
    p = work.project(k, &rtn_error2);
    const std::vector<double> p0 = p;
    RoundingStats stats;
    stats.k = k;
    stats.initial_loss = frobenius(p0);
    work.adam_begin(k, p0, settings.optimizer, settings.lr);
    AdamLoopState st;
    for (int t0 = 0; t0 < settings.num_iter && !st.stopped; t0 += kAdamChunk) {
        st = work.adam_steps(t0, std::min(kAdamChunk, settings.num_iter - t0), stats.losses);
        if (settings.on_progress) settings.on_progress("optimize", st.iterations, settings.num_iter);
    }
    stats.iterations = st.iterations;
    stats.best_iteration = st.best_iteration;
    stats.best_loss = st.best_loss;
    stats.final_loss = stats.initial_loss;
    if (st.best_iteration > 0) {
        work.adam_finish(st.best_buffer);
        // Rounded Adam offsets can cost more Frobenius error than they gain (+0.145% measured on structured weights).
        project_or_revert(work, k, settings, kAdamFrobenius, rtn_error2, p0, p, stats);
    }
    return stats;
}

}  // namespace

std::vector<double> int8_step_operator(const QuantizedTensor& q, const LowRank& basis) {
    openblas_set_num_threads(1);  // the same bits whatever the caller set (OpenBLAS is process-global)
    const std::int64_t k = basis.k, kk = k * k;
    const std::int64_t sr = scale_rows(q.spec, q.rows), sc = scale_cols(q.spec, q.cols);
    const std::int64_t br = scale_block_rows(q.spec, q.rows), bc = scale_block_cols(q.spec, q.cols);
    // X[R] = sum over the rows m of block row R of u_m u_m^T; GV[C] = sum over the columns n of block column
    // C of v_n v_n^T; H[R] = sum_C D_RC^2 GV[C]. Then A'[(i,a),(j,b)] = sum_R X[R](i,a) H[R](j,b).
    std::vector<double> x(at(sr * kk), 0.0), gv(at(sc * kk), 0.0);
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
                gv[at(cb * kk + j * k + b)] = s;
            }
        }
    std::vector<double> s2(at(sr * sc)), h(at(sr * kk)), ap(at(kk * kk));
    for (std::size_t i = 0; i < s2.size(); ++i) s2[i] = static_cast<double>(q.scales[i]) * q.scales[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(sr), static_cast<int>(kk), static_cast<int>(sc), 1.0,
                s2.data(), static_cast<int>(sc), gv.data(), static_cast<int>(kk), 0.0, h.data(), static_cast<int>(kk));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(kk), static_cast<int>(kk), static_cast<int>(sr), 1.0,
                x.data(), static_cast<int>(kk), h.data(), static_cast<int>(kk), 0.0, ap.data(), static_cast<int>(kk));
    std::vector<double> a(at(kk * kk));  // A[(i,j),(a,b)] = A'[(i,a),(j,b)]
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j)
            for (std::int64_t ai = 0; ai < k; ++ai)
                for (std::int64_t b = 0; b < k; ++b) a[at((i * k + j) * kk + ai * k + b)] = ap[at((i * k + ai) * kk + j * k + b)];
    return a;
}

OriginalLoop run_original_loop(const std::vector<double>& p0, const QuantizedTensor& q, const LowRank& basis,
                               const RoundingSettings& settings, RoundingWork& work) {
    const bool fp8 = !is_integer_grid(q.spec.format);  // float grids take the FP8 closed form
    const std::int64_t k = basis.k, kk = k * k;
    std::function<std::vector<double>(const std::vector<double>&)> apply_a;
    std::vector<double> a_matrix, gu, gv;
    if (fp8) {
        gu = gram(basis.u, basis.rows, k, true);
        gv = gram(basis.v, k, basis.cols, false);
        apply_a = [&](const std::vector<double>& y) { return sandwich(gu, y, gv, k); };
    } else if (use_k_space(q, basis, settings)) {
        a_matrix = int8_step_operator(q, basis);
        apply_a = [&](const std::vector<double>& y) {
            std::vector<double> out(at(kk), 0.0);
            cblas_dgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(kk), static_cast<int>(kk), 1.0, a_matrix.data(),
                        static_cast<int>(kk), y.data(), 1, 0.0, out.data(), 1);
            return out;
        };
    } else {
        apply_a = [&](const std::vector<double>& y) { return work.int8_step_direct(y, k); };
    }

    OriginalLoop loop;
    RoundingStats& stats = loop.stats;
    stats.k = k;
    stats.initial_loss = frobenius(p0);
    LrSchedule schedule(settings.lr, q.rows, q.cols, !fp8);
    std::vector<double> p = p0, z(at(kk), 0.0), step(at(kk));
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
            step[at(i)] = p[at(i)] * scale;
            z[at(i)] += step[at(i)];
        }
        const std::vector<double> moved = apply_a(step);
        for (std::int64_t i = 0; i < kk; ++i) p[at(i)] -= moved[at(i)];
        if (settings.on_progress) settings.on_progress("optimize", t + 1, settings.num_iter);
    }
    return loop;
}

RoundingStats run_learned_rounding(RoundingWork& work, const LowRank& basis, const RoundingSettings& settings, QuantizedTensor& q) {
    QF_EXPECT(basis.rows == q.rows && basis.cols == q.cols,
              "basis [" + std::to_string(basis.rows) + ", " + std::to_string(basis.cols) + "] does not match the weight [" +
                  std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]");
    const bool narrower = settings.optimizer_k > 0 && settings.optimizer_k < basis.k;
    const LowRank narrow = narrower ? leading_components(basis, settings.optimizer_k) : LowRank{};
    const LowRank& used = narrower ? narrow : basis;
    const auto start = std::chrono::steady_clock::now();
    std::vector<double> p;
    double rtn_error2 = 0;
    RoundingStats stats = settings.optimizer == Optimizer::Original ? run_original(work, used, settings, q, p, rtn_error2)
                                                                    : run_adam(work, used.k, settings, p, rtn_error2);
    stats.optimize_seconds = seconds_since(start);
    stats.rounded_loss = stats.final_loss;
    if (settings.rounding_aware) {
        if (settings.on_progress) settings.on_progress("round", 0, 1);
        const std::vector<double> wide = rounding_aware_finish(
            work, basis, used.k, settings.finish_budget,
            // `original` with the finish stays within the budget of round-to-nearest; AdamW / RAdam have their own
            // allowance (kAdamFrobenius) and the finish adds its budget to what they return.
            settings.optimizer == Optimizer::Original ? rtn_error2 : 0, stats, narrower ? nullptr : &p,
            // A scale search that lowered the error below round-to-nearest's left room for far more moves.
            settings.rtn_error2 > 0 && settings.optimizer == Optimizer::Original ? kWideFinish : finish_tuning(settings.thorough_finish));
        double block = 0;
        for (std::int64_t i = 0; i < used.k; ++i)
            for (std::int64_t j = 0; j < used.k; ++j) block += wide[at(i * basis.k + j)] * wide[at(i * basis.k + j)];
        stats.final_loss = std::sqrt(block);
        // Never worse than round-to-nearest on the optimizer's projected error (the optimizer's own rounding
        // can land above it; the finish never raises it further).
        if (stats.final_loss > stats.initial_loss) {
            work.reset_codes();
            stats.final_loss = stats.initial_loss;
            stats.flips = 0;
        }
    }
    work.fetch_codes(q);
    return stats;
}

RoundingStats Backend::learned_round(std::string_view name, const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                     QuantizedTensor& q) {
    QF_EXPECT(basis.rows == w.rows && basis.cols == w.cols && q.rows == w.rows && q.cols == w.cols,
              "tensor '" + std::string(name) + "': basis [" + std::to_string(basis.rows) + ", " + std::to_string(basis.cols) +
                  "] does not match the weight [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
    const std::unique_ptr<RoundingWork> work = rounding_work(name, w, basis, q);
    return run_learned_rounding(*work, basis, settings, q);
}

}  // namespace quantflow
