// pipeline/naming.hpp: the reference's output file name when -o is absent (spec 1.2).
//   {input without .safetensors}_{FMT}{SCAL}{FLAGS}_k{min_k}-{max_k}_p{top_p}_lr{lr}.safetensors
// FMT float8_e4m3fn | int8_blockwise (all INT8), SCAL _{scaling_mode} (FP8) | _bs{block_size} (INT8),
// FLAGS _t5 _nodist_l _nodist_s _nonerf_l _nonerf_s _norad in that order; numbers as Python's str(float).
#pragma once

#include <string>

#include "pipeline/options.hpp"

namespace quantflow {

std::string default_output_path(const Options& options);

// Throws Error(kUsage) when input and output name the same file (also through links).
void check_distinct_paths(const std::string& input, const std::string& output);

}  // namespace quantflow
