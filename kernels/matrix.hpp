// kernels/matrix.hpp: a row-major float matrix on the host (the sketch's columns, the CPU backend's bands).
#pragma once

#include <cstdint>
#include <vector>

namespace quantflow {

struct Matrix {
    std::int64_t rows = 0, cols = 0;
    std::vector<float> data;
    Matrix() = default;
    Matrix(std::int64_t r, std::int64_t c) : rows(r), cols(c), data(static_cast<std::size_t>(r * c), 0.0f) {}
    float* row(std::int64_t r) { return data.data() + r * cols; }
    const float* row(std::int64_t r) const { return data.data() + r * cols; }
};

}  // namespace quantflow
