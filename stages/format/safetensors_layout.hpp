// stages/format/safetensors_layout.hpp: the whole output file planned before any compute.
//
// Given every output tensor (name, dtype, shape) and the metadata, plan_output_layout() fixes the header
// bytes and each tensor's offset, so the writer can pwrite results at their offsets in any order.
// Conventions are those of the safetensors reference writer: tensors sorted by dtype (descending, in
// safetensors' enum order) then by name, back to back, so every tensor is naturally aligned; compact JSON
// with "__metadata__" first; the header padded with spaces so the data block starts 8-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/dtype.hpp"

namespace quantflow {

struct OutputTensorSpec {
    std::string name;
    DType dtype = DType::F32;
    std::vector<std::int64_t> shape;
    // Bytes known at plan time (comfy_quant JSON, a constant input_scale, the legacy marker); empty when the
    // data comes from compute or from the input.
    std::vector<std::byte> constant;
};

struct PlannedTensor {
    OutputTensorSpec spec;
    std::uint64_t offset = 0;  // relative to the data block
    std::uint64_t bytes = 0;
};

struct OutputLayout {
    std::vector<PlannedTensor> tensors;  // file order
    std::string header;                  // 8-byte little-endian length + JSON + padding
    std::uint64_t data_start = 0;        // header.size()
    std::uint64_t total_size = 0;        // data_start + data bytes

    // Index of the output tensor with this name; throws Error when it is not planned.
    std::size_t index_of(std::string_view name) const;
    // Absolute file offset of tensor `index`.
    std::uint64_t file_offset(std::size_t index) const { return data_start + tensors[index].offset; }

    std::unordered_map<std::string, std::size_t> by_name;
};

// Throws Error on a duplicate output name or a header above the 100,000,000-byte safetensors limit.
OutputLayout plan_output_layout(std::vector<OutputTensorSpec> tensors,
                                const std::vector<std::pair<std::string, std::string>>& metadata);

// Bytes of a tensor of this dtype and shape (sub-byte dtypes rounded as safetensors requires: exact).
std::uint64_t tensor_bytes(DType dtype, const std::vector<std::int64_t>& shape);

}  // namespace quantflow
