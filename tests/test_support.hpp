// tests/test_support.hpp: small helpers shared by the test files (temp dirs, hand-made safetensors files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include "stages/format/safetensors_header.hpp"

namespace qftest {

// A fresh, empty directory under the build tree's test tmp folder.
std::string temp_dir(std::string_view name);

struct RawTensor {
    std::string name;
    std::string dtype;  // safetensors name, "BF16"
    std::vector<std::int64_t> shape;
    std::vector<std::byte> data;
};

// Writes 8-byte length + header_json (verbatim, unpadded) + data: for malformed-input tests.
void write_raw_file(const std::string& path, std::string_view header_json, const std::vector<std::byte>& data);
// Writes a valid safetensors file with the tensors in the order given (offsets back to back).
void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

std::vector<std::byte> read_file(const std::string& path);
std::vector<std::string> list_dir(const std::string& path);  // sorted file names
bool file_exists(const std::string& path);

// Deterministic pseudo-random values: normal(0, scale) rounded to bf16 / f16 / f32 bytes.
std::vector<std::byte> random_bf16(std::size_t count, std::uint64_t seed, float scale = 0.02f);
std::vector<std::byte> random_f32(std::size_t count, std::uint64_t seed, float scale = 0.02f);

// A [rows, cols] bf16 weight with the structure of a trained layer (tools/make_structured_model.py, smaller): a
// power-law low-rank part sum_i sigma_i a_i b_i^T (sigma_i = (i+1)^-0.8, Gaussian a_i, b_i, rank 64), a noise bulk
// below it, and one input channel (column) in 97 scaled by 8. Random i.i.d. weights have no meaningful top-k subspace.
std::vector<std::byte> structured_bf16(std::int64_t rows, std::int64_t cols, std::uint64_t seed);

// Mean squared cosine of the principal angles between two k-dimensional subspaces, ||A^T B||_F^2 / k: 1 when they
// are the same. columns: x and y are [len, k] with orthonormal columns (U); else [k, len] with orthonormal rows (V).
double subspace_overlap(const std::vector<float>& x, const std::vector<float>& y, std::int64_t len, std::int64_t k, bool columns);

// A safetensors file read whole: its header, every tensor's bytes and header entry by name.
struct LoadedFile {
    quantflow::SafetensorsHeader header;
    std::map<std::string, std::vector<std::byte>> data;
    std::map<std::string, const quantflow::TensorInfo*> info;
};
LoadedFile load(const std::string& path);
// The text of layer's comfy_quant tensor.
std::string comfy_json(const LoadedFile& f, const std::string& layer);

// Runs a shell command line, returns its exit status; stdout+stderr captured into `output`.
int run_command(const std::string& command, std::string& output);

// want within a relative eps: doctest::Approx's default scale of 1 makes its epsilon absolute for values far
// below 1 (losses of 1e-5, squared errors), where that check could not fail.
inline doctest::Approx relative(double want, double eps) {
    return doctest::Approx(want).epsilon(eps).scale(std::numeric_limits<double>::min());
}

}  // namespace qftest
