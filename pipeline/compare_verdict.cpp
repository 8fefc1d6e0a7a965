#include "pipeline/compare_verdict.hpp"

#include <string>

namespace quantflow {

void comfy_verdict(LayerComparison& c, bool legacy, bool has_marker, bool fpmm, std::int64_t scale_numel,
                   std::size_t scale_rank, bool input_scale_saturates) {
    c.comfy_loads = false;
    if (legacy) {
        if (c.format != "legacy scale_weight (fp8)") c.comfy_note = "INT8 legacy scale_weight loads nowhere";
        else if (!has_marker) c.comfy_note = "no scaled_fp8 marker: loads unscaled (output ~600x off)";
        else if (scale_numel != 1) c.comfy_note = "legacy scale_weight must be one value";
        else c.comfy_loads = true;
        return;
    }
    if (c.format == "float8_e4m3fn" || c.format == "float8_e5m2") {
        if (scale_numel != 1) c.comfy_note = c.format + " needs a single-value weight_scale (crashes at load or matmul)";
        else if (!fpmm && (c.cols % 16 != 0 || c.rows % 16 != 0)) c.comfy_note = "shape not a multiple of 16 without full_precision_matrix_mult: FP8 matmul crashes";
        else c.comfy_loads = true;
        if (c.comfy_loads && input_scale_saturates && !fpmm) c.comfy_note = "input_scale = weight scale: activations saturate on the FP8 matmul path";
        return;
    }
    if (c.format == "int8_tensorwise") {
        c.comfy_loads = scale_numel == 1 || scale_rank == 2;
        if (!c.comfy_loads) c.comfy_note = "per-row INT8 scale must be [N, 1] (1-D breaks dequantize)";
        return;
    }
    c.comfy_note = c.format + " is not registered in mainline ComfyUI (community fork / custom nodes only)";
}

void block_verdict(LayerComparison& c, DType weight, DType scale, bool has_global) {
    c.comfy_loads = false;
    const bool nvfp4 = c.format == "nvfp4";
    const DType want = nvfp4 ? DType::U8 : DType::F8_E4M3;
    if (weight != want)
        c.comfy_note = c.format + " weight stored as " + std::string(dtype_name(weight)) + ", not " + std::string(dtype_name(want)) +
                       ": ComfyUI converts it by value (noise)";
    else if (!nvfp4 && scale == DType::F8_E8M0)
        c.comfy_note = "mxfp8 scale stored as F8_E8M0: ComfyUI's mmap loader has no such dtype (store U8)";
    else if (dtype_bits(scale) != 8)
        c.comfy_note = c.format + " weight_scale must be a 1-byte dtype";
    else if (nvfp4 && !has_global)
        c.comfy_note = "nvfp4 without weight_scale_2 does not load";
    else
        c.comfy_loads = true;
    if (c.comfy_loads) c.comfy_note = "native on SM >= 10 only; emulated (dequantized per forward) elsewhere";
}

void convrot_verdict(LayerComparison& c, const QuantSpec& spec, const std::vector<std::int64_t>& scale_shape) {
    const bool int4 = spec.format == QuantFormat::W4a4ConvRot;
    c.format += (int4 ? " (group " : " (convrot, group ") + std::to_string(spec.block_size) + ")";
    const bool column = scale_shape.size() == 2 && scale_shape[1] == 1, flat = scale_shape.size() == 1 && scale_shape[0] == c.rows;
    c.comfy_loads = false;
    if (int4 && column)
        c.comfy_note = "convrot_w4a4 weight_scale [N, 1]: comfy-kitchen raises NoCapableBackendError at the first forward (store [N])";
    else if (int4 && !flat)
        c.comfy_note = "convrot_w4a4 needs a 1-D [N] weight_scale";
    else if (int4 && c.cols % 64 != 0)
        c.comfy_note = "convrot_w4a4 needs K divisible by 64";
    else if (!int4 && flat && c.rows > 1)
        c.comfy_note = "1-D [N] ConvRot scale breaks ComfyUI's dequantize (or scales the wrong axis when N = K); store [N, 1]";
    else
        c.comfy_loads = true;
    if (c.comfy_loads) c.comfy_note = int4 ? "W4A4/W4A8 through comfy-kitchen on every device" : "W8A8 through comfy-kitchen on every device";
}

}  // namespace quantflow
