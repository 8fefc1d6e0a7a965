// pipeline/decode.hpp: `quantflow decode QUANTIZED -o OUT.safetensors`, quantflow's own decoder as a file.
//
// Every comfy_quant layer of a tensor-wise float8 (float8_e4m3fn / float8_e5m2, one scale), mxfp8, nvfp4 or
// ConvRot (int8_tensorwise with "convrot", convrot_w4a4) format is decoded to F32 under its weight's name, at
// the weight's stored shape (mxfp8/nvfp4: the padded shape, padding decoded too; crop to the layer's [out, in];
// convrot_w4a4: [out, in], unpacked). The values are code * (weight_scale_2 * block scale) for nvfp4, code *
// scale otherwise, and for ConvRot that rotated back per group (kernels/convrot.hpp, in double: comfy-kitchen
// rotates in float32, so its values may differ in the last bits). Other tensors are not written.
// tests/interop_kitchen.py checks them against comfy-kitchen's own decoders.
#pragma once

#include <string>

namespace quantflow {

// Returns the number of layers written; throws Error for a file without such a layer or a malformed one.
std::size_t decode_file(const std::string& quantized, const std::string& output, bool overwrite);

}  // namespace quantflow
