// kernels/rounding.hpp: the vocabulary of learned rounding (spec 5.3), shared by every backend and the tests.
//
// A weight W [M, N] gets a top-k basis (U_k [M, k], V_k [k, N]); learned rounding moves the quantized codes
// so that the projected error L = ||U_k^T (W_hat - W) V_k^T||_F shrinks, then rounds (spec 5.1/5.2).
// The lr schedule of the reference's `original` optimizer lives here as plain scalar code, so the closed
// forms of every backend and the literal oracle loop in the tests replay exactly the same decisions.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace quantflow {

// Top-k singular subspaces, row-major: u is rows x k, v is k x cols (the rows of V_k^T are right vectors).
struct LowRank {
    std::int64_t rows = 0, cols = 0, k = 0;
    std::vector<float> u;
    std::vector<float> v;
    std::vector<float> sigma;  // k singular values, descending
};

struct SvdSettings {
    std::int64_t k = 1;
    std::uint64_t seed = 0;      // the sketch's random signs (fill_signs)
    // Sketch columns beyond k and power iterations (each followed by re-orthonormalisation, QR). Spec 5.3 names 10
    // and 4; 16 and 3 cost 30% less on the CPU (k + 16 = 32 columns fill the products' tiles, where 26 were padded to
    // 32, and 7 passes over W instead of 10: svd_cpu.cpp ends the iterations on the right) for a subspace as close:
    // overlap with the exact top-16 subspaces >= 0.9993 on structured WAN-shaped weights where 10 and 4 gave
    // >= 0.9997 (tools/bench_svd_accuracy.py, issue 10's closing notes).
    int oversample = 16;
    int power_iterations = 3;
    bool exact = false;          // --full_matrix: LAPACK gesdd instead of the randomized method
};

// Weights with a side of at most this many get the exact SVD whatever --full_matrix says (the optimizer's and
// compare's): it costs milliseconds there, and on the flat spectra of small i.i.d.-like layers (the fixtures'
// 128 x 256: sigma_17 / sigma_16 = 0.98) a sketch's top-16 subspace is a different one each time.
inline constexpr std::int64_t kExactSvdSide = 256;
inline bool exact_svd_is_cheap(std::int64_t rows, std::int64_t cols) { return rows <= kExactSvdSide || cols <= kExactSvdSide; }

enum class Optimizer { Original, AdamW, RAdam };

// "original", "adamw", "radam"; throws Error(kUsage) otherwise.
Optimizer parse_optimizer(std::string_view text);
std::string_view optimizer_name(Optimizer optimizer);

// How the INT8 `original` iterates are run (spec 5.3): in the k x k space with a precomputed k^2 x k^2
// operator, or directly on M x N matrices. Auto picks the cheaper one for the shape.
enum class KSpaceMode { Auto, KSpace, Direct };

struct RoundingSettings {
    Optimizer optimizer = Optimizer::Original;
    int num_iter = 500;
    double lr = 0.01;
    KSpaceMode int8_mode = KSpaceMode::Auto;
    // quantflow's extension: after the final rounding, move single codes to a grid neighbour where that
    // lowers the projected error at (almost) no cost in Frobenius error. Off = the reference's result.
    bool rounding_aware = true;
    // The finish's Frobenius budget: ||W_hat - W|| may grow by this share (1e-4 = +0.01%).
    double finish_budget = 1e-4;
    // `--rounding-effort thorough`: the finish searches 8x the candidates (kThoroughFinish).
    bool thorough_finish = false;
    // ||W_hat - W||^2 of round-to-nearest when the codes on entry are not it (the scale search of
    // Backend::search_block_scales lowered it): `original` and the finish measure their budget against this.
    // 0: the codes on entry are round-to-nearest.
    double rtn_error2 = 0;
    // Leading components of the basis the optimizer works on (0 = all); the rounding-aware finish always
    // uses the whole basis, which may be wider (stages/optimizer.hpp: at least 16 components).
    std::int64_t optimizer_k = 0;
    // Called from the computing thread with (phase, step, steps): "svd", "optimize", "round". May be empty.
    std::function<void(std::string_view, int, int)> on_progress;
};

// What one learned rounding did, for progress, reports and tests.
struct RoundingStats {
    std::int64_t k = 0;
    int iterations = 0;        // loop iterations evaluated (loss computations)
    int best_iteration = 0;    // the iterate that was kept (0 = the round-to-nearest start)
    // Losses are on the optimizer's k components (the rounding-aware finish works on a wider basis).
    double initial_loss = 0;   // L of round-to-nearest
    double best_loss = 0;      // L of the kept continuous iterate
    double rounded_loss = 0;   // L after the optimizer's final rounding
    double final_loss = 0;     // L of the codes returned (after the rounding-aware finish, when on)
    std::int64_t flips = 0;    // codes the rounding-aware finish moved
    // The optimizer's rounded result cost more Frobenius error than allowed (original: the finish's budget; AdamW /
    // RAdam: +0.1%), so round-to-nearest was kept and the finish started from it.
    bool optimizer_reverted = false;
    // Wall seconds of the phases (--report): the optimizer (with its projections and rounding), the finish's
    // full pass over the weight (midpoint moves), its rounds (on the backend's MoveRounds), and the top-k SVD before
    // them all (set by the optimizer stage).
    double optimize_seconds = 0, finish_pass_seconds = 0, finish_rounds_seconds = 0, svd_seconds = 0;
    std::vector<double> losses;  // L of every evaluated iterate, in order (losses[0] = initial_loss)
};

// Error metrics of one quantized layer (`compare`, `--report`); all Frobenius norms.
struct QualityMetrics {
    double weight_norm = 0;       // ||W||
    double error_norm = 0;        // ||W_hat - W||
    double projected_error = 0;   // ||U_k^T (W_hat - W) V_k^T||, 0 without a basis
    double output_norm = 0;       // ||W X + b||   over the test inputs X [N, samples]
    double output_error = 0;      // ||(W_hat - W) X + (b_hat - b)||
};

// Test inputs of the output-error metric: X [N, samples] row-major, and the layer's bias before and after
// correction (both empty for a layer without bias).
struct QualityInputs {
    std::span<const float> x;
    std::int64_t samples = 0;
    std::span<const float> bias;
    std::span<const float> bias_new;
};

// Seconds elapsed since `start` (steady clock).
inline double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Frobenius norm of a k x k double matrix.
inline double frobenius(std::span<const double> p) {
    double s = 0;
    for (const double x : p) s += x * x;
    return std::sqrt(s);
}

// The leading k components of a basis.
LowRank leading_components(const LowRank& basis, std::int64_t k);

// k = min(max_k, max(min_k, floor(top_p * min(M, N)))), capped at min(M, N) and at least 1 (spec 5.3).
inline std::int64_t choose_k(std::int64_t rows, std::int64_t cols, double top_p, int min_k, int max_k) {
    const std::int64_t small = std::min(rows, cols);
    std::int64_t k = static_cast<std::int64_t>(std::floor(top_p * static_cast<double>(small)));
    k = std::min<std::int64_t>(max_k, std::max<std::int64_t>(min_k, k));
    return std::max<std::int64_t>(1, std::min(k, small));
}

// Bytes the host's SVD holds for a [rows, cols] weight: the sketch's few columns and each thread's decoded rows,
// or for the exact SVD the float32 weight and LAPACK gesdd's row-major copies, factors and workspace.
std::uint64_t svd_work_bytes(std::int64_t rows, std::int64_t cols, std::int64_t k, bool exact, unsigned threads);

// Bytes a learned rounding on the host holds beyond the input pages and the codes, for the byte budget and `plan`.
std::uint64_t learned_rounding_work_bytes(std::int64_t rows, std::int64_t cols, std::int64_t k, Optimizer optimizer,
                                          std::uint64_t finish_pool, bool exact_svd, unsigned threads);

// The reference's adaptive learning rate for `original` (spec 5.3 table). One call per loop iteration with
// the loss of the current iterate; says whether it improved (the iterate to keep) and whether to stop
// (checked before stepping). `lr()` is then the rate of the step that follows.
class LrSchedule {
public:
    LrSchedule(double lr, std::int64_t rows, std::int64_t cols, bool int8)
        : lr_(lr), shape_mult_(rows == cols ? 0.95 : 1.0), int8_(int8) {}

    struct Verdict {
        bool improved = false;
        bool stop = false;
    };

    Verdict observe(double loss) {
        Verdict v;
        if (loss < best_) {
            const int c = counter_;  // iterations since the last improvement, before this one
            best_ = loss;
            counter_ = 0;
            lr_ = std::min(lr_ * boost(c) * shape_mult_, 100.0);
            v.improved = true;
        } else {
            ++counter_;
            double factor, floor;
            decay(counter_, factor, floor);
            lr_ = std::max(lr_ * factor * shape_mult_, floor);
        }
        v.stop = loss < 1e-8 || lr_ < 1e-8 || counter_ > 500;
        return v;
    }
    double lr() const { return lr_; }
    double best() const { return best_; }

private:
    double boost(int c) const {
        if (int8_) return c < 50 ? 1.25 : c < 75 ? 1.375 : c < 100 ? 1.5 : 1.75;
        if (c < 50) return 1.25;
        if (c < 75) return 1.375;
        if (c < 100) return 1.5;
        if (c < 125) return 1.75;
        if (c < 150) return 2.0;
        if (c < 200) return 2.25;
        if (c < 250) return 2.5;
        if (c < 300) return 2.75;
        return 3.0;
    }
    void decay(int c, double& factor, double& floor) const {
        if (c <= 25) { factor = 0.95; floor = 9e-8; }
        else if (c <= 50) { factor = 0.97; floor = 8e-8; }
        else if (c <= 75) { factor = 0.985; floor = 7e-8; }
        else if (c <= 100) { factor = 0.9875; floor = 6e-8; }
        else if (int8_) { factor = 0.99; floor = 5e-8; }
        else if (c <= 150) { factor = 0.98875; floor = 5e-8; }
        else if (c <= 200) { factor = 0.99; floor = 4e-8; }
        else if (c <= 250) { factor = 0.99125; floor = 3e-8; }
        else if (c <= 300) { factor = 0.9925; floor = 2e-8; }
        else { factor = 0.995; floor = 5e-9; }
    }

    double lr_;
    double shape_mult_;
    bool int8_;
    double best_ = INFINITY;
    int counter_ = 0;
};

// PyTorch's AdamW / RAdam defaults (spec 5.3).
struct AdamConstants {
    static constexpr double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, adamw_weight_decay = 0.01;
};

// The per-step scalars of one PyTorch AdamW or RAdam step t (1-based): with these, the element update is
//   AdamW: d = d * decay - step_size * m / (sqrt(v) / bc2_sqrt + eps)
//   RAdam: d = d - step_size * m * (rect ? rect * bc2_sqrt / (sqrt(v) + eps) : 1)
struct AdamStep {
    double decay = 1;        // AdamW decoupled weight decay factor 1 - lr * wd
    double step_size = 0;    // AdamW: lr / bc1; RAdam: lr / bc1 (applied to the bias-corrected mean)
    double bc2_sqrt = 1;     // sqrt(1 - beta2^t)
    double rect = 0;         // RAdam rectification term, 0 when rho_t <= 5 (un-adapted step)
};

AdamStep adam_step_scalars(Optimizer optimizer, double lr, int t);

}  // namespace quantflow
