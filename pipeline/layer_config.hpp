// pipeline/layer_config.hpp: mixed precision per layer (issue 11): --layer-config FILE.json and
// --custom_layers REGEX --custom_type FORMAT.
//
// A layer config is a JSON object of regex -> settings, matched against the layer name (the weight's key without
// ".weight") with regex search, or a full match under --fullmatch. The FIRST matching pattern in file order wins
// (convert_to_quant 1.3.4 picks the "most specific" pattern by a literal-length heuristic instead: order your
// patterns from specific to general and both agree); "_default" applies when none matches; other keys starting
// with "_" are comments. _default only sets the format of layers the model profile and --exclude-layers would
// quantize anyway; a named pattern also quantizes layers they keep. Settings:
//   "format"  a comfy_quant format name (float8_e4m3fn, float8_e4m3fn_rowwise, float8_e4m3fn_block3d,
//             float8_e4m3fn_blockwise, float8_e5m2, int8_tensorwise, int8_blockwise, int8_lodewise, mxfp8, nvfp4,
//             convrot_w4a4) or a short name (fp8, int8, e5m2, mxfp8, nvfp4, w4a4)
//   "skip": true                      keep the layer unquantized
//   "block_size" / "group_size"       block formats (default --block_size)
//   "scaling_mode": "row"             int8_tensorwise / float8_e4m3fn with per-row scales
//   "convrot": true, "convrot_groupsize"   int8_tensorwise with ConvRot (convrot_w4a4: the group size)
//   "full_precision_matrix_mult", "simple"  per-layer flags
// Anything else is an error naming the file, the pattern and the key. Removal rules always win.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/quant_types.hpp"
#include "pipeline/options.hpp"

namespace quantflow {

struct LayerRule {
    std::string pattern;  // as written ("_default" for the default)
    std::regex regex;
    bool skip = false;
    QuantSpec spec;
    bool full_precision_matrix_mult = false;
    bool simple = false;
    std::string source;   // "--layer-config FILE" or "--custom_layers"
};

struct LayerConfig {
    std::vector<LayerRule> rules;           // --layer-config's patterns in file order, then --custom_layers'
    std::optional<LayerRule> default_rule;  // "_default"
    bool fullmatch = false;
    bool empty() const { return rules.empty() && !default_rule; }
};

// The rule for a layer name, or nullptr.
const LayerRule* match_layer(const LayerConfig& config, std::string_view layer);

// A format name of a layer config or of --custom_type / --fallback as a QuantSpec; block_size and group are the
// defaults of the block and ConvRot formats. Throws Error (kUsage) "<where>: unknown format 'x' (...)".
QuantSpec format_by_name(const std::string& where, std::string_view name, std::int64_t block_size, std::int64_t group);

// FNV-1a of the --layer-config file's bytes (0 when it cannot be read): recorded in canonical_options, so a
// changed config is a changed conversion.
std::uint64_t layer_config_hash(const std::string& path);

// --layer-config FILE.json (or PROFILE:NAME: a map a model profile carries under "layer_configs", such as
// wan:attention_fp8_ffn_nvfp4) and --custom_layers/--custom_type of the options (empty when neither is given). Throws Error
// (kUsage) naming the file and pattern on a bad file, regex, format or key.
LayerConfig load_layer_config(const Options& options);

}  // namespace quantflow
