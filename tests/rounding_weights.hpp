// tests/rounding_weights.hpp: the weights and SVD settings the learned-rounding tests share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"
#include "tests/test_support.hpp"

namespace qftest {

// A bf16 weight and its view (the view points into bytes).
struct Weight {
    std::vector<std::byte> bytes;
    quantflow::TensorView view;
};

// normal(0, 0.02) values: i.i.d., no meaningful top-k subspace.
inline Weight random_weight(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
    Weight w;
    w.bytes = random_bf16(static_cast<std::size_t>(rows * cols), seed);
    w.view = {w.bytes.data(), quantflow::DType::BF16, rows, cols};
    return w;
}

// The structure of a trained layer (structured_bf16).
inline Weight structured_weight(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
    Weight w;
    w.bytes = structured_bf16(rows, cols, seed);
    w.view = {w.bytes.data(), quantflow::DType::BF16, rows, cols};
    return w;
}

// The seed defaults' k (top_p 0.01, min_k 1, max_k 16) with the given sketch seed.
inline quantflow::SvdSettings svd_for(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
    quantflow::SvdSettings s;
    s.k = quantflow::choose_k(rows, cols, 0.01, 1, 16);
    s.seed = seed;
    return s;
}

}  // namespace qftest
