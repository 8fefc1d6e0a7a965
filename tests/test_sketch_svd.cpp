// The randomized SVD both backends run (kernels/sketch_svd.hpp), driven by products over a host matrix: how many
// passes over the weight it makes, and that it finds the exact top-k subspace and values on a decaying spectrum.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/sketch_svd.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

// W [rows, cols] as float, with its products counted and the widths they were asked for.
class CountingProducts final : public SketchProducts {
public:
    CountingProducts(std::vector<float> w, std::int64_t rows, std::int64_t cols) : w_(std::move(w)), rows_(rows), cols_(cols) {}
    void times(const float* x, std::int64_t l, float* y) override {
        ++passes;
        widths.push_back(l);
        for (std::int64_t r = 0; r < rows_; ++r)
            for (std::int64_t j = 0; j < l; ++j) {
                double s = 0;
                for (std::int64_t c = 0; c < cols_; ++c) s += static_cast<double>(w_[static_cast<std::size_t>(r * cols_ + c)]) * x[c * l + j];
                y[r * l + j] = static_cast<float>(s);
            }
    }
    void times_transposed(const float* y, std::int64_t l, float* z) override {
        ++passes;
        widths.push_back(l);
        for (std::int64_t c = 0; c < cols_; ++c)
            for (std::int64_t j = 0; j < l; ++j) {
                double s = 0;
                for (std::int64_t r = 0; r < rows_; ++r) s += static_cast<double>(w_[static_cast<std::size_t>(r * cols_ + c)]) * y[r * l + j];
                z[c * l + j] = static_cast<float>(s);
            }
    }
    int passes = 0;
    std::vector<std::int64_t> widths;

private:
    std::vector<float> w_;
    std::int64_t rows_, cols_;
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

}  // namespace

TEST_CASE("sketch SVD: 2q + 1 passes over the weight on k + oversample columns, and the exact top-k subspace") {
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{384, 256}, {256, 384}}) {
        CAPTURE(rows);
        const std::vector<std::byte> bytes = qftest::structured_bf16(rows, cols, 17);
        const TensorView view{bytes.data(), DType::BF16, rows, cols};
        CountingProducts products(decode_bf16(bytes), rows, cols);
        const LowRank s = sketch_svd("w", rows, cols, {16, 5, 16, 3, false}, products);
        CHECK(products.passes == 7);
        CHECK(std::all_of(products.widths.begin(), products.widths.end(), [](std::int64_t l) { return l == 32; }));
        REQUIRE(s.k == 16);
        const LowRank exact = top_k_svd_cpu("w", view, {16, 5, 16, 3, true});
        const double ou = qftest::subspace_overlap(s.u, exact.u, rows, 16, true), ov = qftest::subspace_overlap(s.v, exact.v, cols, 16, false);
        MESSAGE("overlap with the exact top-16 subspaces: u " << ou << ", v " << ov);
        CHECK(ou >= 0.99);
        CHECK(ov >= 0.99);
        for (std::size_t i = 0; i < 4; ++i) CHECK(s.sigma[i] == qftest::relative(exact.sigma[i], 1e-4));
        // The CPU backend's products (its own bands, in the file dtype) give the same subspace to float rounding.
        const LowRank cpu = top_k_svd_cpu("w", view, {16, 5, 16, 3, false});
        CHECK(qftest::subspace_overlap(s.u, cpu.u, rows, 16, true) >= 1 - 1e-4);
    }
    SUBCASE("k + oversample is held to the smaller side") {
        const std::vector<std::byte> bytes = qftest::structured_bf16(40, 24, 3);
        CountingProducts products(decode_bf16(bytes), 40, 24);
        const LowRank s = sketch_svd("w", 40, 24, {16, 5, 16, 1, false}, products);
        CHECK(products.passes == 3);
        CHECK(products.widths.front() == 24);
        CHECK(s.k == 16);
    }
}
