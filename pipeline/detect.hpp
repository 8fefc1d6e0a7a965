// pipeline/detect.hpp: `--model auto`: recognise the architecture of a checkpoint from its header alone
// (tensor names and ranks, no weights) and pick the model filter profiles that apply (spec 4.2).
//
// Every shipped profile with `detect` rules (profiles/README.md) is tried; all that match apply together
// (Chroma Radiance matches both nerf_large and radiance). No match means "unknown": no model profile.
#pragma once

#include <string>
#include <vector>

#include "stages/filter.hpp"
#include "stages/format/safetensors_header.hpp"

namespace quantflow {

struct Detection {
    std::vector<std::string> profiles;  // names of the matching profiles, in name order; empty = unknown
    std::string summary;                // one line for `plan` and the log: "wan (WAN 2.x video DiT): found ..."
};

// Checks `candidates` (profiles without detect rules are ignored) against the file's tensors.
Detection detect_architecture(const std::vector<TensorInfo>& tensors, const std::vector<ModelProfile>& candidates);

// The same against every embedded model profile.
Detection detect_architecture(const std::vector<TensorInfo>& tensors);

}  // namespace quantflow
