// The rounding-aware finish (kernels/learned_rounding_finish.cpp) and the basis it works on (issue 10): what it
// gains on random and structured weights, its guarantees for every format and optimizer, and the SVD's accuracy.
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/learned_rounding.hpp"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"
#include "tests/rounding_weights.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

using qftest::random_weight;
using qftest::structured_weight;
using qftest::svd_for;
using qftest::Weight;

TEST_CASE("rounding-aware finish lowers the projected error at almost no Frobenius cost") {
    for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8Tensor, 64}, QuantSpec{QuantFormat::Int8Block, 64}}) {
        CAPTURE(format_label(spec.format));
        const Weight w = random_weight(384, 512, 71);
        const LowRank basis = top_k_svd_cpu("w", w.view, svd_for(384, 512, 71));
        QuantizedTensor plain = quantize_cpu("w", w.view, spec), aware = plain;
        RoundingSettings s;
        s.rounding_aware = false;
        const RoundingStats a = learned_round_cpu("w", w.view, basis, s, plain);
        s.rounding_aware = true;
        const RoundingStats b = learned_round_cpu("w", w.view, basis, s, aware);
        CHECK(b.rounded_loss == qftest::relative(a.final_loss, 1e-9));
        CHECK(b.final_loss < 0.1 * a.final_loss);  // the reference's rounding keeps ~98% of L; this removes >90%
        CHECK(b.flips > 0);
        const QualityMetrics qa = measure_cpu(w.view, plain, &basis, {}), qb = measure_cpu(w.view, aware, &basis, {});
        // measure_cpu sums in float: its rounding error scales with L before the finish, not with the small L after it.
        CHECK(std::fabs(qb.projected_error - b.final_loss) <= 1e-4 * a.final_loss);
        CHECK(qb.error_norm < qa.error_norm * (1 + 1e-4));
        MESSAGE(format_label(spec.format) << ": L " << a.final_loss << " -> " << b.final_loss << " with " << b.flips
                << " moved codes; Frobenius error x" << qb.error_norm / qa.error_norm);
    }
}

// Issue 10: the optimizer's basis is the one an accurate SVD finds (subspace overlap >= 0.99) on weights with
// a decaying spectrum, with the default sketch (SvdSettings: oversampling 16, 3 power iterations).
TEST_CASE("randomized SVD overlaps the exact top-16 subspaces on structured weights") {
    const Weight w = structured_weight(384, 640, 81);
    SvdSettings fast{16, 81}, exact{16, 81};
    exact.exact = true;
    const LowRank a = top_k_svd_cpu("w", w.view, fast), e = top_k_svd_cpu("w", w.view, exact);
    const double ou = qftest::subspace_overlap(a.u, e.u, 384, 16, true), ov = qftest::subspace_overlap(a.v, e.v, 640, 16, false);
    MESSAGE("overlap u " << ou << ", v " << ov);
    CHECK(ou >= 0.99);
    CHECK(ov >= 0.99);
}

// Issue 10: the finish works for every format and after every optimizer: never worse than round-to-nearest on
// the projected error, within the Frobenius budget (+0.01%), and it lowers L on structured weights.
TEST_CASE("rounding-aware finish: every format and optimizer, never worse than round-to-nearest, Frobenius within +0.01%") {
    const Weight w = structured_weight(256, 384, 91);
    const LowRank basis = top_k_svd_cpu("w", w.view, {16, 91, 10, 4, false});
    const QuantSpec specs[] = {{QuantFormat::Fp8Tensor, 64}, {QuantFormat::Fp8Row, 64},   {QuantFormat::Fp8Block, 64},
                               {QuantFormat::Fp8Block2d, 64}, {QuantFormat::Int8Block, 64}, {QuantFormat::Int8Lode, 64},
                               {QuantFormat::Int8Tensor, 64}, {QuantFormat::Int8Row, 64},  {QuantFormat::Fp8E5m2Tensor, 64},
                               {QuantFormat::Mxfp8, 32},      {QuantFormat::Nvfp4, 16},     {QuantFormat::Int8ConvRot, 64},
                               {QuantFormat::W4a4ConvRot, 64}};
    for (const QuantSpec& spec : specs) {
        for (const Optimizer optimizer : {Optimizer::Original, Optimizer::AdamW, Optimizer::RAdam}) {
            CAPTURE(format_label(spec.format));
            CAPTURE(optimizer_name(optimizer));
            const QuantizedTensor rtn = quantize_cpu("w", w.view, spec);
            QuantizedTensor q = rtn;
            RoundingSettings s;
            s.optimizer = optimizer;
            s.num_iter = optimizer == Optimizer::Original ? 500 : 60;
            s.optimizer_k = 4;  // narrower than the basis: the finish also works on the wider one
            const RoundingStats st = learned_round_cpu("w", w.view, basis, s, q);
            const LowRank used = leading_components(basis, 4);
            const QualityMetrics before = measure_cpu(w.view, rtn, &used, {}), after = measure_cpu(w.view, q, &used, {});
            CHECK(after.projected_error <= before.projected_error * (1 + 1e-9));
            CHECK(std::fabs(after.projected_error - st.final_loss) <= 1e-5 * before.projected_error);  // as above
            // `original` with the finish: at most +0.01% over round-to-nearest in all (a rounded correction that costs
            // more is dropped); AdamW / RAdam may add +0.1% and the finish its +0.01% on top.
            CHECK(after.error_norm <= before.error_norm * (optimizer == Optimizer::Original ? 1 + 1e-4 + 1e-6 : 1 + 1e-3 + 1e-4 + 1e-6));  // 1e-6: measure_cpu sums in float
            MESSAGE(format_label(spec.format) << " " << optimizer_name(optimizer) << ": L x" << after.projected_error / before.projected_error
                    << ", Frobenius x" << after.error_norm / before.error_norm);
            CHECK(after.projected_error < 0.9 * before.projected_error);
        }
    }
}

// --rounding-effort thorough (kThoroughFinish): 8x the pool on a weight large enough for it (4 Mi elements: 256 Ki
// candidates instead of 64 Ki) reaches a lower projected error within the same Frobenius budget, and its memory is
// counted. Not under the sanitizers (4 Mi elements, twice: about a minute there, where CI's time is short; the
// thorough finish is the normal one's code over larger sizes, which the other finish tests run under them).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
TEST_CASE("thorough finish: a larger pool lowers the projected error further within the same budget" * doctest::skip(kSanitized)) {
    const std::int64_t rows = 2048, cols = 2048;
    const Weight w = structured_weight(rows, cols, 95);
    const LowRank basis = top_k_svd_cpu("w", w.view, svd_for(rows, cols, 95));
    const QuantSpec spec{QuantFormat::Fp8Tensor, 64};
    const QuantizedTensor rtn = quantize_cpu("w", w.view, spec);
    QuantizedTensor normal = rtn, thorough = rtn;
    RoundingSettings s;
    const RoundingStats a = learned_round_cpu("w", w.view, basis, s, normal);
    s.thorough_finish = true;
    const RoundingStats b = learned_round_cpu("w", w.view, basis, s, thorough);
    const QualityMetrics q0 = measure_cpu(w.view, rtn, &basis, {}), qa = measure_cpu(w.view, normal, &basis, {}),
                         qb = measure_cpu(w.view, thorough, &basis, {});
    MESSAGE("projected error / round-to-nearest's: normal " << qa.projected_error / q0.projected_error << " (" << a.flips
            << " moves), thorough " << qb.projected_error / q0.projected_error << " (" << b.flips << " moves)");
    CHECK(b.rounded_loss == a.rounded_loss);  // the same optimizer result before the finish
    CHECK(qb.projected_error < 0.98 * qa.projected_error);  // 0.779x -> 0.755x here; 0.61x -> 0.40x on WAN-14B shapes
    CHECK(b.flips > 2 * a.flips);
    CHECK(qb.error_norm <= q0.error_norm * (1 + 1e-4 + 1e-6));  // 1e-6: measure_cpu sums in float
    const LayerWork plain{rows, cols, DType::BF16, 16, Optimizer::Original, spec.format}, wide{rows, cols, DType::BF16, 16,
                                                                                                 Optimizer::Original, spec.format, true};
    const std::unique_ptr<Backend> cpu = make_cpu_backend();
    // 96 bytes per pool move at the selection's peak (learned_rounding_work_bytes), where the normal pool's fit in
    // 2 bytes per element.
    CHECK(cpu->layer_memory(wide).host >= cpu->layer_memory(plain).host + static_cast<std::uint64_t>(rows * cols / 16 * 96 - 2 * rows * cols));
}

// The host SVD's memory as it is: the sketch reads W in its file dtype and holds a few columns (until 2da11bf it
// held a float32 copy, and the plan still counted one: 283 MB per WAN FFN layer, which kept two FFN layers from
// running together on 2 cores); the exact SVD holds the copy, LAPACKE's row-major copies and gesdd's workspace
// (a 3072 x 2048 layer with --full_matrix peaked 121 MB above the sketch's run; counted: 252 MB).
TEST_CASE("host SVD memory: the sketch's columns, or the exact SVD's copies and workspace") {
    const std::uint64_t ffn = 13824ull * 5120ull;
    CHECK(svd_work_bytes(13824, 5120, 16, false, 2) > 4ull * (13824 + 5120) * 32);  // Y and Z at least
    CHECK(svd_work_bytes(13824, 5120, 16, false, 2) < 16ull << 20);  // 11.8 MB, against 283 MB for a float copy
    CHECK(svd_work_bytes(3072, 2048, 16, true, 2) >= 4ull * (3072 * 2048 + 4 * 2048 * 2048));
    const LayerWork sketch{13824, 5120, DType::BF16, 16, Optimizer::Original, QuantFormat::Fp8Tensor};
    LayerWork exact = sketch;
    exact.exact_svd = true;
    const std::unique_ptr<Backend> cpu = make_cpu_backend();
    CHECK(cpu->layer_memory(sketch).host < 2 * ffn + (16ull << 20));  // the finish's 2 bytes per element lead
    CHECK(cpu->layer_memory(exact).host >= cpu->layer_memory(sketch).host + 4 * ffn);
}

// Issue 11: learned NVFP4 starts from block scales searched for the least error (Backend::search_block_scales), keeps
// its Frobenius error relative to round-to-nearest's, and the wide finish spends the room on the projected error.
TEST_CASE("nvfp4: the scale search lowers the Frobenius error; learned rounding spends it on the projected error") {
    const Weight w = structured_weight(256, 384, 93);
    const LowRank basis = top_k_svd_cpu("w", w.view, {16, 93, 10, 4, false});
    const QuantizedTensor rtn = quantize_cpu("w", w.view, {QuantFormat::Nvfp4, 16});
    QuantizedTensor searched = rtn;
    const double rtn_error2 = search_block_scales_cpu(w.view, searched);
    const QualityMetrics before = measure_cpu(w.view, rtn, &basis, {}), at_search = measure_cpu(w.view, searched, &basis, {});
    CHECK(rtn_error2 == qftest::relative(before.error_norm * before.error_norm, 1e-5));  // measure sums in float
    CHECK(at_search.error_norm < 0.98 * before.error_norm);
    CHECK(searched.global_scale == rtn.global_scale);
    std::size_t changed = 0;
    for (std::size_t i = 0; i < rtn.scales.size(); ++i) {
        changed += searched.scales[i] != rtn.scales[i];
        CHECK(e4m3_to_f32(f32_to_e4m3(searched.scales[i])) == searched.scales[i]);  // still an e4m3 value
    }
    CHECK(changed > rtn.scales.size() / 4);
    QuantizedTensor again = searched;  // the codes are round-to-nearest's for the scales chosen
    encode_nvfp4_cpu(w.view, again);
    CHECK(again.codes == searched.codes);
    // The search alone must not raise the projected error much (its score penalises error along the weight).
    CHECK(at_search.projected_error < 1.2 * before.projected_error);

    RoundingSettings s;
    s.optimizer_k = 16;
    s.finish_budget = 1e-3;  // the plan's for 4-bit grids
    s.rtn_error2 = rtn_error2;
    QuantizedTensor learned = searched;
    learned_round_cpu("w", w.view, basis, s, learned);
    const QualityMetrics after = measure_cpu(w.view, learned, &basis, {});
    MESSAGE("nvfp4: Frobenius x" << at_search.error_norm / before.error_norm << " after the search, x" << after.error_norm / before.error_norm
            << " after learned rounding; projected x" << at_search.projected_error / before.projected_error << ", x"
            << after.projected_error / before.projected_error);
    CHECK(after.error_norm <= before.error_norm * (1 + 1e-3 + 1e-6));
    CHECK(after.projected_error < 0.5 * before.projected_error);
    CHECK(learned.scales == searched.scales);
}

namespace {

// Positions where two move lists of equal length differ in element, delta, cost or step.
std::size_t differing_moves(const std::vector<MidpointMove>& got, const std::vector<MidpointMove>& expected) {
    std::size_t differ = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
        differ += got[i].element != expected[i].element || got[i].delta != expected[i].delta || got[i].cost != expected[i].cost ||
                  got[i].step != expected[i].step;
    return differ;
}

}  // namespace

// The CPU pass collects only moves above a floor sampled from every 16th band when it keeps fewer than it finds
// (the wide finish would otherwise list half the layer's elements), and skips the elements whose leverage bound
// cannot reach that floor: the kept moves and the error are those of the whole list. Leverage nearly flat (the
// bound skips little), and spread over four decades as a trained layer's is (it skips most).
TEST_CASE("midpoint pass: a sampled floor keeps exactly the moves the whole list gives") {
    const std::int64_t rows = 1024, cols = 4096;  // 64 bands of 65536 elements: the floor is sampled
    const Weight w = random_weight(rows, cols, 23);
    LowRank basis;  // the pass reads only the query's leverage
    basis.rows = rows;
    basis.cols = cols;
    basis.k = 1;
    basis.u.assign(rows, 0.0f);
    basis.v.assign(cols, 0.0f);
    for (const bool spread : {false, true}) {
        CAPTURE(spread);
        std::vector<double> row(rows), row_p(rows), col(cols), col_p(cols);
        for (std::int64_t r = 0; r < rows; ++r) {
            const double x = static_cast<double>(r * 37 % 101) / 101;
            row[r] = spread ? std::pow(10.0, -4 * x) : 1 + x;
            row_p[r] = row[r] / 4;
        }
        for (std::int64_t c = 0; c < cols; ++c) {
            const double x = static_cast<double>(c * 53 % 97) / 97;
            col[c] = spread ? std::pow(10.0, -4 * x) : 1 + x;
            col_p[c] = col[c] / (spread && c % 5 == 0 ? 0.5 : 3);  // col_p > col too: the bound takes the larger
        }
        for (const auto& [spec, share] : {std::pair{QuantSpec{QuantFormat::Fp8Tensor, 64}, 0.1f}, std::pair{QuantSpec{QuantFormat::Nvfp4, 16}, 0.5f}}) {
            CAPTURE(format_label(spec.format));
            QuantizedTensor q = quantize_cpu("w", w.view, spec);
            const auto work = make_rounding_work_cpu("w", w.view, basis, q);
            const MidpointQuery all{share, std::size_t{1} << 40, 0.05, 99, row, row_p, col, col_p};
            MidpointQuery few = all;
            few.keep = 20000;
            double e2_all = 0, e2_few = 0;
            std::vector<MidpointMove> expected = work->midpoint_moves(all, e2_all);
            const std::size_t found = expected.size();
            keep_best_moves(expected, few, cols);
            const std::vector<MidpointMove> got = work->midpoint_moves(few, e2_few);
            MESSAGE(found << " admissible moves, " << got.size() << " kept");
            CHECK(found > 10 * few.keep);
            REQUIRE(got.size() == expected.size());
            CHECK(differing_moves(got, expected) == 0);
            CHECK(e2_few == e2_all);
            // With a projection kept, the error is the projection's (in double): the same up to rounding.
            double e2_projected = 0, e2_kept = 0;
            work->project(1, &e2_projected);
            CHECK(differing_moves(work->midpoint_moves(few, e2_kept), expected) == 0);
            CHECK(e2_kept == e2_projected);
            MESSAGE("error2: the pass " << e2_all << ", the projection " << e2_kept << " (relative " << (e2_kept - e2_all) / e2_all << ")");
            CHECK(e2_kept == qftest::relative(e2_all, 1e-7));  // measured 1.7e-8 and 2.7e-8: the pass sums float e
        }
    }
}

// The CPU pass (midpoint_scan_cpu.cpp) compacts the filter's survivors and applies the move rule without branches:
// with no floor it lists exactly what midpoint_move (refine_rules.hpp) admits over every element, in element order,
// and ||dequant(q) - W||^2 within rounding of a plain double sum. Scales per tensor, per row and per block of 16;
// 300 columns leave a remainder after the four lanes and a ragged last block.
TEST_CASE("midpoint pass: the compacted, branch-free scan lists every move midpoint_move admits") {
    const std::int64_t rows = 96, cols = 300;
    const Weight w = random_weight(rows, cols, 31);
    const LowRank basis{rows, cols, 1, std::vector<float>(rows, 0.0f), std::vector<float>(cols, 0.0f), {1.0f}};
    const std::vector<double> ones_r(rows, 1.0), ones_c(cols, 1.0);
    for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8Tensor, 64}, QuantSpec{QuantFormat::Int8Row, 64}, QuantSpec{QuantFormat::Nvfp4, 16}}) {
        CAPTURE(format_label(spec.format));
        QuantizedTensor q = quantize_cpu("w", w.view, spec);
        const RefineTables t = refine_tables(spec.format);
        const auto values = code_values(spec.format);
        const float share = 0.3f;
        std::vector<MidpointMove> expected;
        double e2_expected = 0;
        std::vector<float> wrow(cols), d(cols);
        for (std::int64_t r = 0; r < rows; ++r) {
            decode_row_cpu(w.view, r, 0, cols, wrow.data());
            row_scales(q, r, d.data());
            for (std::int64_t c = 0; c < cols; ++c) {
                const float e = values[q.codes[static_cast<std::size_t>(r * cols + c)]] * d[c] - wrow[c];
                e2_expected += static_cast<double>(e) * e;
                MidpointMove mv;
                if (!midpoint_move(t, q.codes[static_cast<std::size_t>(r * cols + c)], d[c], e, share, mv.delta, mv.cost, mv.step)) continue;
                mv.element = r * cols + c;
                expected.push_back(mv);
            }
        }
        const auto work = make_rounding_work_cpu("w", w.view, basis, q);
        double e2 = 0;
        const std::vector<MidpointMove> got = work->midpoint_moves({share, std::size_t{1} << 40, 0.05, 0, ones_r, ones_r, ones_c, ones_c}, e2);
        MESSAGE(got.size() << " moves of " << rows * cols << " elements");
        CHECK(expected.size() > 100);
        REQUIRE(got.size() == expected.size());
        CHECK(differing_moves(got, expected) == 0);
        CHECK(e2 == qftest::relative(e2_expected, 1e-12));
    }
}
