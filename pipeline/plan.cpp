#include "kernels/units.hpp"
#include "pipeline/plan.hpp"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include "kernels/convrot.hpp"
#include "kernels/error.hpp"
#include "pipeline/layer_config.hpp"
#include "pipeline/profiles.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/json_text.hpp"
#include "stages/format/stored_layer.hpp"
#include "stages/optimizer.hpp"

namespace quantflow {
namespace {

std::vector<std::byte> bytes_of(std::string_view text) {
    std::vector<std::byte> out(text.size());
    std::memcpy(out.data(), text.data(), text.size());
    return out;
}

std::vector<std::byte> f32_one() {
    const float one = 1.0f;
    std::vector<std::byte> out(4);
    std::memcpy(out.data(), &one, 4);
    return out;
}

// The format a layer falls back to when the requested block size does not divide its shape (spec 4.1.6), or
// when it is smaller than one mxfp8/nvfp4 block in either dimension (float8_e4m3fn tensor-wise).
QuantSpec fallback_spec(const QuantSpec& spec) {
    if (is_convrot(spec.format)) return {QuantFormat::Int8Row, spec.block_size};
    if (is_block_scaled(spec.format)) return {QuantFormat::Fp8Tensor, spec.block_size};
    return {is_fp8(spec.format) ? QuantFormat::Fp8Tensor : QuantFormat::Int8Tensor, spec.block_size};
}

struct PlanBuilder {
    const Options& options;
    const FilterOptions& filter;
    Plan& plan;
    std::vector<OutputTensorSpec> outputs;
    std::vector<std::string> output_names;  // parallel to `outputs`, to resolve indices after sorting
    bool input_scale_from_weight = false;
    bool wrote_scale_input = false;
    bool any_fp8 = false;
    std::optional<QuantSpec> fallback;           // --fallback
    std::set<QuantFormat> formats;               // every quantized layer's

    void add_output(OutputTensorSpec spec) {
        output_names.push_back(spec.name);
        outputs.push_back(std::move(spec));
    }

    void append(LayerPlan& lp, const std::string& text) { lp.reason += (lp.reason.empty() ? "" : "; ") + text; }

    // A layer's format: its rule's (--layer-config, --custom_layers) or the requested one; a layer that format
    // cannot hold gets --fallback's, or else fallback_spec's (spec 4.1.6), and the reason says which and why.
    void choose_format(LayerPlan& lp, const TensorInfo& t, const LayerRule* rule) {
        const std::int64_t rows = t.shape[0], cols = t.shape[1];
        const QuantSpec wanted = rule ? rule->spec : plan.requested;
        lp.spec = wanted;
        if (rule) append(lp, rule->source + " '" + rule->pattern + "': " + std::string(format_label(wanted.format)));
        const auto holds = [&](const QuantSpec& s) {
            const std::int64_t block = scale_block_cols(s, cols);
            return format_fits(s, rows, cols) && (!is_block_scaled(s.format) || (rows >= block && cols >= block));
        };
        if (holds(wanted)) return;
        const std::int64_t block = scale_block_cols(wanted, cols);
        std::string why;
        if (is_block_scaled(wanted.format))
            why = "shape " + format_shape(t.shape) + " is smaller than one " + std::string(format_label(wanted.format)) + " block (" +
                  std::to_string(block) + ")";
        else if (is_convrot(wanted.format))
            why = "ConvRot group " + std::to_string(wanted.block_size) + (wanted.format == QuantFormat::W4a4ConvRot ? " (and int4's 64)" : "") +
                  " does not divide " + std::to_string(cols) + " input columns";
        else
            why = "block size " + std::to_string(wanted.block_size) + " does not divide " + format_shape(t.shape);
        lp.spec = fallback ? *fallback : fallback_spec(wanted);
        if (!holds(lp.spec)) lp.spec = fallback_spec(lp.spec);  // a --fallback that cannot hold it either
        append(lp, why + ": " + std::string(format_label(lp.spec.format)) + " instead of " + std::string(format_label(wanted.format)));
        ++plan.counts.fallbacks;
    }

    void plan_quantized(LayerPlan& lp, const TensorInfo& t, const LayerRule* rule) {
        const std::int64_t rows = t.shape[0], cols = t.shape[1];
        const std::string layer = t.name.substr(0, t.name.size() - std::strlen(".weight"));
        lp.action = Action::Quantize;
        lp.reason.clear();
        if (lp.stored && options.convert_scaled) {
            lp.keep_codes = true;
            lp.spec = lp.stored->spec;
            append(lp, "stored " + lp.stored->format + ": codes and scales kept (re-wrapped)");
        } else {
            choose_format(lp, t, rule);
            if (lp.stored) append(lp, "stored " + lp.stored->format + ": decoded and re-encoded");
        }
        formats.insert(lp.spec.format);
        const bool e5m2 = lp.spec.format == QuantFormat::Fp8E5m2Tensor;
        const bool fp8 = is_fp8(lp.spec.format);
        any_fp8 = any_fp8 || fp8;
        if ((fp8 || e5m2) && options.comfy_quant && (rows % 16 != 0 || cols % 16 != 0) && !options.full_precision_matrix_mult) {
            lp.full_precision_mm = true;
            lp.reason += std::string(lp.reason.empty() ? "" : "; ") + "shape " + format_shape(t.shape) +
                         " not divisible by 16: marked full_precision_matrix_mult (ComfyUI's FP8 matmul needs it)";
            ++plan.counts.fpmm_marked;
        }
        lp.full_precision_mm = lp.full_precision_mm || options.full_precision_matrix_mult || (rule && rule->full_precision_matrix_mult);
        ++plan.counts.quantized;
        const bool simple = options.simple || (rule && rule->simple) || lp.keep_codes;
        if (!simple) lp.rank_k = choose_k(rows, cols, options.top_p, options.min_k, options.max_k);
        // 4-bit grids: their round-to-nearest error is ~10%, so +0.1% of it (the bound) buys the finish far more
        // moves than +0.01% (WAN shapes: projected error 0.56x instead of 0.81x round-to-nearest's).
        const bool four_bit = lp.spec.format == QuantFormat::Nvfp4 || lp.spec.format == QuantFormat::W4a4ConvRot;
        lp.finish_budget = (options.rounding_budget_given || !four_bit ? options.rounding_budget : 0.1) / 100;
        if (lp.rank_k > 0 && four_bit && !options.rounding_budget_given && options.rounding_aware)
            append(lp, "rounding-aware finish budget +0.1% (4-bit grid)");
        // nvfp4: learned rounding starts from the e4m3 block scales of least squared error; what that saves against
        // round-to-nearest's scales, the finish may spend on the projected error (its budget stays relative to
        // round-to-nearest). Off with --rounding-aware off: the reference's algorithm.
        lp.search_scales = lp.rank_k > 0 && options.rounding_aware && lp.spec.format == QuantFormat::Nvfp4;
        if (lp.search_scales) append(lp, "block scales searched for the least squared error");

        const bool comfy = options.comfy_quant;
        add_output({t.name, weight_dtype(lp.spec.format), weight_shape(lp.spec, rows, cols), {}});
        const auto sshape = scale_shape(lp.spec, rows, cols);
        add_output({scale_tensor_name(layer, comfy), scale_dtype(lp.spec.format), sshape, {}});
        if (lp.spec.format == QuantFormat::Nvfp4) add_output({global_scale_tensor_name(layer), DType::F32, {}, {}});
        if (comfy) {
            const std::string json = comfy_quant_json(lp.spec, lp.full_precision_mm, rows, cols);
            add_output({comfy_quant_tensor_name(layer), DType::U8, {static_cast<std::int64_t>(json.size())}, bytes_of(json)});
        }
        if (is_block_scaled(lp.spec.format)) {
            if (options.input_scale) ++plan.counts.input_scale_skipped;
        } else {
            plan_input_scale(lp, layer, fp8 || e5m2, sshape.size() == 1 && sshape[0] == 1);
        }
        if (!lp.keep_codes) plan_bias(lp, layer, rows);  // the same weights: the bias stays
    }

    // Spec 3: FP8 comfy writes input_scale with --input_scale (1.0) or a t5xxl-like profile (a copy of a
    // single-element weight scale; 1.0 otherwise, since ComfyUI needs numel 1); INT8 block formats always
    // 1.0; legacy files write scale_input only for t5xxl-like profiles.
    void plan_input_scale(LayerPlan& lp, const std::string& layer, bool fp8, bool single_scale) {
        const bool comfy = options.comfy_quant;
        bool write = false;
        if (fp8) write = comfy ? (options.input_scale || input_scale_from_weight) : input_scale_from_weight;
        else write = comfy && (lp.spec.format == QuantFormat::Int8Block || lp.spec.format == QuantFormat::Int8Lode);
        if (!write) return;
        wrote_scale_input = wrote_scale_input || !comfy;
        const std::string name = input_scale_tensor_name(layer, comfy);
        if (fp8 && input_scale_from_weight && single_scale) {
            add_output({name, DType::F32, {1}, {}});
            lp.out_input_scale = outputs.size() - 1;  // resolved to a layout index later
        } else {
            add_output({name, DType::F32, {1}, f32_one()});
        }
    }

    void plan_bias(LayerPlan& lp, const std::string& layer, std::int64_t rows) {
        const auto b = plan.input.find(layer + ".bias");
        if (b < 0 || !options.bias_correction) return;
        const TensorInfo& bias = plan.input.tensors[static_cast<std::size_t>(b)];
        LayerPlan& blp = plan.layers[static_cast<std::size_t>(b)];
        if (blp.action != Action::Copy || !is_quantizable_float(bias.dtype) || bias.shape.size() != 1 ||
            bias.shape[0] != rows)
            return;  // a removed, odd-shaped or integer bias is left as it is
        blp.action = Action::CorrectBias;
        blp.reason = "bias of quantized '" + layer + ".weight': corrected (spec 5.4)";
        lp.bias_input = static_cast<std::size_t>(b);
        ++plan.counts.biases_corrected;
    }
};

std::string hex64(std::uint64_t v) {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
    return text;
}

// The `quantflow` metadata entry: what made this file, from which input (resume checks it, issue 5).
std::string provenance(const Options& options, const SafetensorsHeader& input) {
    return std::string("{\"tool\": \"quantflow\", \"version\": \"") + QF_VERSION + "\", \"input\": " +
           json_quote(std::filesystem::path(options.input).filename().string()) + ", \"input_size\": " +
           std::to_string(input.file_size) + ", \"input_mtime_ns\": " + std::to_string(input.mtime_ns) +
           ", \"input_header_hash\": \"" + hex64(input.header_hash) + "\", \"options\": " +
           json_quote(canonical_options(options)) + ", \"seed\": " + std::to_string(options.seed) + "}";
}

// A --layer-config / --custom_layers rule on one input tensor: only 2-D float .weight tensors that the filter
// does not remove. "skip" keeps the layer; a named pattern's format quantizes it even where the filter would keep
// it; _default only picks the format of layers the filter quantizes.
void apply_rule(const LayerConfig& config, const TensorInfo& t, TensorDecision& d, const LayerRule*& rule) {
    if (d.verdict == Verdict::Remove || !t.name.ends_with(".weight") || t.shape.size() != 2 || t.elements() == 0 ||
        !is_quantizable_float(t.dtype))
        return;
    const LayerRule* r = match_layer(config, std::string_view(t.name).substr(0, t.name.size() - std::strlen(".weight")));
    // _default sets the format of what the filter quantizes anyway; only a named pattern overrides its keep rules.
    if (!r || (config.default_rule && r == &*config.default_rule && d.verdict != Verdict::Quantize)) return;
    if (r->skip) {
        d = {Verdict::Keep, "skipped by " + r->source + " '" + r->pattern + "'"};
        return;
    }
    d = {Verdict::Quantize, {}};
    rule = r;
}

void remove_tensor(Plan& plan, std::vector<TensorDecision>& decisions, std::size_t i, const std::string& why) {
    decisions[i] = {Verdict::Remove, why};
    plan.layers[i].action = Action::Remove;
    plan.layers[i].reason = why;
}

// Layers the input already holds quantized (stages/format/stored_layer.hpp): each one the filter and the layer rules
// would quantize as a float weight is decoded and re-encoded (or re-wrapped with --convert_*_scaled); its scale,
// comfy_quant, weight_scale_2 and input_scale tensors and the input's scaled_fp8 marker are replaced. Returns every
// tensor as the plan sees it: a stored layer as an F32 [N, K] weight.
std::vector<TensorInfo> plan_stored(Plan& plan, const Options& options, const FilterOptions& filter, const LayerConfig& config,
                                    std::vector<TensorDecision>& decisions, std::vector<const LayerRule*>& rules) {
    std::vector<TensorInfo> logical = plan.input.tensors;
    bool re_encoded = false;
    for (const StoredLayer& s : find_stored_layers(plan.input)) {
        LayerPlan& lp = plan.layers[s.weight];
        if (!s.problem.empty()) {
            lp.reason = "stored layer kept as it is: " + s.problem;
            continue;
        }
        TensorInfo& t = logical[s.weight];
        t.dtype = DType::F32;
        t.shape = {s.rows, s.cols};
        TensorDecision d = decide_tensor(filter, t.name, t.dtype, t.shape);
        if (!config.empty()) apply_rule(config, t, d, rules[s.weight]);
        if (d.verdict != Verdict::Quantize && !options.convert_scaled) {
            lp.reason = "stored " + s.format + " layer kept as it is (" + d.reason + ")";
            continue;
        }
        decisions[s.weight] = {Verdict::Quantize, {}};
        lp.stored = s;
        re_encoded = true;
        const std::string why = "replaced: layer '" + t.name.substr(0, t.name.size() - std::strlen(".weight")) + "' is re-quantized";
        for (const std::size_t i : {s.scale, s.global_scale, s.input_scale, s.comfy_quant})
            if (i != kNoStoredTensor) remove_tensor(plan, decisions, i, why);
    }
    const auto marker = plan.input.find(kLegacyMarkerName);
    if (re_encoded && marker >= 0) {
        remove_tensor(plan, decisions, static_cast<std::size_t>(marker), "the input's scaled_fp8 marker: its layers are re-quantized");
    }
    return logical;
}

// notes/comfyui-new-formats.md 2: {"format_version": "1.0", "layers": {"<P>": <that layer's comfy_quant object>, ...}},
// P the weight's name minus ".weight" exactly as in the file, in file order.
std::string quantization_metadata(const Plan& plan) {
    std::string json = "{\"format_version\": \"1.0\", \"layers\": {";
    bool first = true;
    for (const auto& lp : plan.layers) {
        if (lp.action != Action::Quantize) continue;
        const TensorInfo& t = plan.input.tensors[lp.input];
        json += (first ? "" : ", ") + json_quote(t.name.substr(0, t.name.size() - std::strlen(".weight"))) + ": " +
                comfy_quant_json(lp.spec, lp.full_precision_mm, lp.stored ? lp.stored->rows : t.shape[0],
                                 lp.stored ? lp.stored->cols : t.shape[1]);
        first = false;
    }
    return json + "}}";
}

}  // namespace

void plan_memory(Plan& plan, const Backend& backend, const Options& options) {
    for (auto& lp : plan.layers) {
        if (lp.action != Action::Quantize) continue;
        TensorInfo t = plan.input.tensors[lp.input];
        if (lp.stored) t.shape = {lp.stored->rows, lp.stored->cols}, t.dtype = DType::F32;  // decoded to float32
        const std::int64_t basis_k = lp.rank_k > 0 && options.rounding_aware ? std::max(lp.rank_k, kRefineRank) : lp.rank_k;
        const LayerWork work{t.shape[0], t.shape[1], t.dtype, basis_k, parse_optimizer(options.optimizer), lp.spec.format,
                             options.rounding_aware && options.rounding_thorough,
                             options.full_matrix || exact_svd_is_cheap(t.shape[0], t.shape[1])};
        const LayerMemory m = backend.layer_memory(work);
        // A layer the backend's device cannot optimize runs on the host: decided here, shown by `plan`.
        const std::string fallback = basis_k > 0 ? backend.host_fallback(work) : std::string();
        if (!fallback.empty()) lp.reason += (lp.reason.empty() ? "" : "; ") + std::string("learned rounding on the host: ") + fallback;
        lp.work_bytes = m.host;
        lp.device_bytes = m.device;
        if (lp.stored) lp.work_bytes += static_cast<std::uint64_t>(t.shape[0] * t.shape[1]) * 4;  // the decoded weight
        if (is_convrot(lp.spec.format)) {  // the rotated float32 weight, on the host and (held) on the device
            const auto rotated = static_cast<std::uint64_t>(t.shape[0] * t.shape[1]) * 4;
            lp.work_bytes += rotated;
            if (m.device > 0) lp.device_bytes += 2 * rotated;
        }
    }
}

Plan build_plan(SafetensorsHeader input, const Options& options, const FilterOptions& filter) {
    Plan plan;
    plan.input = std::move(input);
    plan.requested = requested_spec(options);
    PlanBuilder builder{options, filter, plan, {}, {}, false, false, false, {}, {}};
    if (!options.fallback.empty())
        builder.fallback = format_by_name("--fallback", options.fallback, options.block_size, options.convrot_group_size);
    const LayerConfig config = load_layer_config(options);
    for (const auto& p : filter.profiles) {
        plan.profile_names.push_back(p.name);
        builder.input_scale_from_weight = builder.input_scale_from_weight || p.input_scale_from_weight;
    }

    const auto& tensors = plan.input.tensors;
    plan.layers.resize(tensors.size());
    std::vector<TensorDecision> decisions(tensors.size());
    std::vector<const LayerRule*> rules(tensors.size(), nullptr);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        decisions[i] = decide_tensor(filter, tensors[i].name, tensors[i].dtype, tensors[i].shape);
        if (!config.empty()) apply_rule(config, tensors[i], decisions[i], rules[i]);
        plan.layers[i].input = i;
        plan.layers[i].reason = decisions[i].reason;
        plan.layers[i].action = decisions[i].verdict == Verdict::Remove ? Action::Remove : Action::Copy;
    }
    if (options.convert_scaled)  // the reference's format migration: nothing that is not quantized yet gets quantized
        for (std::size_t i = 0; i < tensors.size(); ++i)
            if (decisions[i].verdict == Verdict::Quantize) {
                decisions[i] = {Verdict::Keep, "--convert_*_scaled: not quantized in the input, kept as it is"};
                plan.layers[i].reason = decisions[i].reason;
            }
    const std::vector<TensorInfo> logical = plan_stored(plan, options, filter, config, decisions, rules);
    // Quantized layers first, so their biases are claimed before the copies are laid out.
    for (std::size_t i = 0; i < tensors.size(); ++i)
        if (decisions[i].verdict == Verdict::Quantize && std::string_view(tensors[i].name).ends_with(".weight"))
            builder.plan_quantized(plan.layers[i], logical[i], rules[i]);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const auto& lp = plan.layers[i];
        if (lp.action == Action::Remove) {
            ++plan.counts.removed;
            continue;
        }
        if (lp.action == Action::Copy) ++plan.counts.kept;
        if (lp.action == Action::Copy || lp.action == Action::CorrectBias)
            builder.add_output({tensors[i].name, tensors[i].dtype, tensors[i].shape, {}});
    }
    if (!options.comfy_quant && builder.any_fp8) {
        // Legacy files need the marker or ComfyUI loads the FP8 values unscaled (spec 3 and 9).
        const std::int64_t n = builder.wrote_scale_input ? 0 : 2;
        builder.add_output({std::string(kLegacyMarkerName), DType::F8_E4M3, {n}, std::vector<std::byte>(static_cast<std::size_t>(n))});
    }
    if (!options.comfy_quant && options.int8 && plan.counts.quantized > 0)
        plan.notes.push_back("INT8 without --comfy_quant writes scale_weight tensors that no ComfyUI loads as INT8; use --comfy_quant");

    std::vector<std::pair<std::string, std::string>> metadata;
    // An input's _quantization_metadata describes the input's layers; ComfyUI would let it override ours.
    if (options.keep_metadata)
        for (const auto& kv : plan.input.metadata)
            if (kv.first != "quantflow" && kv.first != kQuantMetadataKey) metadata.push_back(kv);
    if (options.save_quant_metadata) metadata.emplace_back(std::string(kQuantMetadataKey), quantization_metadata(plan));
    metadata.emplace_back("quantflow", provenance(options, plan.input));
    const auto names = builder.output_names;
    const auto input_scale_slots = [&] {
        std::vector<std::pair<std::size_t, std::string>> slots;  // layer index, output name
        for (std::size_t i = 0; i < plan.layers.size(); ++i)
            if (plan.layers[i].out_input_scale != kNoTensor) slots.emplace_back(i, names[plan.layers[i].out_input_scale]);
        return slots;
    }();
    plan.layout = plan_output_layout(std::move(builder.outputs), metadata);

    // Resolve output indices by name now that the layout has its final order.
    const bool comfy = options.comfy_quant;
    for (auto& lp : plan.layers) {
        const TensorInfo& t = tensors[lp.input];
        if (lp.action == Action::Copy || lp.action == Action::CorrectBias) lp.out_tensor = plan.layout.index_of(t.name);
        if (lp.action != Action::Quantize) continue;
        const std::string layer = t.name.substr(0, t.name.size() - std::strlen(".weight"));
        lp.out_tensor = plan.layout.index_of(t.name);
        lp.out_scale = plan.layout.index_of(scale_tensor_name(layer, comfy));
        if (lp.spec.format == QuantFormat::Nvfp4) lp.out_scale_2 = plan.layout.index_of(global_scale_tensor_name(layer));
        if (lp.bias_input != kNoTensor) lp.out_bias = plan.layout.index_of(tensors[lp.bias_input].name);
    }
    for (const auto& [i, name] : input_scale_slots) plan.layers[i].out_input_scale = plan.layout.index_of(name);
    if (plan.counts.fallbacks > 0)
        plan.notes.push_back(std::to_string(plan.counts.fallbacks) + " layer(s) fell back to another format: the one asked for cannot hold their shape "
                             "(see `quantflow plan`)");
    if (plan.counts.input_scale_skipped > 0)
        plan.notes.push_back("--input_scale is not written for " + std::string(format_label(plan.requested.format)) +
                             ": its input_scale is an activation amax quantflow does not measure (ComfyUI computes it per call)");
    for (const QuantFormat f : builder.formats)
        if (is_block_scaled(f))
            plan.notes.push_back(std::string(comfy_format_name(f)) +
                                 " runs natively only on NVIDIA SM >= 10 (Blackwell); elsewhere ComfyUI dequantizes it per forward (emulated)");
    if (plan.counts.fpmm_marked > 0)
        plan.notes.push_back(std::to_string(plan.counts.fpmm_marked) +
                             " FP8 layer(s) have a dimension not divisible by 16 and are marked full_precision_matrix_mult");
    for (const QuantFormat f : builder.formats)
        if (comfy && !comfy_mainline_loads(f) && (f == plan.requested.format || !config.empty()))
            plan.notes.push_back("format " + std::string(comfy_format_name(f)) +
                                 " loads only in the ComfyUI community fork / custom nodes, not in mainline ComfyUI");
    return plan;
}

}  // namespace quantflow
