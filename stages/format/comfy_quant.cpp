#include "stages/format/comfy_quant.hpp"

#include <simdjson.h>

#include <string>

#include "kernels/error.hpp"

#include "stages/format/block_scaled.hpp"

namespace quantflow {

std::string_view comfy_format_name(QuantFormat format) {
    switch (format) {
        case QuantFormat::Fp8Tensor: return "float8_e4m3fn";
        case QuantFormat::Fp8Row: return "float8_e4m3fn_rowwise";
        case QuantFormat::Fp8Block: return "float8_e4m3fn_block3d";
        case QuantFormat::Fp8Block2d: return "float8_e4m3fn_blockwise";
        case QuantFormat::Int8Block: return "int8_blockwise";
        case QuantFormat::Int8Lode: return "int8_lodewise";
        case QuantFormat::Int8Tensor:
        case QuantFormat::Int8Row:
        case QuantFormat::Int8ConvRot: return "int8_tensorwise";
        case QuantFormat::W4a4ConvRot: return "convrot_w4a4";
        case QuantFormat::Fp8E5m2Tensor: return "float8_e5m2";
        case QuantFormat::Mxfp8: return "mxfp8";
        case QuantFormat::Nvfp4: return "nvfp4";
    }
    return "";
}

bool comfy_mainline_loads(QuantFormat format) {
    return format == QuantFormat::Fp8Tensor || format == QuantFormat::Int8Tensor || format == QuantFormat::Int8Row ||
           format == QuantFormat::Fp8E5m2Tensor || is_block_scaled(format) || is_convrot(format);
}

namespace {
bool has_group_size(QuantFormat format) {
    return format == QuantFormat::Fp8Block || format == QuantFormat::Fp8Block2d || format == QuantFormat::Int8Block ||
           format == QuantFormat::Int8Lode;
}
}  // namespace

std::string comfy_quant_json(const QuantSpec& spec, bool full_precision_matrix_mult, std::int64_t rows, std::int64_t cols) {
    std::string json = "{\"format\": \"" + std::string(comfy_format_name(spec.format)) + "\"";
    if (has_group_size(spec.format)) {
        const std::string bs = std::to_string(spec.block_size);
        json += ", \"group_size\": " + bs + ", \"params\": {\"group_size\": " + bs + "}";
    }
    if (spec.format == QuantFormat::Int8ConvRot) json += ", \"convrot\": true";
    if (is_convrot(spec.format)) json += ", \"convrot_groupsize\": " + std::to_string(spec.block_size);
    if (is_block_scaled(spec.format) && rows > 0)
        json += ", \"orig_shape\": [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
    if (full_precision_matrix_mult) json += ", \"full_precision_matrix_mult\": true";
    return json + "}";
}

std::vector<std::int64_t> scale_shape(const QuantSpec& spec, std::int64_t rows, std::int64_t cols) {
    const std::int64_t bs = spec.block_size;
    switch (spec.format) {
        case QuantFormat::Fp8Tensor:
        case QuantFormat::Fp8E5m2Tensor:
        case QuantFormat::Int8Tensor: return {1};
        case QuantFormat::Mxfp8:
        case QuantFormat::Nvfp4: return block_scale_shape(spec.format, rows, cols);
        case QuantFormat::Fp8Row: return {rows};
        case QuantFormat::Int8Row:
        case QuantFormat::Int8ConvRot: return {rows, 1};  // [N] breaks ComfyUI's dequantize
        case QuantFormat::W4a4ConvRot: return {rows};     // [N, 1] fails comfy-kitchen's ExactDims(1)
        case QuantFormat::Fp8Block: return {rows, cols / bs, 1};
        case QuantFormat::Int8Lode: return {rows, cols / bs};
        case QuantFormat::Fp8Block2d:
        case QuantFormat::Int8Block: return {rows / bs, cols / bs};
    }
    return {};
}

ComfyQuantInfo parse_comfy_quant(const std::string& where, std::span<const std::byte> bytes) {
    simdjson::dom::parser parser;
    const simdjson::padded_string json(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    simdjson::dom::element doc;
    if (parser.parse(json).get(doc) != simdjson::SUCCESS || !doc.is_object()) throw Error(where + ": comfy_quant is not valid JSON");
    ComfyQuantInfo info;
    std::string_view f;
    if (doc["format"].get_string().get(f) != simdjson::SUCCESS) throw Error(where + ": comfy_quant has no \"format\" string");
    info.format = f;
    bool flag = false;
    info.full_precision_matrix_mult = doc["full_precision_matrix_mult"].get_bool().get(flag) == simdjson::SUCCESS && flag;
    // The root first, then "params" (ComfyUI's order).
    simdjson::dom::element params;
    const bool has_params = doc["params"].get(params) == simdjson::SUCCESS && params.is_object();
    bool rot = false;
    if (doc["convrot"].get_bool().get(rot) == simdjson::SUCCESS || (has_params && params["convrot"].get_bool().get(rot) == simdjson::SUCCESS))
        info.convrot = rot;
    std::int64_t g = 0;
    if (doc["convrot_groupsize"].get_int64().get(g) == simdjson::SUCCESS ||
        (has_params && params["convrot_groupsize"].get_int64().get(g) == simdjson::SUCCESS))
        info.convrot_groupsize = g;
    return info;
}

std::string scale_tensor_name(std::string_view layer, bool comfy) {
    return std::string(layer) + (comfy ? ".weight_scale" : ".scale_weight");
}

std::string input_scale_tensor_name(std::string_view layer, bool comfy) {
    return std::string(layer) + (comfy ? ".input_scale" : ".scale_input");
}

std::string comfy_quant_tensor_name(std::string_view layer) { return std::string(layer) + ".comfy_quant"; }

std::string global_scale_tensor_name(std::string_view layer) { return std::string(layer) + ".weight_scale_2"; }

DType weight_dtype(QuantFormat format) {
    switch (format) {
        case QuantFormat::Fp8E5m2Tensor: return DType::F8_E5M2;
        case QuantFormat::Nvfp4: return DType::U8;
        default: return is_fp8(format) || format == QuantFormat::Mxfp8 ? DType::F8_E4M3 : DType::I8;
    }
}

DType scale_dtype(QuantFormat format) {
    if (format == QuantFormat::Mxfp8) return DType::U8;  // E8M0: ComfyUI's mmap loader has no F8_E8M0
    if (format == QuantFormat::Nvfp4) return DType::F8_E4M3;
    return DType::F32;
}

std::vector<std::int64_t> weight_shape(const QuantSpec& spec, std::int64_t rows, std::int64_t cols) {
    if (is_block_scaled(spec.format)) return block_weight_shape(spec.format, rows, cols);
    if (spec.format == QuantFormat::W4a4ConvRot) return {rows, cols / 2};  // two int4 codes per byte
    return {rows, cols};
}

}  // namespace quantflow
