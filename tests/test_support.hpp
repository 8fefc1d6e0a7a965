// tests/test_support.hpp: small helpers shared by the test files (temp dirs, hand-made safetensors files).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

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

// Runs a shell command line, returns its exit status; stdout+stderr captured into `output`.
int run_command(const std::string& command, std::string& output);

}  // namespace qftest
