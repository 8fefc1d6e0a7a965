// stages/filter.hpp: which tensors are quantized (spec section 4), as pure decisions on names and shapes.
//
// No I/O, no compute: pipeline/plan.cpp calls decide_tensor() once per input tensor before any work starts,
// so `quantflow plan`, the dry run and the conversion share one decision path.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/dtype.hpp"

namespace quantflow {

// A model filter profile: profiles/models/NAME.json (schema in profiles/README.md).
struct ModelProfile {
    std::string name;
    std::string description;
    std::vector<std::string> skip;    // substrings: a matching 2-D .weight keeps its original dtype
    std::vector<std::string> remove;  // substrings: a matching key (any tensor) is dropped from the output
    bool input_scale_from_weight = false;  // FP8 comfy: input_scale = copy of a single-element weight scale
    // --model auto rules: substrings of tensor names. The profile applies when every `all` entry and at least
    // one `any` entry (if listed) is found in some tensor name, no `none` entry is, and each `rank` entry's
    // first matching tensor has that many dimensions.
    std::vector<std::string> detect_all, detect_any, detect_none;
    std::vector<std::pair<std::string, int>> detect_rank;
    bool detectable() const { return !detect_all.empty() || !detect_any.empty(); }
};

struct FilterOptions {
    std::vector<ModelProfile> profiles;       // several may apply; any match skips
    std::optional<std::regex> exclude;        // --exclude-layers, searched in the full key
    std::string exclude_text;                 // the regex as typed, for reasons
    bool heur = false;                        // --heur (spec 4.3)
    std::int64_t block_size = 64;             // bs of the --heur rules
};

enum class Verdict : std::uint8_t {
    Quantize,  // a 2-D float .weight that passed every rule (the format fallback, step 6, is plan's job)
    Keep,      // copied byte for byte
    Remove     // dropped from the output
};

struct TensorDecision {
    Verdict verdict = Verdict::Keep;
    // Why, in words a user reads in `plan`: "profile wan: 'time_embedding'", "--heur: max(M,N) 3072 < 4096",
    // "not a 2-D .weight", "non-float dtype I64", "empty tensor". Empty for Quantize.
    std::string reason;
};

// Spec 4.1 steps 1-5 for one tensor of the input file.
TensorDecision decide_tensor(const FilterOptions& options, std::string_view name, DType dtype,
                             std::span<const std::int64_t> shape);

// Spec 4.3: the reason --heur skips an [rows, cols] weight, or nullopt when it does not.
std::optional<std::string> heuristic_skip_reason(std::int64_t rows, std::int64_t cols, std::int64_t block_size);

}  // namespace quantflow
