// [gpu] The rounding-aware finish's rounds on the device (kernels/cuda/move_rounds.cu) against the host's
// (kernels/move_rounds_host.cpp): the same head, costs and chunk sums, bit for bit, round after round.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "kernels/learned_rounding.hpp"
#include "kernels/refine_rules.hpp"
#include "kernels/rounding_work.hpp"
#include "tests/gpu_support.hpp"

using namespace quantflow;
using qftest::gpu;

namespace {

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

}  // namespace

TEST_CASE("gpu finish rounds: the device ranks, sums and flips as the host does, bit for bit") {
    const std::int64_t rows = 384, cols = 512, k = 16;
    const std::vector<std::byte> bytes = qftest::structured_bf16(static_cast<std::size_t>(rows), static_cast<std::size_t>(cols), 31);
    const TensorView w{bytes.data(), DType::BF16, rows, cols};
    const LowRank basis = top_k_svd_cpu("w", w, {16, 31, 10, 4, false});
    QuantizedTensor q = quantize_cpu("w", w, QuantSpec{QuantFormat::Fp8Tensor, 64});
    const auto dev = gpu().rounding_work("w", w, basis, q);
    const qftest::BasisLeverage on_basis = qftest::basis_leverage(basis, k);
    std::vector<double> vt(static_cast<std::size_t>(cols * k));  // V^T in double, as the finish hands it over
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t c = 0; c < cols; ++c) vt[static_cast<std::size_t>(c * k + i)] = basis.v[static_cast<std::size_t>(i * cols + c)];
    const MidpointQuery query{kMidpointCostShare, std::size_t{1} << 30, 0.05, 0, on_basis.row, on_basis.row, on_basis.col, on_basis.col};
    double e2 = 0;
    const std::vector<MidpointMove> moves = dev->midpoint_moves(query, e2);
    REQUIRE(moves.size() > 4000);
    std::vector<double> leverage(moves.size());
    for (std::size_t i = 0; i < moves.size(); ++i) {
        const auto r = static_cast<std::size_t>(moves[i].element / cols), c = static_cast<std::size_t>(moves[i].element % cols);
        leverage[i] = midpoint_leverage(moves[i].delta, on_basis.row[r], on_basis.col[c], 0, 0, 0);
    }
    const RoundsPool pool{moves, leverage, basis.u, vt, rows, cols, k};
    const auto host = make_host_rounds(pool);
    const auto device = dev->move_rounds(pool);
    // A residual to score against: P of the round-to-nearest codes, weighted.
    std::vector<double> hp = dev->project(k);
    std::vector<std::uint32_t> first;
    for (int round = 0; round < 4; ++round) {
        CAPTURE(round);
        const std::size_t cap = round == 2 ? std::size_t{1} << 20 : 700;  // round 2 ranks every positive candidate
        std::vector<float> ch, cd;
        const std::vector<std::uint32_t> hh = host->rank(hp, 0.05, cap, ch), hd = device->rank(hp, 0.05, cap, cd);
        REQUIRE(hh.size() > 100);
        CHECK(hd == hh);
        CHECK(cd == ch);
        if (round == 0) first = hh;
        const std::size_t limit = std::min<std::size_t>(hh.size(), 400);
        const std::vector<double> sh = host->chunk_sums(limit, 7), sd = device->chunk_sums(limit, 7);
        CHECK(sh.size() == (limit + 6) / 7 * static_cast<std::size_t>(k * k));
        CHECK(same_bits(sd, sh));
        host->flip(limit / 2);
        device->flip(limit / 2);
        // The next residual: what the taken moves did (so later rounds see moved candidates, whose move is back).
        for (std::size_t b = 0; b < limit / 2 / 7; ++b)
            for (std::size_t t = 0; t < hp.size(); ++t) hp[t] += sh[b * hp.size() + t];
    }
    host->restart();
    device->restart();
    std::vector<float> ch, cd;
    const std::vector<double> p0 = dev->project(k);
    CHECK(host->rank(p0, 0.05, 700, ch) == first);
    CHECK(device->rank(p0, 0.05, 700, cd) == first);
}
