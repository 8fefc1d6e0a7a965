// tests/gpu_support.hpp: what the [gpu] test files share: the CUDA backend of GPU 0 and weights in every dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cuda/cuda_backend.hpp"
#include "tests/test_support.hpp"

namespace qftest {

inline quantflow::Backend& gpu() {
    static std::unique_ptr<quantflow::Backend> backend = quantflow::make_cuda_backend(0, quantflow::make_cpu_backend());
    return *backend;
}

inline std::vector<std::byte> weight_bytes(quantflow::DType dtype, std::size_t n, std::uint64_t seed) {
    if (dtype == quantflow::DType::F32) return random_f32(n, seed);
    std::vector<std::byte> b = random_bf16(n, seed);
    if (dtype == quantflow::DType::F16) {  // reinterpret the same values as f16 bit patterns of similar magnitude
        for (std::size_t i = 0; i + 1 < b.size(); i += 2) b[i + 1] = static_cast<std::byte>(static_cast<unsigned>(b[i + 1]) & 0xBF);
    }
    return b;
}

// The finish's leverage of a basis (MidpointQuery's row / col): sum of u_ri^2 over its first `width` components
// for every row, the same of V for every column.
struct BasisLeverage {
    std::vector<double> row, col;
};
inline BasisLeverage basis_leverage(const quantflow::LowRank& b, std::int64_t width) {
    BasisLeverage l{std::vector<double>(static_cast<std::size_t>(b.rows), 0.0), std::vector<double>(static_cast<std::size_t>(b.cols), 0.0)};
    for (std::int64_t r = 0; r < b.rows; ++r)
        for (std::int64_t i = 0; i < width; ++i) {
            const double u = b.u[static_cast<std::size_t>(r * b.k + i)];
            l.row[static_cast<std::size_t>(r)] += u * u;
        }
    for (std::int64_t i = 0; i < width; ++i)
        for (std::int64_t c = 0; c < b.cols; ++c) {
            const double v = b.v[static_cast<std::size_t>(i * b.cols + c)];
            l.col[static_cast<std::size_t>(c)] += v * v;
        }
    return l;
}

}  // namespace qftest
