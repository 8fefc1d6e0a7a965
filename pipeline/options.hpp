// pipeline/options.hpp: the parsed command line as plain data (no Boost types), spec section 1.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "stages/format/output_file.hpp"

namespace quantflow {

struct Options {
    // Reference-compatible flags (spec 1.1), with the seed's defaults.
    std::string input;
    std::string output;  // empty: auto-named (spec 1.2)
    bool comfy_quant = false;
    bool int8 = false;
    bool nvfp4 = false;                            // --nvfp4, --mxfp8: the reference's spellings
    bool mxfp8 = false;
    bool e5m2 = false;                             // --e5m2: quantflow's own (the reference has no E5M2 flag)
    bool convrot = false;                          // --convrot (with --int8): int8_tensorwise of the rotated weight
    bool w4a4 = false;                             // --w4a4: convrot_w4a4 (quantflow's own flag)
    std::int64_t convrot_group_size = 256;         // --convrot_group_size: a power of 4
    std::string layer_config;                      // --layer-config FILE.json (pipeline/layer_config.hpp)
    bool fullmatch = false;                        // --fullmatch: layer-config patterns match whole names
    std::string custom_layers, custom_type;        // --custom_layers REGEX --custom_type FORMAT
    std::string fallback;                          // --fallback FORMAT: for layers a format cannot hold
    bool convert_scaled = false;                   // --convert_fp8_scaled / --convert_int8_scaled: re-wrap stored layers
    std::string kernel_backend = "blockwise";      // blockwise | lodewise
    std::optional<std::string> scaling_mode;       // tensor | row | block | block2d; unset = "tensor"
    std::int64_t block_size = 64;
    bool simple = false;
    std::string optimizer = "original";            // original | adamw | radam
    int num_iter = 500;
    double lr = 0.01;
    double top_p = 0.01;
    int min_k = 1;
    int max_k = 16;
    bool full_matrix = false;
    int calib_samples = 3072;
    std::int64_t manual_seed = -1;
    bool heur = false;
    bool full_precision_matrix_mult = false;
    bool input_scale = false;
    bool save_quant_metadata = false;              // --save_quant_metadata: the _quantization_metadata header entry
    std::vector<std::string> model_flags;          // t5xxl, wan, ... as given (flag names without dashes)

    // quantflow's own flags (spec 1.3).
    std::vector<std::string> models;               // --model NAME|FILE.json (repeatable)
    std::string profile;                           // --profile NAME|FILE.json; empty = by device
    std::string device = "auto";
    std::string devices;                           // --devices all|0,1,...; empty = --device (or the profile's)
    std::optional<std::uint64_t> memory_budget;    // overrides the hardware profile
    int threads = 0;                               // 0 = all cores
    std::string progress = "auto";                 // auto | bar | plain | none
    std::string report;                            // --report FILE.json
    std::string exclude_layers;                    // regex
    bool bias_correction = true;
    bool rounding_aware = true;                    // --rounding-aware on|off: quantflow's rounding finish
    double rounding_budget = 0.01;                 // --rounding-budget: percent of ||W_hat - W|| the finish may add
    bool rounding_budget_given = false;            // else 4-bit grids (nvfp4, w4a4) get 0.1 (pipeline/plan.cpp)
    bool rounding_thorough = false;                // --rounding-effort thorough: the finish searches 8x the candidates
    bool keep_metadata = true;
    bool overwrite = false;
    bool json = false;                             // plan / inspect / compare: print JSON
    // batch (spec 8)
    std::string out_dir;
    bool recursive = false;
    std::string manifest;
    bool resume = false;
    std::string shard;                             // "I/N"; empty = everything
    bool keep_going = true;
    int concurrent_files = 0;                      // 0 = hardware profile
    std::int64_t compare_k = 16;                   // compare: singular components of the projected error
    int compare_samples = 64;                      // compare: Gaussian test inputs of the output error

    // The seed actually used (manual_seed, or drawn when it is -1); set by the command before planning.
    std::uint64_t seed = 0;
    // Tests only (no flag, not part of the canonical options): makes the output file's write or fdatasync fail.
    InjectedFault output_fault;
    std::string scaling_mode_or_default() const { return scaling_mode.value_or("tensor"); }
};

}  // namespace quantflow
