// Rounding-aware finish (quantflow's extension of spec 5.3, on by default, --rounding-aware off disables):
// after the optimizer's final rounding, move single codes to a grid neighbour where that lowers the
// projected error L = ||U^T (W_hat - W) V^T|| at almost no cost in ||W_hat - W||.
//
// Moving element (r, c) by delta (one grid step, in dequantized units) changes P by delta * u_r v_c^T and
// ||W_hat - W||^2 by 2 e delta + delta^2 (e the element's current error). For an element that sits near a
// rounding midpoint and moves towards W, that cost is close to zero. The objective weights the optimizer's
// own k x k block of P (spec 5.3's L) far above the rest of the wider basis, and no move may leave L above
// its value after the optimizer's rounding. Each round: the gradient G = U P V
// ranks every element whose move lowers L to first order and costs under 10% of delta^2; candidates are
// taken greedily by gain per cost while the exact k x k update of P keeps lowering L and the total cost
// stays within a small share of ||W_hat - W||^2.
#include <cblas.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow {
namespace {

constexpr double kBudget = 2e-4;        // total cost, all rounds, at most this share of ||W_hat - W||^2 (+0.01%)
constexpr int kRounds = 2;
constexpr std::size_t kMinHead = 1 << 16;  // candidates kept per round: at least this many,
constexpr std::int64_t kHeadDivisor = 100;   // or one per 100 elements
constexpr double kPriorityWeight = 100;  // the optimizer's k x k block counts this much more than the rest

// Codes as ordered grid indices: FP8 -126..126 (sign-magnitude), INT8 -127..127.
int code_index(bool fp8, std::uint8_t code) {
    if (!fp8) return static_cast<std::int8_t>(code);
    const int mag = code & 0x7F;
    return (code & 0x80) ? -mag : mag;
}

std::uint8_t index_code(bool fp8, int index) {
    if (!fp8) return static_cast<std::uint8_t>(static_cast<std::int8_t>(index));
    return static_cast<std::uint8_t>(index < 0 ? (0x80 | -index) : index);
}


}  // namespace

RefineTables refine_tables(QuantFormat format) {
    const bool fp8 = is_fp8(format);
    const int max_index = fp8 ? 126 : 127;
    const auto values = code_values(format);
    RefineTables t{};  // zero: no move at the grid's ends
    for (int code = 0; code < 256; ++code) {
        const int at = code_index(fp8, static_cast<std::uint8_t>(code));
        if (std::isnan(values[static_cast<std::size_t>(code)]) || at < -max_index || at > max_index) continue;
        if (at < max_index) t.step_up[static_cast<std::size_t>(code)] = values[index_code(fp8, at + 1)] - values[static_cast<std::size_t>(code)];
        if (at > -max_index) t.step_down[static_cast<std::size_t>(code)] = values[index_code(fp8, at - 1)] - values[static_cast<std::size_t>(code)];
    }
    return t;
}

double refine_rounding(const LowRank& basis, QuantizedTensor& q, std::int64_t priority_k, std::int64_t& flips,
                       const std::function<std::vector<double>()>& project, const RefineCandidatePass& candidates,
                       const std::function<void()>& codes_changed) {
    const bool fp8 = is_fp8(q.spec.format);
    const std::int64_t m = basis.rows, n = basis.cols, k = basis.k;
    flips = 0;
    // Weighted objective sum_ij h_ij P_ij^2: the optimizer's own k x k block first (spec 5.3's L), then the
    // rest of the wider basis.
    std::vector<double> h(static_cast<std::size_t>(k * k), 1.0);
    for (std::int64_t i = 0; i < std::min(priority_k, k); ++i)
        for (std::int64_t j = 0; j < std::min(priority_k, k); ++j) h[static_cast<std::size_t>(i * k + j)] = kPriorityWeight;
    const auto weighted = [&](const std::vector<double>& x) {
        double s = 0;
        for (std::size_t i = 0; i < x.size(); ++i) s += h[i] * x[i] * x[i];
        return s;
    };
    const auto block2 = [&](const std::vector<double>& x) {  // the optimizer's L^2: never allowed to grow
        double s = 0;
        for (std::size_t i = 0; i < x.size(); ++i) s += h[i] == kPriorityWeight ? x[i] * x[i] : 0.0;
        return s;
    };
    std::vector<double> p = project();
    const double block_limit = block2(p);
    std::vector<float> vt(static_cast<std::size_t>(n * k));  // V^T: a column of V is contiguous
    for (std::int64_t j = 0; j < k; ++j)
        for (std::int64_t c = 0; c < n; ++c) vt[static_cast<std::size_t>(c * k + j)] = basis.v[static_cast<std::size_t>(j * n + c)];
    double spent = 0, budget = -1;
    for (int round = 0; round < kRounds; ++round) {
        const double start = std::sqrt(weighted(p));
        if (start == 0) break;
        // G = U (h.P) V ranks every element (the candidate pass); U (h.P) here.
        std::vector<float> up(static_cast<std::size_t>(m * k), 0.0f);
        for (std::int64_t r = 0; r < m; ++r)
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j)
                    up[static_cast<std::size_t>(r * k + j)] += static_cast<float>(basis.u[static_cast<std::size_t>(r * k + i)] *
                                                                                  h[static_cast<std::size_t>(i * k + j)] * p[static_cast<std::size_t>(i * k + j)]);
        double total_error2 = 0;
        std::vector<RefineCandidate> all = candidates(up, total_error2);
        // Only the best candidates can matter before the budget runs out: keep a generous head, sorted.
        const auto better = [](const RefineCandidate& a, const RefineCandidate& b) {
            return a.ratio != b.ratio ? a.ratio > b.ratio : a.element < b.element;
        };
        const std::size_t head = std::min(all.size(), std::max<std::size_t>(kMinHead, static_cast<std::size_t>(m * n / kHeadDivisor)));
        std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(head), all.end(), better);
        all.resize(head);
        std::sort(all.begin(), all.end(), better);
        double norm2 = start * start;
        if (budget < 0) budget = kBudget * total_error2;  // from round 0's pass
        const std::int64_t flips_before = flips;
        double block = block2(p);
        std::vector<double> hp(static_cast<std::size_t>(k * k)), ui(static_cast<std::size_t>(k));
        for (const RefineCandidate& cand : all) {
            if (spent + cand.cost > budget) break;
            const std::int64_t r = cand.element / n, c = cand.element % n;
            const float* u = basis.u.data() + r * k;
            const float* v = vt.data() + c * k;
            // ||P + d u v^T||_h^2 = ||P||_h^2 + 2 d u^T (h.P) v + d^2 sum h u_i^2 v_j^2, and the same on the block.
            double cross = 0, square = 0, block_cross = 0, block_square = 0;
            for (std::int64_t i = 0; i < k; ++i) {
                for (std::int64_t j = 0; j < k; ++j) {
                    const auto at = static_cast<std::size_t>(i * k + j);
                    const double uv = static_cast<double>(u[i]) * v[j];
                    const double a = p[at] * uv, b2 = uv * uv;
                    cross += h[at] * a;
                    square += h[at] * b2;
                    if (h[at] == kPriorityWeight) {
                        block_cross += a;
                        block_square += b2;
                    }
                }
            }
            const double d = cand.delta;
            const double next2 = norm2 + 2 * d * cross + d * d * square;
            const double next_block = block + 2 * d * block_cross + d * d * block_square;
            if (next2 >= norm2 || next_block > block_limit) continue;
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j) p[static_cast<std::size_t>(i * k + j)] += d * u[i] * static_cast<double>(v[j]);
            norm2 = next2;
            block = next_block;
            spent += cand.cost;
            auto& code = q.codes[static_cast<std::size_t>(cand.element)];
            code = index_code(fp8, code_index(fp8, code) + cand.step);
            ++flips;
        }
        if (flips > flips_before) codes_changed();
        if (std::sqrt(norm2) > 0.9 * start) break;  // little left to gain from another round
    }
    return frobenius(project());
}

double refine_rounding_cpu(const TensorView& w, const LowRank& basis, QuantizedTensor& q, std::int64_t priority_k,
                           std::int64_t& flips) {
    const RefineTables tables = refine_tables(q.spec.format);
    const auto values = code_values(q.spec.format);
    const std::int64_t m = basis.rows, n = basis.cols, k = basis.k;
    const auto pass = [&](const std::vector<float>& up, double& total_error2) {
        const std::int64_t band = band_rows(n), bands = (m + band - 1) / band;
        std::vector<std::vector<RefineCandidate>> found(static_cast<std::size_t>(bands));
        std::vector<double> error2(static_cast<std::size_t>(bands), 0.0);
        oneapi::tbb::parallel_for(std::int64_t{0}, bands, [&](std::int64_t b) {
            const std::int64_t r0 = b * band, rows = std::min(m, r0 + band) - r0;
            std::vector<float> g(static_cast<std::size_t>(rows * n)), wrow(static_cast<std::size_t>(n)), d(static_cast<std::size_t>(n));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(n), static_cast<int>(k), 1.0f,
                        up.data() + r0 * k, static_cast<int>(k), basis.v.data(), static_cast<int>(n), 0.0f, g.data(), static_cast<int>(n));
            auto& out = found[static_cast<std::size_t>(b)];
            double e2 = 0;
            for (std::int64_t i = 0; i < rows; ++i) {
                decode_row_cpu(w, r0 + i, 0, n, wrow.data());
                row_scales(q, r0 + i, d.data());
                const std::uint8_t* codes = q.codes.data() + (r0 + i) * n;
                const float* gr = g.data() + i * n;
                for (std::int64_t c = 0; c < n; ++c) {
                    const std::uint8_t code = codes[c];
                    const float sc = d[static_cast<std::size_t>(c)];
                    const float e = values[code] * sc - wrow[static_cast<std::size_t>(c)];
                    e2 += static_cast<double>(e) * e;
                    RefineCandidate cand;
                    if (refine_candidate(tables, code, sc, e, gr[c], (r0 + i) * n + c, cand)) out.push_back(cand);
                }
            }
            error2[static_cast<std::size_t>(b)] = e2;
        });
        std::vector<RefineCandidate> all;
        for (std::size_t b = 0; b < found.size(); ++b) {
            all.insert(all.end(), found[b].begin(), found[b].end());
            total_error2 += error2[b];
        }
        return all;
    };
    return refine_rounding(basis, q, priority_k, flips, [&] { return initial_projection(w, q, basis); }, pass, [] {});
}

}  // namespace quantflow
