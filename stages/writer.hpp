// stages/writer.hpp: writes results at their planned offsets (any order, any thread).
#pragma once

#include "stages/format/mapped_file.hpp"
#include "stages/format/output_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/format/safetensors_layout.hpp"
#include "stages/messages.hpp"

namespace quantflow {

// The header bytes and every tensor whose bytes are known from the plan (comfy_quant, constants, marker).
void write_header_and_constants(const OutputLayout& layout, OutputFile& out);

// Everything a job produces: a copied chunk, or a layer's codes, scales, input_scale copy and bias.
void write_job(const TensorJob& job, const OutputLayout& layout, const SafetensorsHeader& input,
               const MappedFile& file, OutputFile& out);

}  // namespace quantflow
