// The CPU rounding work keeps its last projection and brings it up to date from the codes that re-rounding
// changed (kernels/cpu/projection_change_cpu.cpp): it must equal a fresh full projection of the new codes.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/learned_rounding.hpp"
#include "tests/rounding_weights.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;
using qftest::structured_weight;
using qftest::svd_for;
using qftest::Weight;

TEST_CASE("re-rounding brings the kept projection up to date from the changed codes alone") {
    const Weight w = structured_weight(256, 320, 91);
    const LowRank basis = top_k_svd_cpu("w", w.view, svd_for(256, 320, 91));
    for (const QuantSpec spec : {QuantSpec{QuantFormat::Fp8Tensor, 64}, QuantSpec{QuantFormat::Int8Block, 64}, QuantSpec{QuantFormat::Nvfp4, 16}}) {
        CAPTURE(format_label(spec.format));
        QuantizedTensor q = quantize_cpu("w", w.view, spec);
        const std::vector<std::uint8_t> rtn = q.codes;
        const auto work = make_rounding_work_cpu("w", w.view, basis, q);
        const std::int64_t k = basis.k;
        double e0 = 0;
        const std::vector<double> p0 = work->project(k, &e0);
        // The closed form's kind of correction, Z along P0, sized to move elements by about 0.1 code units (FP8
        // grids: U Z V / D; integer grids: U Z V * D), so that a few percent of the codes change.
        double mean_scale = 0;
        for (const float x : q.scales) mean_scale += static_cast<double>(q.global_scale) * x / static_cast<double>(q.scales.size());
        const double elements = std::sqrt(static_cast<double>(rtn.size())), l0 = frobenius(p0);
        const double c = is_integer_grid(spec.format) ? 0.1 * elements / (l0 * mean_scale) : 0.1 * elements * mean_scale / l0;
        std::vector<double> z(p0.size());
        for (std::size_t i = 0; i < z.size(); ++i) z[i] = c * p0[i];
        work->correct_and_round(z, k);
        work->fetch_codes(q);
        std::size_t changed = 0;
        for (std::size_t i = 0; i < rtn.size(); ++i) changed += q.codes[i] != rtn[i];
        MESSAGE(changed << " of " << rtn.size() << " codes changed");
        CHECK(changed > 20);
        CHECK(changed * 8 < rtn.size());  // the kept projection is followed, not dropped
        double e1 = 0, fresh_e = 0;
        const std::vector<double> p1 = work->project(k, &e1);
        const std::vector<double> fresh = initial_projection(w.view, q, basis, &fresh_e);
        double diff = 0;
        for (std::size_t i = 0; i < p1.size(); ++i) diff = std::max(diff, std::abs(p1[i] - fresh[i]));
        CHECK(std::abs(frobenius(p1) - l0) > 1e-3 * l0);  // the codes' change moved P and ||E||
        CHECK(std::abs(e1 - e0) > 1e-6 * e0);
        CHECK(diff <= 1e-12 * l0);
        CHECK(std::abs(e1 - fresh_e) <= 1e-12 * fresh_e);
    }
}
