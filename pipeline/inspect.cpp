#include "kernels/units.hpp"
#include "pipeline/inspect.hpp"

#include <cstdio>
#include <map>

#include "pipeline/profiles.hpp"
#include "stages/format/json_text.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/reader.hpp"

namespace quantflow {
namespace {

// What a comfy_quant format stores and where ComfyUI runs it natively (notes/comfyui-new-formats.md 8).
std::string format_note(const std::string& json) {
    if (json.find("\"nvfp4\"") != std::string::npos)
        return " (E2M1 pairs in U8, E4M3 block scales of 16 swizzled, F32 weight_scale_2; native on SM >= 10, emulated elsewhere)";
    if (json.find("\"mxfp8\"") != std::string::npos)
        return " (E4M3 data, E8M0 block scales of 32 as U8 swizzled; native on SM >= 10, emulated elsewhere)";
    if (json.find("\"float8_e5m2\"") != std::string::npos) return " (E5M2 data, one F32 scale)";
    if (json.find("\"convrot_w4a4\"") != std::string::npos)
        return " (ConvRot-rotated int4 pairs in I8, even column in the low nibble, F32 [N] scales; W4A4/W4A8 on every device)";
    if (json.find("\"convrot\": true") != std::string::npos || json.find("\"convrot\":true") != std::string::npos)
        return " (ConvRot-rotated INT8, F32 [N, 1] scales; W8A8 on every device)";
    return "";
}

}  // namespace

std::string inspect_file(const std::string& path, bool json) {
    const SafetensorsHeader header = read_safetensors_header(path);
    const MappedFile file(path);
    std::map<std::string, std::size_t> dtype_counts;
    std::map<std::string, std::size_t> formats;  // comfy_quant JSON text -> layers
    std::size_t legacy_scales = 0;
    for (std::size_t i = 0; i < header.tensors.size(); ++i) {
        const auto& t = header.tensors[i];
        ++dtype_counts[std::string(dtype_name(t.dtype))];
        if (std::string_view(t.name).ends_with(".comfy_quant") && t.dtype == DType::U8) {
            const auto bytes = tensor_data(file, header, i);
            ++formats[std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())];
        }
        if (std::string_view(t.name).ends_with(".scale_weight")) ++legacy_scales;
    }
    const auto marker = header.find("scaled_fp8");
    std::string s;
    if (json) {
        s = "{\"path\": " + json_quote(path) + ", \"file_bytes\": " + std::to_string(header.file_size) +
            ", \"header_bytes\": " + std::to_string(header.header_length) + ", \"metadata\": {";
        for (std::size_t i = 0; i < header.metadata.size(); ++i)
            s += (i ? ", " : "") + json_quote(header.metadata[i].first) + ": " + json_quote(header.metadata[i].second);
        s += "}, \"comfy_quant_formats\": {";
        std::size_t k = 0;
        for (const auto& [f, n] : formats) s += (k++ ? ", " : "") + json_quote(f) + ": " + std::to_string(n);
        s += "}, \"legacy_scale_weight\": " + std::to_string(legacy_scales) + ", \"tensors\": [";
        for (std::size_t i = 0; i < header.tensors.size(); ++i) {
            const auto& t = header.tensors[i];
            s += std::string(i ? ", " : "") + "{\"name\": " + json_quote(t.name) + ", \"dtype\": \"" + std::string(dtype_name(t.dtype)) +
                 "\", \"shape\": " + format_shape(t.shape) + ", \"data_offsets\": [" + std::to_string(t.begin) + ", " +
                 std::to_string(t.end) + "]}";
        }
        return s + "]}\n";
    }
    s = path + ": valid safetensors, " + format_size(header.file_size) + ", header " + std::to_string(header.header_length) +
        " bytes, " + std::to_string(header.tensors.size()) + " tensors\n";
    s += "dtypes:";
    for (const auto& [d, n] : dtype_counts) s += " " + d + "×" + std::to_string(n);
    s += "\n";
    for (const auto& [f, n] : formats) s += "comfy_quant " + f + ": " + std::to_string(n) + " layer(s)" + format_note(f) + "\n";
    if (legacy_scales > 0) {
        s += "legacy scale_weight layers: " + std::to_string(legacy_scales);
        if (marker < 0)
            s += " (no scaled_fp8 marker: ComfyUI would load these FP8 weights unscaled)";
        else
            s += header.tensors[static_cast<std::size_t>(marker)].elements() == 2 ? " (marker scaled_fp8 [2]: full-precision matmul)"
                                                                                 : " (marker scaled_fp8 [0]: FP8 matmul with scale_input)";
        s += "\n";
    }
    if (header.has_metadata) {
        s += "metadata:\n";
        for (const auto& [k, v] : header.metadata) s += "  " + k + " = " + (v.size() > 200 ? v.substr(0, 200) + "..." : v) + "\n";
    }
    s += "tensors:\n";
    char line[512];
    for (const auto& t : header.tensors) {
        std::snprintf(line, sizeof line, "  %-8s %-20s %s\n", std::string(dtype_name(t.dtype)).c_str(), format_shape(t.shape).c_str(),
                      t.name.c_str());
        s += line;
    }
    return s;
}

}  // namespace quantflow
