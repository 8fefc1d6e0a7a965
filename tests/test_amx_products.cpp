// The randomized SVD's products on Intel AMX tiles (kernels/cpu/amx_products_cpu.hpp) against the float loops they
// stand in for: within 1e-5 relative (the sketch columns carry 16 bits in their two bf16 parts), including a row
// count that leaves a block of 32 after the tasks of 64, a column count that leaves a narrow band after the bands of
// 1024, and a sketch of 40 columns (a second, zero-padded chunk); the same bits for every thread count. On a CPU
// without AMX the test says so and checks only which weights fit.
#include <doctest/doctest.h>

#include <oneapi/tbb/global_control.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/amx_products_cpu.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
        den += static_cast<double>(want[i]) * want[i];
    }
    return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("amx products: which weights fit") {
    const std::vector<std::byte> bytes = qftest::random_bf16(96 * 64, 1);
    CHECK(amx_fits({bytes.data(), DType::BF16, 96, 64}));
    CHECK_FALSE(amx_fits({bytes.data(), DType::BF16, 96, 48}));
    CHECK_FALSE(amx_fits({bytes.data(), DType::BF16, 80, 64}));
    CHECK_FALSE(amx_fits({bytes.data(), DType::F16, 96, 64}));
    CHECK_FALSE(amx_fits({bytes.data(), DType::F32, 32, 32}));
}

TEST_CASE("amx products equal the float loops to 1e-5, the same bits for every thread count") {
    if (!amx_usable()) {
        MESSAGE("this CPU (or QF_CPU_AMX=0) has no AMX tiles: the SVD runs the float loops");
        return;
    }
    const std::int64_t rows = 352, cols = 1248;  // 5 tasks of 64 rows and a block of 32; a band of 1024 and one of 224
    const std::vector<std::byte> bytes = qftest::structured_bf16(rows, cols, 29);
    const TensorView w{bytes.data(), DType::BF16, rows, cols};
    REQUIRE(amx_fits(w));
    std::mt19937 g(3);
    std::normal_distribution<float> normal;
    for (const std::int64_t p : {32, 40}) {
        CAPTURE(p);
        std::vector<float> x(static_cast<std::size_t>(cols * p)), y(static_cast<std::size_t>(rows * p));
        for (auto& v : x) v = normal(g);
        for (auto& v : y) v = normal(g);
        std::vector<float> nn(static_cast<std::size_t>(rows * p)), nn_ref(nn.size()), tn(static_cast<std::size_t>(cols * p)), tn_ref(tn.size());
        gemm_nn(w, x.data(), p, nn_ref.data());
        gemm_tn(w, y.data(), p, tn_ref.data());
        gemm_nn_amx(w, x.data(), p, nn.data());
        gemm_tn_amx(w, y.data(), p, tn.data());
        MESSAGE("relative error: W x " << relative_error(nn, nn_ref) << ", W^T y " << relative_error(tn, tn_ref));
        CHECK(relative_error(nn, nn_ref) < 1e-5);
        CHECK(relative_error(tn, tn_ref) < 1e-5);
        for (const int threads : {1, 3}) {
            const oneapi::tbb::global_control limit(oneapi::tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
            std::vector<float> nn2(nn.size()), tn2(tn.size());
            gemm_nn_amx(w, x.data(), p, nn2.data());
            gemm_tn_amx(w, y.data(), p, tn2.data());
            CHECK(nn2 == nn);
            CHECK(tn2 == tn);
        }
    }
}
