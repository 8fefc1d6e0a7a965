// The rounding-aware finish's rounds on the host (RoundingWork::move_rounds' default, kernels/rounding_work.hpp):
// oneTBB loops over the pool. Every step gives the same bits whatever the thread count, and the same bits as the
// CUDA backend's rounds (kernels/cuda/move_rounds.cu): the score is refine_rules.hpp's round_score, the sums run
// in head order in double, and the ranking is a total order.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_sort.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "kernels/refine_rules.hpp"
#include "kernels/rounding_work.hpp"
#include "kernels/vector_clones.hpp"

namespace quantflow {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// uph[r, :] = U[r, :] (h.P) for rows [from, to), accumulated in double over i in order, stored as float.
QF_VECTOR_CLONES void rank_rows(std::int64_t from, std::int64_t to, std::int64_t k, const float* u, const double* hp, double* acc,
                                float* uph) {
    for (std::int64_t r = from; r < to; ++r) {
        for (std::int64_t j = 0; j < k; ++j) acc[j] = 0;
        for (std::int64_t i = 0; i < k; ++i) {
            const double ui = u[r * k + i];
            for (std::int64_t j = 0; j < k; ++j) acc[j] += ui * hp[i * k + j];
        }
        for (std::int64_t j = 0; j < k; ++j) uph[r * k + j] = static_cast<float>(acc[j]);
    }
}

// round_score's dot product for k = 16 with its four partial sums as the lanes of one vector: lane l of
// ((q0 + q1) + q2) + q3 adds the products j = l, l + 4, l + 8, l + 12 in round_score's order, so the bits are
// round_score's (GCC kept the partial sums scalar and spilled them: score_moves was 5% of a 2-core default run).
using Lanes4 = float __attribute__((vector_size(16)));
inline float dot16(const float* a, const float* b) {
    Lanes4 q[4];
    for (int i = 0; i < 4; ++i) {
        Lanes4 x, y;
        std::memcpy(&x, a + 4 * i, sizeof x);
        std::memcpy(&y, b + 4 * i, sizeof y);
        q[i] = x * y;
    }
    const Lanes4 s = ((q[0] + q[1]) + q[2]) + q[3];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

QF_VECTOR_CLONES void score_moves(std::size_t from, std::size_t to, std::int64_t k, const float* uph, const float* vt,
                                  const std::int64_t* row_at, const std::int64_t* col_at, const float* delta, const float* cost,
                                  const double* leverage, double lambda, double* score) {
    if (k == 16) {
        for (std::size_t i = from; i < to; ++i)
            score[i] = round_score_of(dot16(uph + row_at[i], vt + col_at[i]), delta[i], cost[i], leverage[i], lambda);
        return;
    }
    for (std::size_t i = from; i < to; ++i)
        score[i] = round_score(uph + row_at[i], vt + col_at[i], k, delta[i], cost[i], leverage[i], lambda);
}

// s += sum over the head's moves [from, to) of delta u_r v_c^T (k x k, in double, in order). The head's deltas and
// row / column offsets come in head order (HeadMove): read through the pool's indices, their cache misses were
// two thirds of this loop's time (perf: 4.4% of a 2-core default run).
struct HeadMove {
    std::int64_t row_at, col_at;
    double delta;
};
QF_VECTOR_CLONES void sum_moves(const HeadMove* head, std::size_t from, std::size_t to, std::int64_t k, const float* u_all,
                                const double* vt, double* s) {
    for (std::size_t t = from; t < to; ++t) {
        const double d = head[t].delta;
        const float* u = u_all + head[t].row_at;
        const double* v = vt + head[t].col_at;
        for (std::int64_t a = 0; a < k; ++a) {
            const double du = d * u[a];
            double* sa = s + a * k;
            for (std::int64_t c = 0; c < k; ++c) sa[c] += du * v[c];
        }
    }
}

// The `cap` best-scored candidates, best first: a threshold from every 16th candidate narrows what is ranked.
// Exact: everything at or above the threshold is collected, and when that is fewer than `cap` (of more
// positives) the whole set is. (score, index) pairs are unique, so the order does not depend on the threads.
std::vector<std::uint32_t> best_candidates(const std::vector<double>& score, std::size_t cap) {
    const std::size_t size = score.size();
    std::vector<double> sample;
    for (std::size_t i = 0; i < size; i += 16)
        if (score[i] > 0) sample.push_back(score[i]);
    double threshold = 0;
    const std::size_t rank = (cap + cap / 2) / 16;
    if (sample.size() > 2 * rank) {
        std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(rank), sample.end(), std::greater<>());
        threshold = sample[rank];
    }
    constexpr std::size_t kParts = 64;
    std::vector<std::pair<double, std::uint32_t>> ranking;
    std::size_t positives = 0;
    const auto collect = [&](double floor) {
        std::vector<std::vector<std::pair<double, std::uint32_t>>> parts(kParts);
        std::vector<std::size_t> counts(kParts, 0);
        oneapi::tbb::parallel_for(std::size_t{0}, kParts, [&](std::size_t b) {
            for (std::size_t i = b * size / kParts; i < (b + 1) * size / kParts; ++i) {
                if (!(score[i] > 0)) continue;
                ++counts[b];
                if (score[i] >= floor) parts[b].emplace_back(-score[i], static_cast<std::uint32_t>(i));  // ascending = best first
            }
        });
        ranking.clear();
        positives = 0;
        for (std::size_t b = 0; b < kParts; ++b) {
            positives += counts[b];
            ranking.insert(ranking.end(), parts[b].begin(), parts[b].end());
        }
    };
    collect(threshold);
    if (ranking.size() < std::min(positives, cap)) collect(0);
    const std::size_t ranked = std::min(ranking.size(), cap);
    std::nth_element(ranking.begin(), ranking.begin() + static_cast<std::ptrdiff_t>(ranked), ranking.end());
    ranking.resize(ranked);
    oneapi::tbb::parallel_sort(ranking.begin(), ranking.end());
    std::vector<std::uint32_t> head(ranked);
    for (std::size_t t = 0; t < ranked; ++t) head[t] = ranking[t].second;
    return head;
}

class HostMoveRounds final : public MoveRounds {
public:
    explicit HostMoveRounds(const RoundsPool& pool)
        : pool_(pool), k_(pool.k), delta_(pool.moves.size()), cost_(pool.moves.size()), row_at_(pool.moves.size()),
          col_at_(pool.moves.size()), score_(pool.moves.size()), uph_(at(pool.rows * pool.k)), vt_(pool.vt.begin(), pool.vt.end()) {
        for (std::size_t i = 0; i < pool.moves.size(); ++i) {
            row_at_[i] = pool.moves[i].element / pool.cols * k_;
            col_at_[i] = pool.moves[i].element % pool.cols * k_;
        }
        restart();
    }

    std::vector<std::uint32_t> rank(const std::vector<double>& hp, double lambda, std::size_t cap, std::vector<float>& costs) override {
        const std::int64_t m = pool_.rows;
        using Rows = oneapi::tbb::blocked_range<std::int64_t>;
        oneapi::tbb::parallel_for(Rows(0, m, 256), [&](const Rows& r) {
            std::vector<double> acc(at(k_));
            rank_rows(r.begin(), r.end(), k_, pool_.u.data(), hp.data(), acc.data(), uph_.data());
        });
        oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::size_t>(0, score_.size(), 4096),
                                  [&](const oneapi::tbb::blocked_range<std::size_t>& r) {
                                      score_moves(r.begin(), r.end(), k_, uph_.data(), vt_.data(), row_at_.data(), col_at_.data(),
                                                  delta_.data(), cost_.data(), pool_.leverage.data(), lambda, score_.data());
                                  });
        head_ = best_candidates(score_, cap);
        costs.resize(head_.size());
        head_moves_.resize(head_.size());
        for (std::size_t t = 0; t < head_.size(); ++t) {
            const std::uint32_t i = head_[t];
            costs[t] = cost_[i];
            head_moves_[t] = {row_at_[i], col_at_[i], delta_[i]};
        }
        return head_;
    }

    std::vector<double> chunk_sums(std::size_t limit, std::size_t chunk) override {
        const std::size_t kk = at(k_ * k_), chunks = (limit + chunk - 1) / chunk;
        std::vector<double> sums(chunks * kk, 0.0);
        oneapi::tbb::parallel_for(std::size_t{0}, chunks, [&](std::size_t b) {
            sum_moves(head_moves_.data(), b * chunk, std::min(limit, (b + 1) * chunk), k_, pool_.u.data(), pool_.vt.data(),
                      sums.data() + b * kk);
        });
        return sums;
    }

    void flip(std::size_t take) override {
        for (std::size_t t = 0; t < take; ++t) {
            const std::uint32_t i = head_[t];
            delta_[i] = -delta_[i];
            cost_[i] = -cost_[i];
        }
    }

    void restart() override {
        for (std::size_t i = 0; i < pool_.moves.size(); ++i) {
            delta_[i] = pool_.moves[i].delta;
            cost_[i] = pool_.moves[i].cost;
        }
    }

private:
    RoundsPool pool_;
    std::int64_t k_;
    std::vector<float> delta_, cost_;
    std::vector<std::int64_t> row_at_, col_at_;
    std::vector<double> score_;
    std::vector<float> uph_, vt_;  // the ranking's float copies
    std::vector<std::uint32_t> head_;
    std::vector<HeadMove> head_moves_;  // the head's moves in head order, for chunk_sums
};

}  // namespace

std::unique_ptr<MoveRounds> make_host_rounds(const RoundsPool& pool) { return std::make_unique<HostMoveRounds>(pool); }

}  // namespace quantflow
