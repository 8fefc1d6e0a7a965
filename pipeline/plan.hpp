// pipeline/plan.hpp: every decision of a conversion, made before any compute (STYLE convention 7).
//
// build_plan() applies the filter (spec 4) to every input tensor, picks each layer's format with the
// per-layer fallback of spec 4.1 step 6, lays out every output tensor (spec 3) and the whole output file.
// `quantflow plan` prints a Plan; `convert` executes one; both share this code path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/options.hpp"
#include "stages/filter.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/format/safetensors_layout.hpp"
#include "stages/messages.hpp"

namespace quantflow {

struct PlanCounts {
    std::size_t quantized = 0, kept = 0, removed = 0, biases_corrected = 0, fallbacks = 0, fpmm_marked = 0;
    std::size_t input_scale_skipped = 0;  // mxfp8 / nvfp4: no input_scale
};

struct Plan {
    SafetensorsHeader input;
    std::vector<LayerPlan> layers;  // one per input tensor, in input file order
    OutputLayout layout;
    QuantSpec requested;            // the format the options ask for (before per-layer fallback)
    PlanCounts counts;
    std::vector<std::string> notes;  // warnings a user should read (fallbacks, compatibility)
    std::vector<std::string> profile_names;
};

// The format the options ask for: --int8 with --scaling_mode left at default means block-wise (or
// lodewise with --kernel_backend lodewise); explicit tensor/row give INT8 tensor-wise. Throws Error
// (kUsage) on an unknown mode or a block size below 1.
QuantSpec requested_spec(const Options& options);

// The filter options (profiles from model flags and --model, --exclude-layers, --heur) of the command line.
FilterOptions filter_options(const Options& options);

Plan build_plan(SafetensorsHeader input, const Options& options, const FilterOptions& filter);
// Each quantized layer's working memory as the backend that runs it counts it (host: the memory budget;
// device: the GPU memory budget).
void plan_memory(Plan& plan, const Backend& backend, const Options& options);

// The options that change output bytes, canonical (sorted flags, fixed spelling): recorded in the
// output's "quantflow" metadata so two runs with the same inputs give identical files (threads, memory
// budget and progress style are left out on purpose).
std::string canonical_options(const Options& options);

}  // namespace quantflow
