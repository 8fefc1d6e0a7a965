// Learned rounding on the CPU (spec 5.3): the closed forms of `original` against a literal implementation
// of the reference's loop (the oracle), AdamW / RAdam against traces PyTorch itself produced, the lr table,
// and the randomized SVD against LAPACK's exact one.
#include <cblas.h>
#include <doctest/doctest.h>

#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/learned_rounding.hpp"
#include "kernels/numerics.hpp"
#include "tests/rounding_weights.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;
using qftest::random_weight;
using qftest::svd_for;
using qftest::Weight;

namespace {

struct OracleResult {
    std::vector<std::uint8_t> codes;
    std::vector<double> losses;
    double best_loss = INFINITY;
    int best_iteration = 0;
};

// The reference's `original` loop, literally, in double: full-size error, projection, schedule, gradient
// step on the scaled values (FP8: times the multiplier m = 1/D; INT8: times the block scale D), best
// iterate kept, then clamp and round. The dequantized weight is code * stored scale D (what loaders
// compute); the reference's float32 division by m differs from it by float noise only.
OracleResult oracle_original(const TensorView& w, const QuantizedTensor& q0, const LowRank& b, double lr, int num_iter) {
    const std::int64_t m = w.rows, n = w.cols, k = b.k;
    const bool fp8 = is_fp8(q0.spec.format);
    const auto values = code_values(q0.spec.format);
    const Matrix wf = decode_matrix(w);
    std::vector<double> wq(static_cast<std::size_t>(m * n)), scale(wq.size()), mult(wq.size());
    std::vector<float> d(static_cast<std::size_t>(n));
    for (std::int64_t r = 0; r < m; ++r) {
        row_scales(q0, r, d.data());
        for (std::int64_t c = 0; c < n; ++c) {
            const auto i = static_cast<std::size_t>(r * n + c);
            wq[i] = values[q0.codes[i]];
            scale[i] = d[static_cast<std::size_t>(c)];
            mult[i] = fp8 ? 1.0 / d[static_cast<std::size_t>(c)] : d[static_cast<std::size_t>(c)];
        }
    }
    LrSchedule schedule(lr, m, n, !fp8);
    OracleResult out;
    std::vector<double> best = wq, e(wq.size()), t(static_cast<std::size_t>(m * k)), p(static_cast<std::size_t>(k * k));
    for (int it = 0; it < num_iter; ++it) {
        for (std::size_t i = 0; i < wq.size(); ++i) e[i] = wq[i] * scale[i] - wf.data[i];
        std::fill(t.begin(), t.end(), 0.0);
        for (std::int64_t r = 0; r < m; ++r)
            for (std::int64_t j = 0; j < k; ++j) {
                double s = 0;
                for (std::int64_t c = 0; c < n; ++c) s += e[static_cast<std::size_t>(r * n + c)] * b.v[static_cast<std::size_t>(j * n + c)];
                t[static_cast<std::size_t>(r * k + j)] = s;
            }
        std::fill(p.begin(), p.end(), 0.0);
        for (std::int64_t r = 0; r < m; ++r)
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j)
                    p[static_cast<std::size_t>(i * k + j)] += b.u[static_cast<std::size_t>(r * k + i)] * t[static_cast<std::size_t>(r * k + j)];
        double loss = 0;
        for (const double x : p) loss += x * x;
        loss = std::sqrt(loss);
        out.losses.push_back(loss);
        const auto verdict = schedule.observe(loss);
        if (verdict.improved) {
            best = wq;
            out.best_loss = loss;
            out.best_iteration = it;
        }
        if (verdict.stop) break;
        // grad = U (P / L) V; W_q -= lr * grad * mult
        std::vector<double> up(static_cast<std::size_t>(m * k), 0.0);
        for (std::int64_t r = 0; r < m; ++r)
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j)
                    up[static_cast<std::size_t>(r * k + j)] += b.u[static_cast<std::size_t>(r * k + i)] * p[static_cast<std::size_t>(i * k + j)];
        const double step = schedule.lr() / std::max(loss, 1e-20);
        for (std::int64_t r = 0; r < m; ++r)
            for (std::int64_t c = 0; c < n; ++c) {
                double g = 0;
                for (std::int64_t j = 0; j < k; ++j) g += up[static_cast<std::size_t>(r * k + j)] * b.v[static_cast<std::size_t>(j * n + c)];
                wq[static_cast<std::size_t>(r * n + c)] -= step * g * mult[static_cast<std::size_t>(r * n + c)];
            }
    }
    out.codes.resize(wq.size());
    for (std::size_t i = 0; i < wq.size(); ++i) {
        const float x = static_cast<float>(best[i]);
        out.codes[i] = fp8 ? f32_to_e4m3(clamp_abs(x, kFp8Max)) : static_cast<std::uint8_t>(int8_round(x));
    }
    return out;
}

void check_against_oracle(std::int64_t rows, std::int64_t cols, QuantSpec spec, KSpaceMode mode, std::uint64_t seed) {
    CAPTURE(rows);
    CAPTURE(cols);
    CAPTURE(format_label(spec.format));
    CAPTURE(static_cast<int>(mode));
    const Weight w = random_weight(rows, cols, seed);
    const LowRank basis = top_k_svd_cpu("w", w.view, svd_for(rows, cols, seed));
    const QuantizedTensor q0 = quantize_cpu("w", w.view, spec);
    QuantizedTensor q = q0;
    RoundingSettings settings;
    settings.int8_mode = mode;
    settings.rounding_aware = false;  // the oracle is the reference's loop alone
    const RoundingStats stats = learned_round_cpu("w", w.view, basis, settings, q);
    const OracleResult oracle = oracle_original(w.view, q0, basis, settings.lr, settings.num_iter);

    CHECK(stats.iterations == static_cast<int>(oracle.losses.size()));
    CHECK(stats.best_iteration == oracle.best_iteration);
    // Relative to the initial loss: the best loss can sit near zero (the loop stops below 1e-8), where a
    // relative tolerance on it would compare float noise (issue 10: flaky at 5.49e-12 vs 7.29e-14).
    CHECK(std::abs(stats.best_loss - oracle.best_loss) <= 1e-8 * stats.initial_loss);
    CHECK(stats.best_loss < stats.initial_loss);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < q.codes.size(); ++i) differ += q.codes[i] != oracle.codes[i];
    CHECK(differ == 0);
}

}  // namespace

TEST_CASE("lr schedule follows the seed's table") {
    LrSchedule s(0.01, 10, 20, false);
    CHECK(s.observe(1.0).improved);  // c = 0 -> x1.25
    CHECK(s.lr() == doctest::Approx(0.0125));
    CHECK_FALSE(s.observe(2.0).improved);  // c = 1 -> x0.95
    CHECK(s.lr() == doctest::Approx(0.0125 * 0.95));
    for (int i = 0; i < 59; ++i) s.observe(2.0);  // c = 60
    CHECK(s.observe(0.5).improved);  // improvement after 60 misses: x1.375
    CHECK(s.lr() > 0);
    LrSchedule square(0.01, 8, 8, false);  // M == N: every factor times 0.95
    square.observe(1.0);
    CHECK(square.lr() == doctest::Approx(0.01 * 1.25 * 0.95));
    LrSchedule floor(1e-7, 4, 5, false);
    floor.observe(1.0);
    for (int i = 0; i < 200; ++i) floor.observe(1.0);
    CHECK(floor.lr() == doctest::Approx(4e-8));  // c in (150, 200] floors at 4e-8
    LrSchedule int8(0.01, 4, 5, true);
    int8.observe(1.0);
    for (int i = 0; i < 120; ++i) int8.observe(1.0);
    CHECK(int8.observe(0.1).improved);  // c = 120 >= 100: x1.75 in the INT8 table
    CHECK(int8.observe(0.0).stop);      // loss below 1e-8 stops
    LrSchedule cap(90.0, 4, 5, false);
    cap.observe(1.0);
    CHECK(cap.lr() == 100.0);
}

TEST_CASE("k rule of spec 5.3") {
    CHECK(choose_k(5120, 5120, 0.01, 1, 16) == 16);
    CHECK(choose_k(384, 512, 0.01, 1, 16) == 3);
    CHECK(choose_k(100, 300, 0.01, 1, 16) == 1);
    CHECK(choose_k(64, 64, 0.5, 1, 100) == 32);
    CHECK(choose_k(4, 6, 0.01, 8, 16) == 4);  // capped at min(M, N)
}

TEST_CASE("original: FP8 closed form equals the reference loop") {
    check_against_oracle(384, 512, {QuantFormat::Fp8Tensor, 64}, KSpaceMode::Auto, 11);
    check_against_oracle(512, 384, {QuantFormat::Fp8Tensor, 64}, KSpaceMode::Auto, 12);
    check_against_oracle(384, 512, {QuantFormat::Fp8Block, 64}, KSpaceMode::Auto, 13);
    check_against_oracle(512, 384, {QuantFormat::Fp8Row, 64}, KSpaceMode::Auto, 14);
}

TEST_CASE("original: INT8 k-space and direct forms equal the reference loop") {
    check_against_oracle(384, 512, {QuantFormat::Int8Block, 64}, KSpaceMode::KSpace, 21);
    check_against_oracle(384, 512, {QuantFormat::Int8Block, 64}, KSpaceMode::Direct, 21);
    check_against_oracle(512, 384, {QuantFormat::Int8Block, 128}, KSpaceMode::KSpace, 22);
    check_against_oracle(512, 384, {QuantFormat::Int8Lode, 64}, KSpaceMode::KSpace, 23);
    check_against_oracle(384, 512, {QuantFormat::Int8Row, 64}, KSpaceMode::Auto, 24);
    check_against_oracle(512, 384, {QuantFormat::Int8Tensor, 64}, KSpaceMode::Auto, 25);
}

// Issue 10: the CPU kernels establish single-threaded OpenBLAS themselves, so their results do not depend on
// the thread count a caller (or an earlier test) left OpenBLAS with.
TEST_CASE("learned rounding gives the same bits whatever the OpenBLAS thread count") {
    const Weight w = random_weight(384, 512, 41);
    for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8Tensor, 64}, QuantSpec{QuantFormat::Int8Block, 64}}) {
        CAPTURE(format_label(spec.format));
        std::vector<std::uint8_t> first;
        double first_loss = 0;
        for (const int threads : {1, 2, 4, 1}) {
            CAPTURE(threads);
            openblas_set_num_threads(threads);
            const LowRank basis = top_k_svd_cpu("w", w.view, svd_for(384, 512, 41));
            QuantizedTensor q = quantize_cpu("w", w.view, spec);
            openblas_set_num_threads(threads);
            const RoundingStats stats = learned_round_cpu("w", w.view, basis, RoundingSettings{}, q);
            if (first.empty()) {
                first = q.codes;
                first_loss = stats.final_loss;
            }
            CHECK(q.codes == first);
            CHECK(stats.final_loss == first_loss);
        }
    }
}

TEST_CASE("INT8 k-space operator matches the full-size product") {
    const Weight w = random_weight(128, 192, 31);
    const LowRank basis = top_k_svd_cpu("w", w.view, {4, 31, 10, 4, false});
    const QuantizedTensor q = quantize_cpu("w", w.view, {QuantFormat::Int8Lode, 64});
    const std::vector<double> a = int8_step_operator(q, basis);
    const std::int64_t k = 4, n = 192;
    std::vector<float> d(static_cast<std::size_t>(n));
    for (std::int64_t col = 0; col < k * k; ++col) {  // A applied to each basis matrix E_ab, by brute force
        const std::int64_t ai = col / k, bi = col % k;
        for (std::int64_t i = 0; i < k; ++i)
            for (std::int64_t j = 0; j < k; ++j) {
                double s = 0;
                for (std::int64_t r = 0; r < 128; ++r) {
                    row_scales(q, r, d.data());
                    for (std::int64_t c = 0; c < n; ++c)
                        s += static_cast<double>(basis.u[static_cast<std::size_t>(r * k + i)]) * basis.u[static_cast<std::size_t>(r * k + ai)] *
                             basis.v[static_cast<std::size_t>(bi * n + c)] * basis.v[static_cast<std::size_t>(j * n + c)] *
                             static_cast<double>(d[static_cast<std::size_t>(c)]) * d[static_cast<std::size_t>(c)];
                }
                CHECK(a[static_cast<std::size_t>((i * k + j) * k * k + col)] == doctest::Approx(s).epsilon(1e-9).scale(1e-12));
            }
    }
}

namespace {

// The weight, basis and traces of tests/data/adam_trace.py (PyTorch 2.15, CPU).
const float kTraceW[24] = {0.50f, -0.25f, 0.125f, 0.75f, -1.00f, 0.0625f, 0.3125f, 0.875f, -0.5f, 0.1875f, 0.25f, -0.625f,
                           -0.0625f, 0.4375f, 0.9375f, -0.8125f, 0.5625f, 0.375f, 0.6875f, -0.9375f, 0.0f, 0.21875f, -0.34375f, 0.15625f};

RoundingStats run_trace(Optimizer optimizer, QuantizedTensor& q) {
    const TensorView w{reinterpret_cast<const std::byte*>(kTraceW), DType::F32, 4, 6};
    LowRank basis;
    basis.rows = 4;
    basis.cols = 6;
    basis.k = 2;
    basis.u = {-0.07430153340101242f, 0.5155432224273682f, 0.4792414903640747f, -0.2752968370914459f,
               0.8558071851730347f, 0.3526332974433899f, -0.18000251054763794f, 0.7308053970336914f};
    basis.v = {-0.03688059374690056f, -0.08479365706443787f, -0.03665409982204437f, -0.3724691569805145f,
               -0.6507985591888428f, -0.6540904641151428f, 0.7694007158279419f, 0.013041717000305653f,
               -0.0747474879026413f, -0.2779030501842499f, 0.45850616693496704f, -0.3388321101665497f};
    q = quantize_cpu("trace", w, {QuantFormat::Fp8Tensor, 64});
    RoundingSettings s;
    s.optimizer = optimizer;
    s.num_iter = 4;
    s.lr = 0.5;
    s.rounding_aware = false;
    return learned_round_cpu("trace", w, basis, s, q);
}

void check_trace(const RoundingStats& stats, const QuantizedTensor& q, const double (&losses)[4], const int (&codes)[24]) {
    REQUIRE(stats.losses.size() == 4);
    for (int i = 0; i < 4; ++i) CHECK(stats.losses[static_cast<std::size_t>(i)] == qftest::relative(losses[i], 2e-5));
    CHECK(stats.best_iteration == 3);
    for (int i = 0; i < 24; ++i)  // +0 and -0 codes are the same weight
        CHECK(e4m3_to_f32(q.codes[static_cast<std::size_t>(i)]) == e4m3_to_f32(static_cast<std::uint8_t>(codes[i])));
}

}  // namespace

TEST_CASE("adamw follows PyTorch's AdamW step for step") {
    QuantizedTensor q;
    const RoundingStats stats = run_trace(Optimizer::AdamW, q);
    check_trace(stats, q, {0.015593606047332287, 0.012059973552823067, 0.008558070287108421, 0.005179660394787788},
                {118, 238, 102, 122, 254, 95, 113, 124, 246, 106, 110, 249, 223, 116, 125, 251, 120, 114, 122, 253, 60, 108, 242, 105});
}

TEST_CASE("radam follows PyTorch's RAdam step for step") {
    QuantizedTensor q;
    const RoundingStats stats = run_trace(Optimizer::RAdam, q);
    check_trace(stats, q, {0.015593606047332287, 0.015591124072670937, 0.015588655136525631, 0.015586161985993385},
                {118, 238, 102, 122, 254, 94, 113, 124, 246, 106, 110, 249, 222, 116, 125, 251, 120, 114, 122, 253, 0, 108, 242, 105});
}

TEST_CASE("adam-family keeps the best iterate, not the step after it") {
    const Weight w = random_weight(96, 128, 41);
    const LowRank basis = top_k_svd_cpu("w", w.view, {2, 41, 10, 4, false});
    QuantizedTensor q = quantize_cpu("w", w.view, {QuantFormat::Fp8Tensor, 64});
    RoundingSettings s;
    s.optimizer = Optimizer::AdamW;
    s.num_iter = 60;
    s.lr = 2.0;  // large steps overshoot, so the last iterate is not the best
    const RoundingStats stats = learned_round_cpu("w", w.view, basis, s, q);
    const auto best = std::min_element(stats.losses.begin(), stats.losses.end());
    CHECK(stats.best_iteration == best - stats.losses.begin());
    CHECK(stats.best_loss == *best);
    CHECK(stats.best_iteration < stats.iterations - 1);
}

TEST_CASE("randomized SVD finds the exact top-k subspace, both orientations") {
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{160, 224}, {224, 160}}) {
        CAPTURE(rows);
        // A matrix with a decaying spectrum: low-rank signal plus noise.
        const Weight noise = random_weight(rows, cols, 51);
        const Weight left = random_weight(rows, 8, 52), right = random_weight(8, cols, 53);
        const Matrix a = decode_matrix(left.view), b = decode_matrix(right.view), e = decode_matrix(noise.view);
        std::vector<float> w(static_cast<std::size_t>(rows * cols));
        for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t c = 0; c < cols; ++c) {
                double s = 0;
                for (int j = 0; j < 8; ++j) s += a.row(r)[j] * b.row(j)[c] * (8.0 - j) * 50.0;
                w[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(s) + e.row(r)[c];
            }
        const TensorView view{reinterpret_cast<const std::byte*>(w.data()), DType::F32, rows, cols};
        const LowRank fast = top_k_svd_cpu("w", view, {6, 7, 10, 4, false});
        const LowRank exact = top_k_svd_cpu("w", view, {6, 7, 10, 4, true});
        for (int i = 0; i < 6; ++i) CHECK(fast.sigma[static_cast<std::size_t>(i)] == qftest::relative(exact.sigma[static_cast<std::size_t>(i)], 1e-4));
        // Same subspaces: ||U_fast^T U_exact||_F^2 = k when the spans agree.
        double overlap_u = 0, overlap_v = 0;
        for (int i = 0; i < 6; ++i)
            for (int j = 0; j < 6; ++j) {
                double su = 0, sv = 0;
                for (std::int64_t r = 0; r < rows; ++r) su += fast.u[static_cast<std::size_t>(r * 6 + i)] * exact.u[static_cast<std::size_t>(r * 6 + j)];
                for (std::int64_t c = 0; c < cols; ++c) sv += fast.v[static_cast<std::size_t>(i * cols + c)] * exact.v[static_cast<std::size_t>(j * cols + c)];
                overlap_u += su * su;
                overlap_v += sv * sv;
            }
        CHECK(overlap_u == qftest::relative(6.0, 1e-4));
        CHECK(overlap_v == qftest::relative(6.0, 1e-4));
    }
}

TEST_CASE("learned rounding gives the same bits for every thread count") {
    const Weight w = random_weight(512, 640, 61);
    std::vector<std::vector<std::uint8_t>> results;
    for (const int threads : {1, 2, 4}) {
        oneapi::tbb::global_control limit(oneapi::tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
        for (const Optimizer opt : {Optimizer::Original, Optimizer::AdamW}) {
            const LowRank basis = top_k_svd_cpu("w", w.view, svd_for(512, 640, 61));
            QuantizedTensor q = quantize_cpu("w", w.view, {QuantFormat::Int8Block, 64});
            RoundingSettings s;
            s.optimizer = opt;
            s.num_iter = 40;
            learned_round_cpu("w", w.view, basis, s, q);
            results.push_back(q.codes);
        }
    }
    for (std::size_t i = 2; i < results.size(); ++i) CHECK(results[i] == results[i % 2]);
}
