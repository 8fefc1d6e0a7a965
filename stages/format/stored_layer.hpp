// stages/format/stored_layer.hpp: quantized layers already in a file (quantflow's, the reference's, Kijai-style
// legacy fp8_scaled), found from the header and their small comfy_quant objects, and read back as QuantizedTensors.
//
// A stored layer is a 2-D ".weight" of dtype F8_E4M3, F8_E5M2, I8 or U8 with a "weight_scale" (or a legacy
// "scale_weight"). Its format comes, in ComfyUI's order, from the header's _quantization_metadata, then the
// layer's comfy_quant tensor, then the scale's shape (legacy files: F8_E4M3 or I8 weights). mxfp8 / nvfp4 store
// padded weights: their real [N, K] must be in comfy_quant's "orig_shape" (the reference writes it), otherwise the
// layer is left as it is and `problem` says why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/quant_types.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/safetensors_header.hpp"

namespace quantflow {

inline constexpr std::size_t kNoStoredTensor = static_cast<std::size_t>(-1);

struct StoredLayer {
    std::size_t weight = 0;                          // tensor indices in the file
    std::size_t scale = 0;
    std::size_t global_scale = kNoStoredTensor;      // nvfp4's weight_scale_2
    std::size_t input_scale = kNoStoredTensor;       // input_scale / scale_input
    std::size_t comfy_quant = kNoStoredTensor;
    QuantSpec spec;
    std::int64_t rows = 0, cols = 0;                 // the layer's own [N, K]
    std::string format;                              // comfy_quant's format, or "legacy fp8" / "legacy int8"
    std::string problem;                             // non-empty: the layer cannot be decoded (kept as stored)
};

// The scale grid of a stored scale tensor as one of quantflow's formats (the reference's block scales are
// [M, N/bs, 1], per-row INT8 scales [M, 1], tiles [M/bs, N/bs]). Throws Error "<where>: scale of ... does not fit".
QuantSpec spec_from_scale(const std::string& where, bool fp8, std::int64_t rows, std::int64_t cols, std::vector<std::int64_t> dims,
                          bool e5m2 = false);

// Every stored quantized layer of the file, in file order (header.path is mapped only when a layer's comfy_quant tensor
// must be read). Throws Error naming the file and tensor when a layer's tensors contradict each other (a scale that
// fits no grid, a ConvRot group that does not divide K, bad JSON).
std::vector<StoredLayer> find_stored_layers(const SafetensorsHeader& header);

// The layer's codes and scales as a [rows, cols] QuantizedTensor (int4 unpacked, block scales unswizzled, a single
// scale of a per-row format spread over the rows): dequantize() gives its float values.
QuantizedTensor read_stored_layer(const SafetensorsHeader& header, const MappedFile& file, const StoredLayer& layer);

}  // namespace quantflow
