// The randomized SVD both backends run (kernels/sketch_svd.hpp), driven by products over a host matrix: how many
// passes over the weight it makes, and that it finds the exact top-k subspace and values on a decaying spectrum.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/sketch_svd.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

// The panels in double loops on the host, with W [rows, cols] as float: the products counted, and the panels
// brought in from the host after the sketch (the Householder fallbacks).
class ReferencePanels final : public SketchPanels {
public:
    ReferencePanels(std::vector<float> w, std::int64_t rows, std::int64_t cols, std::int64_t l)
        : w_(std::move(w)), rows_(rows), cols_(cols), l_(l), y_(static_cast<std::size_t>(rows * l)), z_(static_cast<std::size_t>(cols * l)) {}
    void set(SketchPanel p, const float* host) override {
        ++sets;
        std::copy_n(host, panel(p).size(), panel(p).begin());
    }
    void get(SketchPanel p, float* host) override { std::copy(panel(p).begin(), panel(p).end(), host); }
    void multiply(SketchPanel to) override {
        ++passes;
        const bool left = to == SketchPanel::Left;
        const std::int64_t out_rows = left ? rows_ : cols_, inner = left ? cols_ : rows_;
        const std::vector<float>& in = left ? z_ : y_;
        std::vector<float>& out = panel(to);
        for (std::int64_t o = 0; o < out_rows; ++o)
            for (std::int64_t j = 0; j < l_; ++j) {
                double s = 0;
                for (std::int64_t i = 0; i < inner; ++i)
                    s += static_cast<double>(left ? w_[static_cast<std::size_t>(o * cols_ + i)] : w_[static_cast<std::size_t>(i * cols_ + o)]) *
                         in[static_cast<std::size_t>(i * l_ + j)];
                out[static_cast<std::size_t>(o * l_ + j)] = static_cast<float>(s);
            }
    }
    void gram(SketchPanel p, double* g) override {
        const std::vector<float>& a = panel(p);
        const std::int64_t n = static_cast<std::int64_t>(a.size()) / l_;
        for (std::int64_t i = 0; i < l_; ++i)
            for (std::int64_t j = 0; j < l_; ++j) {
                double s = 0;
                for (std::int64_t r = 0; r < n; ++r) s += static_cast<double>(a[static_cast<std::size_t>(r * l_ + i)]) * a[static_cast<std::size_t>(r * l_ + j)];
                g[i * l_ + j] = s;
            }
    }
    void right_multiply(SketchPanel p, const float* m) override {
        std::vector<float>& a = panel(p);
        const std::vector<float> old = a;
        const std::int64_t n = static_cast<std::int64_t>(a.size()) / l_;
        for (std::int64_t r = 0; r < n; ++r)
            for (std::int64_t j = 0; j < l_; ++j) {
                double s = 0;
                for (std::int64_t i = 0; i < l_; ++i) s += static_cast<double>(old[static_cast<std::size_t>(r * l_ + i)]) * m[i * l_ + j];
                a[static_cast<std::size_t>(r * l_ + j)] = static_cast<float>(s);
            }
    }
    int passes = 0, sets = 0;

private:
    std::vector<float>& panel(SketchPanel p) { return p == SketchPanel::Left ? y_ : z_; }
    std::vector<float> w_;
    std::int64_t rows_, cols_, l_;
    std::vector<float> y_, z_;
};

std::vector<float> decode_bf16(const std::vector<std::byte>& bytes) {
    std::vector<float> out(bytes.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
        std::uint32_t bits = 0;
        std::memcpy(reinterpret_cast<char*>(&bits) + 2, &bytes[2 * i], 2);
        std::memcpy(&out[i], &bits, 4);
    }
    return out;
}

double orthonormality_error(const std::vector<float>& u, std::int64_t rows, std::int64_t k) {
    double worst = 0;
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j) {
            double s = 0;
            for (std::int64_t r = 0; r < rows; ++r) s += static_cast<double>(u[static_cast<std::size_t>(r * k + i)]) * u[static_cast<std::size_t>(r * k + j)];
            worst = std::max(worst, std::abs(s - (i == j ? 1.0 : 0.0)));
        }
    return worst;
}

}  // namespace

TEST_CASE("sketch SVD: 2q + 1 passes over the weight, CholeskyQR2 on a decaying spectrum, the exact top-k subspace") {
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{384, 256}, {256, 384}}) {
        CAPTURE(rows);
        const std::vector<std::byte> bytes = qftest::structured_bf16(rows, cols, 17);
        const TensorView view{bytes.data(), DType::BF16, rows, cols};
        const SvdSettings settings{16, 5, 16, 3, false};
        REQUIRE(sketch_columns(rows, cols, settings) == 32);
        ReferencePanels panels(decode_bf16(bytes), rows, cols, 32);
        const LowRank s = sketch_svd("w", rows, cols, settings, panels);
        CHECK(panels.passes == 7);
        CHECK(panels.sets == 1);  // the sketch only: no panel needed Householder QR on the host
        REQUIRE(s.k == 16);
        CHECK(orthonormality_error(s.u, rows, 16) < 1e-4);
        const LowRank exact = top_k_svd_cpu("w", view, {16, 5, 16, 3, true});
        const double ou = qftest::subspace_overlap(s.u, exact.u, rows, 16, true), ov = qftest::subspace_overlap(s.v, exact.v, cols, 16, false);
        MESSAGE("overlap with the exact top-16 subspaces: u " << ou << ", v " << ov);
        CHECK(ou >= 0.99);
        CHECK(ov >= 0.99);
        for (std::size_t i = 0; i < 4; ++i) CHECK(s.sigma[i] == qftest::relative(exact.sigma[i], 1e-4));
        // The CPU backend's panels (its own bands, in the file dtype) give the same subspace to float rounding.
        const LowRank cpu = top_k_svd_cpu("w", view, settings);
        CHECK(qftest::subspace_overlap(s.u, cpu.u, rows, 16, true) >= 1 - 1e-4);
        CHECK(qftest::subspace_overlap(s.v, cpu.v, cols, 16, false) >= 1 - 1e-4);
    }
}

TEST_CASE("sketch SVD: rank below the sketch's width falls back to Householder QR and gesdd on the host") {
    const std::int64_t rows = 96, cols = 80;
    SUBCASE("rank 2, k 6") {
        std::vector<float> w(static_cast<std::size_t>(rows * cols));
        for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t c = 0; c < cols; ++c)
                w[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(3.0 * std::sin(0.1 * r + 0.3) * std::cos(0.07 * c) + 0.5 * std::cos(0.2 * r) * std::sin(0.05 * c + 1));
        const TensorView view{reinterpret_cast<const std::byte*>(w.data()), DType::F32, rows, cols};
        ReferencePanels panels(w, rows, cols, 22);
        const LowRank s = sketch_svd("w", rows, cols, {6, 9, 16, 3, false}, panels);
        CHECK(panels.sets > 1);
        const LowRank exact = top_k_svd_cpu("w", view, {6, 9, 16, 3, true});
        for (std::size_t i = 0; i < 2; ++i) CHECK(s.sigma[i] == qftest::relative(exact.sigma[i], 1e-4));
        for (std::size_t i = 2; i < 6; ++i) CHECK(s.sigma[i] < 1e-4 * s.sigma[0]);
        CHECK(orthonormality_error(s.u, rows, 6) < 1e-4);
        const auto first_two = [&](const std::vector<float>& u) {
            std::vector<float> out;
            for (std::int64_t r = 0; r < rows; ++r) out.insert(out.end(), u.begin() + r * 6, u.begin() + r * 6 + 2);
            return out;
        };
        CHECK(qftest::subspace_overlap(first_two(s.u), first_two(exact.u), rows, 2, true) >= 1 - 1e-4);
    }
    SUBCASE("zero weight") {
        ReferencePanels panels(std::vector<float>(static_cast<std::size_t>(rows * cols), 0.0f), rows, cols, 22);
        const LowRank s = sketch_svd("w", rows, cols, {6, 9, 16, 3, false}, panels);
        for (const float x : s.sigma) CHECK(x == 0.0f);
        CHECK(std::all_of(s.u.begin(), s.u.end(), [](float x) { return std::isfinite(x); }));
        CHECK(std::all_of(s.v.begin(), s.v.end(), [](float x) { return std::isfinite(x); }));
    }
    SUBCASE("k + oversample is held to the smaller side") {
        const std::vector<std::byte> bytes = qftest::structured_bf16(40, 24, 3);
        REQUIRE(sketch_columns(40, 24, {16, 5, 16, 1, false}) == 24);
        ReferencePanels panels(decode_bf16(bytes), 40, 24, 24);
        const LowRank s = sketch_svd("w", 40, 24, {16, 5, 16, 1, false}, panels);
        CHECK(panels.passes == 3);
        CHECK(s.k == 16);
    }
}
