// stages/format/safetensors_header.hpp: parse and validate a safetensors header (spec section 2).
//
// File layout: u64 little-endian N, N bytes of UTF-8 JSON (optionally padded with JSON whitespace), then
// the data block; data_offsets are relative to the data block (byte 8 + N).
//
// Validation (the safetensors 0.8 rules plus spec section 2's stricter ones), each failure an Error whose
// one-line message starts with the file path and names the tensor and the numbers:
//   file shorter than 8 bytes; N > 100,000,000; 8 + N > file size; JSON that does not parse or is not an
//   object; a duplicate key (tensor or __metadata__); a missing or wrong-typed dtype/shape/data_offsets;
//   an unknown dtype; a negative or non-integer shape entry or data offset; an element count or byte size
//   that overflows 64 bits; a sub-byte dtype whose bit count is not a multiple of 8; data_offsets with
//   begin > end, or end - begin != elements x dtype size; tensors that leave a gap, overlap, or do not
//   cover the data block exactly (trailing bytes included); __metadata__ that is not an object of strings.
// Unknown extra keys inside a tensor entry are ignored (as safetensors does); "__metadata__": null is
// accepted as "no metadata".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/dtype.hpp"

namespace quantflow {

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;  // safetensors: N > 100,000,000 is rejected

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0;  // relative to the data block
    std::uint64_t end = 0;
    std::uint64_t bytes() const { return end - begin; }
    std::uint64_t elements() const;  // product of shape (1 for a rank-0 scalar)
};

struct SafetensorsHeader {
    std::string path;                  // as given, for messages
    std::uint64_t file_size = 0;
    std::uint64_t header_length = 0;   // N
    std::uint64_t data_start = 0;      // 8 + N
    std::vector<TensorInfo> tensors;   // sorted by (begin, end): file order
    bool has_metadata = false;
    std::vector<std::pair<std::string, std::string>> metadata;  // in the order the file lists them
    // Identity of the file on disk (read_safetensors_header only): modification time and a 64-bit FNV-1a
    // hash of the header bytes. Resume compares them with what an output's provenance recorded.
    std::int64_t mtime_ns = 0;
    std::uint64_t header_hash = 0;

    // The value of a __metadata__ key, or nullptr.
    const std::string* metadata_value(std::string_view key) const;
    // Index of the tensor with this name, or -1.
    std::ptrdiff_t find(std::string_view name) const;
};

// Reads the first 8 + N bytes of `path` with pread and validates the whole header against the file size.
SafetensorsHeader read_safetensors_header(const std::string& path);

// Validates header JSON bytes (the N bytes after the length prefix) for a file of `file_size` bytes.
// `path` is used in messages only. Exposed for tests.
SafetensorsHeader parse_safetensors_header(std::string_view path, std::string_view json, std::uint64_t header_length,
                                           std::uint64_t file_size);

}  // namespace quantflow
