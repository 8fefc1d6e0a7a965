// The finish's rounds on the host (kernels/move_rounds_host.cpp): the ranking, the chunk sums and the flips that
// the driver (kernels/learned_rounding_finish.cpp) builds on, checked against plain loops over the pool. The GPU's
// rounds are checked against these, bit for bit, on the GPU machine (tests/test_gpu_rounds.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/refine_rules.hpp"
#include "kernels/rounding_work.hpp"

using namespace quantflow;

namespace {

struct Pool {
    std::int64_t rows = 60, cols = 50, k = 6;
    std::vector<MidpointMove> moves;
    std::vector<double> leverage, vt;
    std::vector<float> u;
    RoundsPool view() const { return {moves, leverage, u, vt, rows, cols, k}; }
};

Pool make_pool() {
    Pool p;
    std::mt19937 g(7);
    std::normal_distribution<float> n;
    p.u.resize(static_cast<std::size_t>(p.rows * p.k));
    for (float& x : p.u) x = n(g) * 0.1f;
    p.vt.resize(static_cast<std::size_t>(p.cols * p.k));
    for (double& x : p.vt) x = n(g) * 0.1;
    for (std::int64_t e = 0; e < p.rows * p.cols; e += 3) {  // every third element, in element order
        MidpointMove mv;
        mv.element = e;
        mv.delta = (e % 2 ? -1.0f : 1.0f) * (0.5f + 0.01f * static_cast<float>(e % 17));
        mv.cost = 0.001f * static_cast<float>(e % 11);
        mv.step = e % 2 ? -1 : 1;
        p.moves.push_back(mv);
        p.leverage.push_back(1e-6 * static_cast<double>(e % 5));
    }
    return p;
}

// The score of every candidate by plain loops: U (h.P) in double over i, then round_score.
std::vector<double> plain_scores(const Pool& p, const std::vector<double>& hp, double lambda, const std::vector<float>& delta,
                                 const std::vector<float>& cost) {
    std::vector<float> uph(static_cast<std::size_t>(p.rows * p.k)), vt(p.vt.begin(), p.vt.end());
    for (std::int64_t r = 0; r < p.rows; ++r)
        for (std::int64_t j = 0; j < p.k; ++j) {
            double s = 0;
            for (std::int64_t i = 0; i < p.k; ++i)
                s += static_cast<double>(p.u[static_cast<std::size_t>(r * p.k + i)]) * hp[static_cast<std::size_t>(i * p.k + j)];
            uph[static_cast<std::size_t>(r * p.k + j)] = static_cast<float>(s);
        }
    std::vector<double> score(p.moves.size());
    for (std::size_t i = 0; i < p.moves.size(); ++i) {
        const std::int64_t r = p.moves[i].element / p.cols, c = p.moves[i].element % p.cols;
        score[i] = round_score(uph.data() + r * p.k, vt.data() + c * p.k, p.k, delta[i], cost[i], p.leverage[i], lambda);
    }
    return score;
}

}  // namespace

TEST_CASE("host rounds: the head is the best positive scores, best first, ties by the lower index; sums and flips as plain loops") {
    const Pool p = make_pool();
    const auto rounds = make_host_rounds(p.view());
    std::vector<float> delta, cost;
    for (const MidpointMove& mv : p.moves) {
        delta.push_back(mv.delta);
        cost.push_back(mv.cost);
    }
    std::vector<double> hp(static_cast<std::size_t>(p.k * p.k));
    for (std::size_t i = 0; i < hp.size(); ++i) hp[i] = 0.05 * static_cast<double>(static_cast<int>(i % 7) - 3);
    std::vector<std::uint32_t> first;
    for (int round = 0; round < 3; ++round) {
        CAPTURE(round);
        const std::size_t cap = round == 1 ? 25 : 100000;
        std::vector<float> costs;
        const std::vector<std::uint32_t> head = rounds->rank(hp, 0.05, cap, costs);
        const std::vector<double> score = plain_scores(p, hp, 0.05, delta, cost);
        std::vector<std::uint32_t> want;
        for (std::uint32_t i = 0; i < score.size(); ++i)
            if (score[i] > 0) want.push_back(i);
        std::stable_sort(want.begin(), want.end(), [&](std::uint32_t a, std::uint32_t b) { return score[a] > score[b]; });
        REQUIRE(want.size() > 30);  // positives and non-positives both occur
        CHECK(want.size() < score.size());
        want.resize(std::min(want.size(), cap));
        CHECK(head == want);
        REQUIRE(costs.size() == head.size());
        for (std::size_t t = 0; t < head.size(); ++t) CHECK(costs[t] == cost[head[t]]);
        if (round == 0) first = head;
        // Chunks of 4 over the first 10: sums of delta u_r v_c^T in head order, in double.
        const std::size_t limit = std::min<std::size_t>(10, head.size());
        const std::vector<double> sums = rounds->chunk_sums(limit, 4);
        REQUIRE(sums.size() == 3 * static_cast<std::size_t>(p.k * p.k));
        for (std::size_t b = 0; b < 3; ++b)
            for (std::int64_t a = 0; a < p.k; ++a)
                for (std::int64_t c = 0; c < p.k; ++c) {
                    double s = 0;
                    for (std::size_t t = 4 * b; t < std::min(limit, 4 * b + 4); ++t) {
                        const std::int64_t e = p.moves[head[t]].element;
                        s += static_cast<double>(delta[head[t]]) * p.u[static_cast<std::size_t>(e / p.cols * p.k + a)] *
                             p.vt[static_cast<std::size_t>(e % p.cols * p.k + c)];
                    }
                    CHECK(sums[b * static_cast<std::size_t>(p.k * p.k) + static_cast<std::size_t>(a * p.k + c)] == s);
                }
        // The first 5 move: their move is back from now on.
        rounds->flip(5);
        for (std::size_t t = 0; t < 5 && t < head.size(); ++t) {
            delta[head[t]] = -delta[head[t]];
            cost[head[t]] = -cost[head[t]];
        }
        for (std::size_t t = 0; t < hp.size(); ++t) hp[t] += sums[t];
    }
    rounds->restart();
    std::vector<float> costs;
    std::vector<double> hp0(hp.size());
    for (std::size_t i = 0; i < hp0.size(); ++i) hp0[i] = 0.05 * static_cast<double>(static_cast<int>(i % 7) - 3);
    CHECK(rounds->rank(hp0, 0.05, 100000, costs) == first);
}
