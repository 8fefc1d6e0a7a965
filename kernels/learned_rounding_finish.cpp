// The rounding-aware finish (quantflow's extension of spec 5.3, `--rounding-aware on`, the default): after the
// optimizer's final rounding, move codes across their rounding midpoints so that the projected error
// P = U^T (W_hat - W) V^T falls, at almost no cost in ||W_hat - W||.
//
// Moving element (r, c) by delta (one grid step, dequantized units) changes P by delta u_r v_c^T and
// ||W_hat - W||^2 by cost = 2 e delta + delta^2 (e its current error): close to zero for an element near a
// midpoint moving towards W. Such moves are found once, in one full pass of the backend (midpoint_moves); an
// element's admissible move never changes, and a moved element can only move back (refunding its cost). The
// rest is rounds over that compact list, decided here and computed by the backend's MoveRounds (the GPU's keeps
// the list on the device; kernels/move_rounds_host.cpp is the host's; both give the same bits):
//  1. score every candidate exactly against the current k x k residual: the decrease of the weighted
//     ||P||_h^2 is -(2 delta u_r^T (h.P) v_c + delta^2 sum_ij h_ij u_ri^2 v_cj^2), per unit of
//     (cost + lambda delta^2);
//  2. take the best-scored moves that fit the remaining Frobenius budget, in order, and sum their exact
//     k x k updates in fixed chunks (in parallel);
//  3. keep the prefix (at a chunk boundary) whose exact residual is smallest — a line search over the number
//     of moves, since moves picked against the same residual overshoot together — and never let the
//     optimizer's own block of P (weight h = kPriorityWeight) rise above its value on entry.
// Up to the tuning's number of rounds (FinishTuning: 8, stopping early when a round gains under 2%); a second run
// with another lambda when the budget binds, and the better of the two kept. Where the old sequential greedy
// choice needed one exact update per move, every step here is a parallel pass; the numbers are in the closing
// note of issue 10 (tools/bench_quality.py).
// The candidates kept for the rounds (the backend keeps them in its pass: MidpointQuery) are those with the largest
// leverage delta^2 |u_r|^2 |v_c|^2 per cost.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>

#include "kernels/learned_rounding.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow {
namespace {

constexpr double kPriorityWeight = 100;  // the optimizer's k x k block of P counts this much more
// score = decrease / (cost + lambda delta^2). Where the Frobenius budget binds (FP8 on layers whose top
// subspace sits on a few large channels) lambda = 0, the knapsack ratio, does best; where it does not, 0.05
// converges further (numpy prototype of these rounds: 5.5x vs 1.7x lower L where the budget binds, 9x vs 168x
// where it does not). The first runs always; the second only when the
// first spent most of the budget, and the better one is kept.
// (The first lambda is the tuning's: kNarrowFinish's 0.05, or the wide finish's.)
constexpr double kBudgetBinds = 0.9;     // share of the budget spent that makes the second run worth it
constexpr double kCostFloor = 1e-6;      // of delta^2: a free move still has a finite score
constexpr int kChunks = 256;             // prefix lengths evaluated per round
// The pool (finish_pool_size): one candidate per FinishTuning::pool_divisor elements, at least 64 Ki (1/256 in
// place of 1/128: 1.65x -> 1.42x on structured weights).
constexpr std::size_t kHeadMin = 1 << 14;  // candidates ranked per round: at least this many, or 4x the last take,
                                           // at most FinishTuning::head_max

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// What the rounds share: the basis (V transposed, in double), the weights h of P's entries, and the leverage
// of every row and column on the whole basis and on the priority block.
struct FinishContext {
    const LowRank& basis;
    const FinishTuning& tuning;
    std::int64_t k, pk;
    std::vector<double> h, vt, un, unp, vn, vnp;
    double block_limit, budget;

    double weighted(const double* x) const {
        double s = 0;
        for (std::size_t i = 0; i < h.size(); ++i) s += h[i] * x[i] * x[i];
        return s;
    }
    double block2(const double* x) const {
        double s = 0;
        for (std::int64_t i = 0; i < pk; ++i)
            for (std::int64_t j = 0; j < pk; ++j) s += x[at(i * k + j)] * x[at(i * k + j)];
        return s;
    }
    // The second-order term of a move: delta^2 sum_ij h_ij u_ri^2 v_cj^2.
    double leverage(const MidpointMove& mv) const {
        const std::int64_t r = mv.element / basis.cols, c = mv.element % basis.cols;
        return midpoint_leverage(mv.delta, un[at(r)], vn[at(c)], unp[at(r)], vnp[at(c)], kPriorityWeight - 1);
    }
};

FinishContext make_context(const LowRank& basis, std::int64_t priority_k, const FinishTuning& tuning) {
    const std::int64_t m = basis.rows, n = basis.cols, k = basis.k, pk = std::min(priority_k, k);
    FinishContext x{basis, tuning, k, pk, std::vector<double>(at(k * k), 1.0), std::vector<double>(at(n * k)), std::vector<double>(at(m), 0.0),
                    std::vector<double>(at(m), 0.0), std::vector<double>(at(n), 0.0), std::vector<double>(at(n), 0.0), 0, 0};
    for (std::int64_t i = 0; i < pk; ++i)
        for (std::int64_t j = 0; j < pk; ++j) x.h[at(i * k + j)] = kPriorityWeight;
    for (std::int64_t r = 0; r < m; ++r)
        for (std::int64_t i = 0; i < k; ++i) {
            const double u = basis.u[at(r * k + i)];
            x.un[at(r)] += u * u;
            if (i < pk) x.unp[at(r)] += u * u;
        }
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t c = 0; c < n; ++c) {
            const double v = basis.v[at(i * n + c)];
            x.vt[at(c * k + i)] = v;
            x.vn[at(c)] += v * v;
            if (i < pk) x.vnp[at(c)] += v * v;
        }
    return x;
}

// Each candidate's second-order term (shared by both runs).
std::vector<double> pool_leverage(const FinishContext& x, const std::vector<MidpointMove>& moves) {
    std::vector<double> leverage(moves.size());
    for (std::size_t i = 0; i < moves.size(); ++i) leverage[i] = x.leverage(moves[i]);
    return leverage;
}

// One run of the rounds over the pool: the residual, what it spent, and which candidates are moved.
struct Run {
    std::vector<double> p;
    double loss2 = 0;
    double spent = 0;
    std::vector<char> moved;
};

Run run_rounds(const FinishContext& x, MoveRounds& rounds, std::size_t size, const std::vector<double>& p0, double lambda) {
    const std::int64_t kk = x.k * x.k;
    Run run{p0, x.weighted(p0.data()), 0, std::vector<char>(size, 0)};
    rounds.restart();
    std::vector<double> hp(at(kk));
    std::vector<float> costs;
    double& spent = run.spent;
    std::size_t cap = kHeadMin;
    for (int round = 0; round < x.tuning.max_rounds; ++round) {
        // Every candidate's exact decrease of ||P||_h^2 against the current residual, the `cap` best first.
        for (std::size_t t = 0; t < hp.size(); ++t) hp[t] = x.h[t] * run.p[t];
        const std::vector<std::uint32_t> head = rounds.rank(hp, lambda + kCostFloor, cap, costs);
        const std::size_t ranked = head.size();
        // The longest prefix within the remaining budget (a moved element moving back refunds its cost).
        std::size_t limit = 0;
        for (double cum = spent; limit < ranked && cum + costs[limit] <= x.budget; ++limit) cum += costs[limit];
        if (limit == 0) break;
        // Exact k x k updates of fixed chunks of the prefix, then the best chunk boundary.
        const std::size_t chunk = (limit + kChunks - 1) / kChunks, chunks = (limit + chunk - 1) / chunk;
        const std::vector<double> sums = rounds.chunk_sums(limit, chunk);
        std::vector<double> trial = run.p, best_p = run.p;
        double best = run.loss2;
        std::size_t best_chunks = 0;
        for (std::size_t b = 0; b < chunks; ++b) {
            for (std::size_t t = 0; t < trial.size(); ++t) trial[t] += sums[b * at(kk) + t];
            const double w = x.weighted(trial.data());
            if (w < best && x.block2(trial.data()) <= x.block_limit) {
                best = w;
                best_chunks = b + 1;
                best_p = trial;
            }
        }
        if (best_chunks == 0) break;
        const std::size_t take = std::min(limit, best_chunks * chunk);
        rounds.flip(take);
        for (std::size_t t = 0; t < take; ++t) {
            spent += costs[t];
            run.moved[head[t]] = static_cast<char>(!run.moved[head[t]]);
        }
        run.p = best_p;
        const double before = run.loss2;
        run.loss2 = best;
        // The whole ranked head was worth taking: rank more next round. Else stop once a round gains under min_gain.
        const bool whole = take == limit && limit == ranked;
        cap = std::min(x.tuning.head_max, whole ? 4 * cap : std::max(kHeadMin, 4 * take));
        if (!whole && run.loss2 > x.tuning.min_gain * x.tuning.min_gain * before) break;
    }
    return run;
}

}  // namespace

std::vector<double> rounding_aware_finish(RoundingWork& work, const LowRank& basis, std::int64_t priority_k, double budget,
                                          double rtn_error2, RoundingStats& stats, const std::vector<double>* p_now,
                                          const FinishTuning& tuning) {
    std::int64_t& flips = stats.flips;
    flips = 0;
    auto start = std::chrono::steady_clock::now();
    FinishContext x = make_context(basis, priority_k, tuning);
    std::vector<double> p = p_now ? *p_now : work.project(basis.k);
    x.block_limit = x.block2(p.data());
    if (x.weighted(p.data()) == 0) return p;
    double error2 = 0;
    // The pool: the candidates with the most leverage per cost (both runs share it).
    MidpointQuery query;
    query.cost_share = tuning.cost_share;
    query.keep = finish_pool_size(static_cast<std::uint64_t>(basis.rows * basis.cols), tuning.pool_divisor);
    query.lambda = tuning.lambda + kCostFloor;
    query.priority_extra = kPriorityWeight - 1;
    query.row = x.un;
    query.row_p = x.unp;
    query.col = x.vn;
    query.col_p = x.vnp;
    const std::vector<MidpointMove> moves = work.midpoint_moves(query, error2);
    if (moves.empty()) return p;
    // ||E|| may end at most (1 + budget) times round-to-nearest's: what the optimizer's rounding already added
    // comes off the finish's share.
    const double base = rtn_error2 > 0 ? rtn_error2 : error2;
    x.budget = std::max(0.0, (1 + budget) * (1 + budget) * base - error2);
    stats.finish_pass_seconds = seconds_since(start);
    start = std::chrono::steady_clock::now();
    const std::vector<double> leverage = pool_leverage(x, moves);
    const std::unique_ptr<MoveRounds> rounds =
        work.move_rounds(RoundsPool{moves, leverage, basis.u, x.vt, basis.rows, basis.cols, basis.k});
    Run best = run_rounds(x, *rounds, moves.size(), p, tuning.lambda);
    if (best.spent >= kBudgetBinds * x.budget) {
        Run run = run_rounds(x, *rounds, moves.size(), p, 0.0);
        if (run.loss2 < best.loss2) best = std::move(run);
    }
    std::vector<MidpointMove> chosen;
    for (std::size_t i = 0; i < moves.size(); ++i)
        if (best.moved[i]) chosen.push_back(moves[i]);  // the pool is in element order
    if (!chosen.empty()) work.move_codes(chosen);
    flips = static_cast<std::int64_t>(chosen.size());
    stats.finish_rounds_seconds = seconds_since(start);
    return best.p;
}

}  // namespace quantflow
