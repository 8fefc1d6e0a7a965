// kernels/rounding_work.hpp: one layer's learned rounding as the backend-neutral driver
// (kernels/learned_rounding.cpp) sees it — the few full-size operations every backend implements over its own
// copies of the weight W, the codes q, the scales D and the basis (U [M, K], V [K, N], K the basis width).
//
// The driver owns every decision (the `original` lr schedule in the k x k space, the Adam loop rule, the
// rounding-aware finish's selection of moves); a RoundingWork only computes. All k x k matrices are row-major
// doubles; "the leading k components" means U's first k columns and V's first k rows (k <= K).
// Methods throw quantflow::Error (a failed device call names the tensor given at creation).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/adam_rules.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"

namespace quantflow {

// One admissible move of the rounding-aware finish: the element's code steps one grid point (`step` = +1 or
// -1 in grid order) across its rounding midpoint, towards W. `delta` is the change of W_hat in dequantized
// units and `cost` the growth of ||W_hat - W||^2 (2 e delta + delta^2, clamped at 0).
struct MidpointMove {
    std::int64_t element = 0;  // row * cols + col
    float delta = 0;
    float cost = 0;
    std::int8_t step = 0;
    // The 7 bytes the compiler would pad with, named and zeroed: every byte of a move copied between device
    // buffers is then written (compute-sanitizer's initcheck flagged the padding of copied moves).
    std::int8_t unused[7] = {};
};
static_assert(sizeof(MidpointMove) == 24, "MidpointMove has no implicit padding");

// Which admissible moves RoundingWork::midpoint_moves keeps: the `keep` with the largest value
// (kernels/refine_rules.hpp, midpoint_value) — a move's leverage on the basis per unit of Frobenius cost —
// ties broken by the lower element; all of them when there are at most `keep`, none when keep is 0 (then the
// leverage spans may be empty: the pass only measures error2). row / row_p hold sum_i u_ri^2
// over the whole basis / its priority block for every row, col / col_p the same of V for every column.
struct MidpointQuery {
    float cost_share = 0.1f;
    std::size_t keep = 0;
    double lambda = 0;           // cost + lambda * delta^2 in the denominator
    double priority_extra = 0;   // extra weight of the priority block in the leverage
    std::span<const double> row, row_p, col, col_p;
};

// The candidates of the finish's rounds: the moves midpoint_moves returned (element order), with what ranking them
// needs. The spans must outlive the MoveRounds made from them.
struct RoundsPool {
    std::span<const MidpointMove> moves;
    std::span<const double> leverage;  // each move's second-order term (midpoint_leverage)
    std::span<const float> u;          // U [rows, k], row-major: the basis' U at its full width k
    std::span<const double> vt;        // V^T [cols, k]
    std::int64_t rows = 0, cols = 0, k = 0;
};

// The full-size steps of the finish's rounds (kernels/learned_rounding_finish.cpp decides everything else). Each
// candidate is unmoved or moved; a moved one's only move is back (its delta and cost negated).
class MoveRounds {
public:
    virtual ~MoveRounds() = default;
    // Scores every candidate against hp = h.P (k x k, row-major) with round_score (refine_rules.hpp) and returns
    // the `cap` best of those scoring above 0, best first (ties: the lower index), their current costs in `costs`.
    // This ranking, "the head", is what chunk_sums and flip refer to.
    virtual std::vector<std::uint32_t> rank(const std::vector<double>& hp, double lambda, std::size_t cap, std::vector<float>& costs) = 0;
    // For every chunk b: the k x k sum over head[b chunk, min(limit, (b + 1) chunk)), in head order and in double, of
    // delta u_r v_c^T (chunks * k * k values, chunk after chunk).
    virtual std::vector<double> chunk_sums(std::size_t limit, std::size_t chunk) = 0;
    // Moves (or moves back) the head's first `take` candidates.
    virtual void flip(std::size_t take) = 0;
    // Every candidate unmoved again.
    virtual void restart() = 0;
};

// The rounds on the host (oneTBB): the CPU backend's, and any backend's that has none of its own.
std::unique_ptr<MoveRounds> make_host_rounds(const RoundsPool& pool);

class RoundingWork {
public:
    virtual ~RoundingWork() = default;

    // P = U_k^T (dequant(q) - W) V_k^T of the current codes (k x k); when error2 is given it receives
    // ||dequant(q) - W||^2 as well (the same pass).
    virtual std::vector<double> project(std::int64_t k, double* error2 = nullptr) = 0;

    // `original`'s closed form applied (spec 5.3): q <- round(q - (U_k Z V_k) * f), f = 1/D (FP8) or D (INT8),
    // with the clamp and rounding of spec 5.1/5.2. Z is k x k.
    virtual void correct_and_round(const std::vector<double>& z, std::int64_t k) = 0;

    // The INT8 `original` step operator applied with full-size products: U_k^T ((U_k Y V_k) * D^2) V_k^T.
    // Only called when the k-space operator would be too large (learned_rounding.cpp: use_k_space).
    virtual std::vector<double> int8_step_direct(const std::vector<double>& y, std::int64_t k) = 0;

    // AdamW / RAdam (spec 5.3) on a free offset of the codes over the leading k components. adam_begin zeroes
    // the offsets and moments and takes P0; adam_steps runs steps t0 .. t0 + count - 1 (each: adam_control of
    // kernels/adam_rules.hpp on the k x k state, then the fused full-size step), stopping early when the rule
    // says so, appends every evaluated loss to `losses` and returns the loop state; adam_finish rounds the
    // offsets of buffer `best_buffer` into the codes (spec 5.1/5.2).
    virtual void adam_begin(std::int64_t k, const std::vector<double>& p0, Optimizer optimizer, double lr) = 0;
    virtual AdamLoopState adam_steps(int t0, int count, std::vector<double>& losses) = 0;
    virtual void adam_finish(int best_buffer) = 0;

    // The rounding-aware finish's one full pass: of the elements whose move to the grid neighbour across its
    // midpoint (towards W) costs at most query.cost_share * delta^2, the query.keep best (see MidpointQuery),
    // in element order; error2 receives ||dequant(q) - W||^2 of the current codes. Deterministic whatever the
    // parallelism, and identical on every backend.
    virtual std::vector<MidpointMove> midpoint_moves(const MidpointQuery& query, double& error2) = 0;
    // Applies the moves' steps to the codes.
    virtual void move_codes(std::span<const MidpointMove> moves) = 0;
    // The rounds over a pool of those moves (bit-identical on every backend).
    virtual std::unique_ptr<MoveRounds> move_rounds(const RoundsPool& pool) { return make_host_rounds(pool); }

    // Puts back the codes the work was created with (round-to-nearest): the never-worse guarantee.
    virtual void reset_codes() = 0;
    // Makes q.codes (the tensor the work was created from) hold the current codes.
    virtual void fetch_codes(QuantizedTensor& q) = 0;
};

// Keeps the query.keep best of `moves` (in element order on entry and on return): the selection rule of
// midpoint_moves, for a backend that finds its moves on the host. `cols` is the weight's column count.
void keep_best_moves(std::vector<MidpointMove>& moves, const MidpointQuery& query, std::int64_t cols);

}  // namespace quantflow
