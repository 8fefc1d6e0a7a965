// pipeline/compare_verdict.hpp: whether mainline ComfyUI loads one compared layer, and the caveat to print
// (notes/comfyui-loading.md sections 0, 1.3-1.7, 4.5; notes/comfyui-new-formats.md 0, 4, 5, 8).
#pragma once

#include <cstddef>
#include <cstdint>

#include <vector>

#include "kernels/dtype.hpp"
#include "kernels/quant_types.hpp"
#include "pipeline/compare.hpp"

namespace quantflow {

// Per-tensor FP8 (e4m3, e5m2), INT8 and legacy scale_weight layers: sets c.comfy_loads and c.comfy_note.
void comfy_verdict(LayerComparison& c, bool legacy, bool has_marker, bool fpmm, std::int64_t scale_numel,
                   std::size_t scale_rank, bool input_scale_saturates);
// mxfp8 / nvfp4 (c.format): the weight must be in its storage dtype (the loader converts by value), the scale
// one byte wide (not F8_E8M0 for mxfp8), nvfp4 needs weight_scale_2; they load everywhere but run natively
// only on SM >= 10.
void block_verdict(LayerComparison& c, DType weight, DType scale, bool has_global);
// int8_tensorwise with ConvRot (scale [N, 1] or one value, never 1-D [N]) and convrot_w4a4 (scale 1-D [N] only);
// both run through comfy-kitchen on every device. Appends the group size to c.format.
void convrot_verdict(LayerComparison& c, const QuantSpec& spec, const std::vector<std::int64_t>& scale_shape);

}  // namespace quantflow
