// pipeline/inspect.hpp: `quantflow inspect FILE`: a validated header, its dtypes, the quantization
// formats found (comfy_quant JSON, legacy scale_weight + scaled_fp8 marker) and the metadata.
#pragma once

#include <string>

namespace quantflow {

// Reads and validates `path` (throws Error on an invalid file) and describes it.
std::string inspect_file(const std::string& path, bool json);

}  // namespace quantflow
