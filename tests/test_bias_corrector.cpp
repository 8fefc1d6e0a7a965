// Bias correction (spec 5.4): the sign is pinned by measuring the mean output error on inputs drawn
// around the calibration mean, for the corrected bias, the uncorrected bias and the reversed sign.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu/cpu_backend.hpp"
#include "stages/bias_corrector.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

TEST_CASE("bias correction lowers the mean output error; the reference's sign raises it") {
    const std::int64_t rows = 96, cols = 320;
    const auto w_bytes = qftest::random_f32(rows * cols, 21, 1.0f);
    const auto b_bytes = qftest::random_f32(rows, 22, 0.1f);
    const TensorView w{w_bytes.data(), DType::F32, rows, cols};
    auto backend = make_cpu_backend();
    CalibrationMeans means(5, 64);
    const LayerPlan lp{};
    TensorJob job;
    job.plan = &lp;
    job.quant = backend->quantize("l.weight", w, {QuantFormat::Int8Tensor, 64});
    correct_bias(job, w, b_bytes, DType::F32, *backend, means);

    std::vector<float> wf(rows * cols), b(rows), b_new(rows);
    std::memcpy(wf.data(), w_bytes.data(), w_bytes.size());
    std::memcpy(b.data(), b_bytes.data(), b_bytes.size());
    std::memcpy(b_new.data(), job.bias.data(), job.bias.size());
    // Calibration-distributed inputs: many samples around the calibration mean.
    const auto mean = means.for_width(cols);
    std::mt19937_64 rng(9);
    std::normal_distribution<double> noise(0.0, 0.05);
    const int samples = 200;
    std::vector<double> mean_err_none(rows, 0), mean_err_fixed(rows, 0), mean_err_reversed(rows, 0);
    for (int s = 0; s < samples; ++s) {
        std::vector<double> x(cols);
        for (std::int64_t c = 0; c < cols; ++c) x[c] = mean[c] + noise(rng);
        for (std::int64_t r = 0; r < rows; ++r) {
            double y = b[r], yq = 0;
            for (std::int64_t c = 0; c < cols; ++c) {
                y += wf[r * cols + c] * x[c];
                yq += static_cast<std::int8_t>(job.quant.codes[r * cols + c]) * static_cast<double>(job.quant.scales[0]) * x[c];
            }
            const double delta = b_new[r] - b[r];
            mean_err_none[r] += (y - (yq + b[r])) / samples;
            mean_err_fixed[r] += (y - (yq + b[r] + delta)) / samples;
            mean_err_reversed[r] += (y - (yq + b[r] - delta)) / samples;
        }
    }
    double none = 0, fixed = 0, reversed = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
        none += mean_err_none[r] * mean_err_none[r];
        fixed += mean_err_fixed[r] * mean_err_fixed[r];
        reversed += mean_err_reversed[r] * mean_err_reversed[r];
    }
    MESSAGE("mean output error^2: uncorrected " << none << ", corrected " << fixed << ", reference sign " << reversed);
    CHECK(fixed < 0.25 * none);
    CHECK(reversed > 2.0 * none);
}

TEST_CASE("calibration means: one vector per width, the same for the same seed, scaled by 1/sqrt(samples)") {
    CalibrationMeans a(1, 3072), b(1, 3072), c(2, 3072);
    const auto va = a.for_width(4096);
    const auto vb = b.for_width(4096);
    const auto vc = c.for_width(4096);
    CHECK(std::equal(va.begin(), va.end(), vb.begin()));
    CHECK_FALSE(std::equal(va.begin(), va.end(), vc.begin()));
    double sum2 = 0;
    for (const float v : va) sum2 += static_cast<double>(v) * v;
    // Variance of the mean of 3072 standard normals is 1/3072.
    CHECK(sum2 / 4096 == doctest::Approx(1.0 / 3072).epsilon(0.1));
    CHECK(a.for_width(4096).data() == va.data());  // cached
}
