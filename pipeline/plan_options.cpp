// pipeline/plan_options.cpp: what the command line asks for, before any tensor is seen: the requested format,
// the filter, and the canonical option string recorded in every output.
#include "pipeline/plan.hpp"

#include <cstdio>
#include <set>

#include "kernels/convrot.hpp"
#include "kernels/error.hpp"
#include "pipeline/layer_config.hpp"
#include "pipeline/profiles.hpp"
#include "stages/format/json_text.hpp"

namespace quantflow {

QuantSpec requested_spec(const Options& options) {
    const auto usage = [](bool ok, const std::string& message) {
        if (!ok) throw Error(message, ExitCode::kUsage);
    };
    usage(options.block_size >= 1, "--block_size must be at least 1 (got " + std::to_string(options.block_size) + ")");
    const std::string mode = options.scaling_mode_or_default();
    usage(mode == "tensor" || mode == "row" || mode == "block" || mode == "block2d",
          "--scaling_mode '" + mode + "' is not one of tensor, row, block, block2d");
    usage(options.kernel_backend == "blockwise" || options.kernel_backend == "lodewise",
          "--kernel_backend '" + options.kernel_backend + "' is not one of blockwise, lodewise");
    QuantSpec spec{QuantFormat::Fp8Tensor, options.block_size};
    usage(!options.save_quant_metadata || options.comfy_quant,
          "--save_quant_metadata describes comfy_quant layers: add --comfy_quant");
    usage(!options.convert_scaled || (!options.nvfp4 && !options.mxfp8 && !options.e5m2 && !options.w4a4 && !options.convrot &&
                                      options.layer_config.empty() && options.custom_layers.empty()),
          "--convert_fp8_scaled / --convert_int8_scaled keep every stored layer's own format: drop the format flags");
    const int chosen = int{options.int8} + int{options.nvfp4} + int{options.mxfp8} + int{options.e5m2} + int{options.w4a4};
    usage(chosen <= 1, "choose one of --int8, --nvfp4, --mxfp8, --e5m2, --w4a4");
    if (options.convrot || options.w4a4) {
        const std::string flag = options.w4a4 ? "--w4a4" : "--convrot";
        usage(options.w4a4 || options.int8, "--convrot rotates INT8 weights: add --int8 (or use --w4a4 for INT4)");
        usage(options.comfy_quant, flag + " needs --comfy_quant (legacy scale_weight files cannot hold it)");
        usage(!options.scaling_mode || mode == "row", flag + " has per-row scales; drop --scaling_mode " + mode);
        const std::string problem = convrot_group_problem(options.convrot_group_size);
        usage(problem.empty(), "--convrot_group_size: " + problem);
        return {options.w4a4 ? QuantFormat::W4a4ConvRot : QuantFormat::Int8ConvRot, options.convrot_group_size};
    }
    if (options.nvfp4 || options.mxfp8 || options.e5m2) {
        const std::string flag = options.nvfp4 ? "--nvfp4" : (options.mxfp8 ? "--mxfp8" : "--e5m2");
        usage(options.comfy_quant, flag + " needs --comfy_quant (legacy scale_weight files cannot hold it)");
        const bool tensor = options.e5m2 && mode == "tensor";
        usage(!options.scaling_mode || tensor, flag + " has its own scale layout; drop --scaling_mode " + mode);
        spec.format = options.nvfp4 ? QuantFormat::Nvfp4 : (options.mxfp8 ? QuantFormat::Mxfp8 : QuantFormat::Fp8E5m2Tensor);
        spec.block_size = options.nvfp4 ? 16 : (options.mxfp8 ? 32 : options.block_size);
        return spec;
    }
    if (options.int8) {
        const bool blocked = !options.scaling_mode || mode == "block" || mode == "block2d";
        if (blocked)
            spec.format = options.kernel_backend == "lodewise" ? QuantFormat::Int8Lode : QuantFormat::Int8Block;
        else
            spec.format = mode == "row" ? QuantFormat::Int8Row : QuantFormat::Int8Tensor;
    } else if (mode == "row") {
        spec.format = QuantFormat::Fp8Row;
    } else if (mode == "block") {
        spec.format = QuantFormat::Fp8Block;
    } else if (mode == "block2d") {
        spec.format = QuantFormat::Fp8Block2d;
    }
    return spec;
}

FilterOptions filter_options(const Options& options) {
    FilterOptions filter;
    for (const auto& flag : options.model_flags) filter.profiles.push_back(load_model_profile(flag));
    for (const auto& model : options.models) filter.profiles.push_back(load_model_profile(model));
    if (!options.exclude_layers.empty()) {
        try {
            filter.exclude.emplace(options.exclude_layers);
        } catch (const std::regex_error& e) {
            throw Error("--exclude-layers '" + options.exclude_layers + "' is not a valid regular expression: " + e.what(),
                        ExitCode::kUsage);
        }
        filter.exclude_text = options.exclude_layers;
    }
    filter.heur = options.heur;
    filter.block_size = options.block_size;
    return filter;
}

std::string canonical_options(const Options& o) {
    std::string s = o.comfy_quant ? "--comfy_quant" : "--legacy";
    const QuantSpec spec = requested_spec(o);
    s += " --format " + std::string(format_label(spec.format));
    s += " --block_size " + std::to_string(o.block_size);
    if (is_convrot(spec.format)) s += " --convrot_group_size " + std::to_string(spec.block_size);
    if (o.simple) {
        s += " --simple";
    } else {
        s += " --optimizer " + o.optimizer + " --num_iter " + std::to_string(o.num_iter) + " --lr " + python_float_str(o.lr) +
             " --top_p " + python_float_str(o.top_p) + " --min_k " + std::to_string(o.min_k) + " --max_k " +
             std::to_string(o.max_k) + (o.full_matrix ? " --full_matrix" : "") + " --rounding-aware " +
             (o.rounding_aware ? "on" : "off") +
             (o.rounding_aware && o.rounding_budget != 0.01 ? " --rounding-budget " + python_float_str(o.rounding_budget) : "") +
             (o.rounding_aware && o.rounding_thorough ? " --rounding-effort thorough" : "");
    }
    s += " --calib_samples " + std::to_string(o.calib_samples);
    if (o.heur) s += " --heur";
    if (o.full_precision_matrix_mult) s += " --full_precision_matrix_mult";
    if (o.input_scale) s += " --input_scale";
    if (o.save_quant_metadata) s += " --save_quant_metadata";
    if (!o.layer_config.empty()) {
        char hash[17];
        std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(layer_config_hash(o.layer_config)));
        s += std::string(" --layer-config fnv1a:") + hash + (o.fullmatch ? " --fullmatch" : "");
    }
    if (!o.custom_layers.empty()) s += " --custom_layers " + o.custom_layers + " --custom_type " + o.custom_type;
    if (!o.fallback.empty()) s += " --fallback " + o.fallback;
    std::set<std::string> models(o.model_flags.begin(), o.model_flags.end());
    models.insert(o.models.begin(), o.models.end());
    for (const auto& m : models) s += " --model " + m;
    if (!o.exclude_layers.empty()) s += " --exclude-layers " + o.exclude_layers;
    s += std::string(" --bias-correction ") + (o.bias_correction ? "on" : "off");
    s += std::string(" --keep-metadata ") + (o.keep_metadata ? "on" : "off");
    return s;
}


}  // namespace quantflow
