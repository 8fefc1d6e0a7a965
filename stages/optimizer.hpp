// stages/optimizer.hpp: the compute stage of a quantized layer: scale and rounding through the Backend.
//
// With --simple this is round-to-nearest (spec 5.1/5.2). Learned rounding (spec 5.3) plugs in here.
#pragma once

#include <string_view>

#include "kernels/backend.hpp"
#include "stages/messages.hpp"

namespace quantflow {

// Fills job.quant from the weight. Throws Error naming the tensor on NaN/Inf weights.
void quantize_layer(TensorJob& job, std::string_view tensor_name, const TensorView& weight, Backend& backend);

}  // namespace quantflow
