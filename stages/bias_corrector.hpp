// stages/bias_corrector.hpp: bias correction of a quantized layer (spec 5.4).
//
//   b_new = b + (W - W_hat) * x_mean
// where x_mean is the column mean of a calib_samples x N standard-normal calibration matrix. The mean of
// n i.i.d. N(0,1) draws is exactly N(0, 1/n), so x_mean is drawn directly (N draws instead of n*N, same
// distribution). One vector per distinct N from a generator seeded by (seed, N): results do not depend on
// the order layers are processed in. The product is a matrix-vector product on the Backend; the sign is
// pinned by a test (the reference subtracts, which makes the output error worse).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "kernels/backend.hpp"
#include "stages/messages.hpp"

namespace quantflow {

class CalibrationMeans {
public:
    CalibrationMeans(std::uint64_t seed, int calib_samples) : seed_(seed), samples_(calib_samples) {}
    // The mean vector for width n (thread-safe; computed once per n).
    std::span<const float> for_width(std::int64_t n);

private:
    std::uint64_t seed_;
    int samples_;
    std::mutex mutex_;
    std::map<std::int64_t, std::vector<float>> cache_;
};

// Fills job.bias (the bias dtype, round-to-nearest-even) from the original bias bytes.
void correct_bias(TensorJob& job, const TensorView& weight, std::span<const std::byte> bias, DType bias_dtype,
                  Backend& backend, CalibrationMeans& means);

}  // namespace quantflow
