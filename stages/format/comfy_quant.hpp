// stages/format/comfy_quant.hpp: how each quantized format is labelled for ComfyUI (spec section 3).
//
// Per quantized layer L: L.weight (F8_E4M3 or I8), the scale (L.weight_scale, or L.scale_weight in legacy
// files), L.comfy_quant (U8 1-D UTF-8 JSON, comfy mode only) and, where the format asks, L.input_scale
// (legacy: L.scale_input). This file names those tensors, shapes the scales and writes the JSON text in
// Python json.dumps style, key order format, group_size, params, full_precision_matrix_mult.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/quant_types.hpp"

namespace quantflow {

// "float8_e4m3fn", "float8_e5m2", "mxfp8", "nvfp4", "float8_e4m3fn_rowwise", "float8_e4m3fn_block3d", "float8_e4m3fn_blockwise",
// "int8_blockwise", "int8_lodewise", "int8_tensorwise" (tensor, row and ConvRot), "convrot_w4a4".
std::string_view comfy_format_name(QuantFormat format);
// Whether mainline ComfyUI (2026) loads the format; the block formats need the community fork or nodes.
bool comfy_mainline_loads(QuantFormat format);
// {"format": "int8_blockwise", "group_size": 64, "params": {"group_size": 64}}; group_size keys only for
// the block formats (written both at the root and under params: spec 9); ConvRot: "convrot": true (int8 only)
// and "convrot_groupsize" at the root, where ComfyUI reads them first; full_precision_matrix_mult last.
// mxfp8 / nvfp4 also record "orig_shape": [rows, cols] (their stored weights are padded; ComfyUI ignores the key,
// a reader of the file needs it to re-quantize the layer).
std::string comfy_quant_json(const QuantSpec& spec, bool full_precision_matrix_mult, std::int64_t rows = 0, std::int64_t cols = 0);
// The stored shape of the scale tensor for an [rows, cols] weight: [1], [M], [M, N/bs, 1], [M/bs, N/bs],
// [M, N/bs], [M, 1] (spec 3 table; also int8 ConvRot), [M] (convrot_w4a4); mxfp8/nvfp4: the swizzled, padded
// grid (block_scaled.hpp).
std::vector<std::int64_t> scale_shape(const QuantSpec& spec, std::int64_t rows, std::int64_t cols);

// What a reader needs from a stored comfy_quant object (ComfyUI's rules: ConvRot keys at the root win over
// "params"; convrot_groupsize defaults to 256).
struct ComfyQuantInfo {
    std::string format;
    bool full_precision_matrix_mult = false;
    bool convrot = false;                 // int8_tensorwise: "convrot": true
    std::int64_t convrot_groupsize = 256;
    // Whether the layer stores a ConvRot-rotated weight (int8 with "convrot": true, or convrot_w4a4).
    bool rotated() const { return format == "convrot_w4a4" || (format == "int8_tensorwise" && convrot); }
};
// Parses the tensor's bytes; throws Error "<where>: comfy_quant is not valid JSON" / "... has no \"format\" string".
ComfyQuantInfo parse_comfy_quant(const std::string& where, std::span<const std::byte> bytes);

// Names of the per-layer tensors; `layer` is the weight key without ".weight".
std::string scale_tensor_name(std::string_view layer, bool comfy);        // weight_scale | scale_weight
std::string input_scale_tensor_name(std::string_view layer, bool comfy);  // input_scale | scale_input
std::string comfy_quant_tensor_name(std::string_view layer);
std::string global_scale_tensor_name(std::string_view layer);  // nvfp4's weight_scale_2

// Stored dtypes and weight shape per format: F8_E4M3 / F8_E5M2 / I8 / U8 (nvfp4, packed) weights; F32 scales,
// U8 (mxfp8 E8M0) or F8_E4M3 (nvfp4) block scales; mxfp8/nvfp4 weights padded (block_scaled.hpp); convrot_w4a4
// I8 [M, N/2] (int4_pack.hpp).
DType weight_dtype(QuantFormat format);
DType scale_dtype(QuantFormat format);
std::vector<std::int64_t> weight_shape(const QuantSpec& spec, std::int64_t rows, std::int64_t cols);

// The legacy top-level marker ComfyUI needs to apply scale_weight (spec 3).
inline constexpr std::string_view kLegacyMarkerName = "scaled_fp8";
// The __metadata__ key ComfyUI reads before any per-layer comfy_quant (notes/comfyui-new-formats.md 2).
inline constexpr std::string_view kQuantMetadataKey = "_quantization_metadata";

}  // namespace quantflow
