#include "pipeline/layer_config.hpp"

#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernels/convrot.hpp"
#include "kernels/error.hpp"
#include "pipeline/profiles.hpp"

namespace quantflow {
namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(message, ExitCode::kUsage); }

std::regex compile(const std::string& where, const std::string& pattern) {
    try {
        return std::regex(pattern);
    } catch (const std::regex_error& e) {
        fail(where + ": '" + pattern + "' is not a valid regular expression: " + e.what());
    }
}

// One entry's settings object.
LayerRule parse_rule(const std::string& where, const std::string& pattern, simdjson::dom::element value, const Options& options) {
    LayerRule rule;
    rule.pattern = pattern;
    rule.source = where;
    simdjson::dom::object obj;
    if (value.get_object().get(obj) != simdjson::SUCCESS) fail(where + ": '" + pattern + "' must map to an object of settings");
    std::string_view format, scaling;
    bool has_format = false, has_scaling = false, convrot = false;
    std::int64_t block = options.block_size, group = options.convrot_group_size;
    for (const auto [key, v] : obj) {
        const std::string what = where + ": '" + pattern + "': \"" + std::string(key) + "\"";
        bool flag = false;
        std::int64_t number = 0;
        if (key == "format") {
            if (v.get_string().get(format) != simdjson::SUCCESS) fail(what + " must be a string");
            has_format = true;
        } else if (key == "skip" || key == "full_precision_matrix_mult" || key == "simple" || key == "convrot") {
            if (v.get_bool().get(flag) != simdjson::SUCCESS) fail(what + " must be true or false");
            (key == "skip" ? rule.skip : key == "simple" ? rule.simple : key == "convrot" ? convrot : rule.full_precision_matrix_mult) = flag;
        } else if (key == "block_size" || key == "group_size" || key == "convrot_groupsize") {
            if (v.get_int64().get(number) != simdjson::SUCCESS || number < 1) fail(what + " must be a positive integer");
            (key == "convrot_groupsize" ? group : block) = number;
        } else if (key == "scaling_mode") {
            if (v.get_string().get(scaling) != simdjson::SUCCESS) fail(what + " must be a string");
            has_scaling = true;
        } else {
            fail(what + " is not a setting (format, skip, block_size, group_size, scaling_mode, convrot, convrot_groupsize, "
                        "full_precision_matrix_mult, simple)");
        }
    }
    if (rule.skip) return rule;
    if (!has_format) fail(where + ": '" + pattern + "' has no \"format\" (or \"skip\": true)");
    rule.spec = format_by_name(where + ": '" + pattern + "'", format, block, group);
    if (convrot) {
        if (rule.spec.format != QuantFormat::Int8Tensor) fail(where + ": '" + pattern + "': \"convrot\" needs format int8_tensorwise");
        rule.spec = {QuantFormat::Int8ConvRot, group};
    }
    if (has_scaling && !(convrot && scaling == "row")) {
        const bool tensorwise = rule.spec.format == QuantFormat::Int8Tensor || rule.spec.format == QuantFormat::Fp8Tensor;
        if (!tensorwise || (scaling != "row" && scaling != "tensor"))
            fail(where + ": '" + pattern + "': \"scaling_mode\": \"" + std::string(scaling) + "\" does not apply to format " + std::string(format) +
                 " (tensor or row, for float8_e4m3fn and int8_tensorwise)");
        if (scaling == "row") rule.spec.format = rule.spec.format == QuantFormat::Int8Tensor ? QuantFormat::Int8Row : QuantFormat::Fp8Row;
    }
    if (is_convrot(rule.spec.format)) {
        const std::string problem = convrot_group_problem(rule.spec.block_size);
        if (!problem.empty()) fail(where + ": '" + pattern + "': " + problem);
    }
    return rule;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("--layer-config " + path + ": cannot open");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

QuantSpec format_by_name(const std::string& where, std::string_view name, std::int64_t block_size, std::int64_t group) {
    if (name == "float8_e4m3fn" || name == "fp8") return {QuantFormat::Fp8Tensor, block_size};
    if (name == "float8_e4m3fn_rowwise") return {QuantFormat::Fp8Row, block_size};
    if (name == "float8_e4m3fn_block3d") return {QuantFormat::Fp8Block, block_size};
    if (name == "float8_e4m3fn_blockwise") return {QuantFormat::Fp8Block2d, block_size};
    if (name == "float8_e5m2" || name == "e5m2") return {QuantFormat::Fp8E5m2Tensor, block_size};
    if (name == "int8_tensorwise") return {QuantFormat::Int8Tensor, block_size};
    if (name == "int8_blockwise" || name == "int8") return {QuantFormat::Int8Block, block_size};
    if (name == "int8_lodewise") return {QuantFormat::Int8Lode, block_size};
    if (name == "mxfp8") return {QuantFormat::Mxfp8, 32};
    if (name == "nvfp4") return {QuantFormat::Nvfp4, 16};
    if (name == "convrot_w4a4" || name == "w4a4") return {QuantFormat::W4a4ConvRot, group};
    fail(where + ": unknown format '" + std::string(name) +
         "' (float8_e4m3fn, float8_e4m3fn_rowwise, float8_e4m3fn_block3d, float8_e4m3fn_blockwise, float8_e5m2, int8_tensorwise, "
         "int8_blockwise, int8_lodewise, mxfp8, nvfp4, convrot_w4a4; or fp8, int8, e5m2, w4a4)");
}

std::uint64_t layer_config_hash(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return 0;
    std::uint64_t h = 1469598103934665603ull;
    char c;
    while (in.get(c)) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h;
}

const LayerRule* match_layer(const LayerConfig& config, std::string_view layer) {
    for (const auto& rule : config.rules) {
        const bool hit = config.fullmatch ? std::regex_match(layer.begin(), layer.end(), rule.regex)
                                          : std::regex_search(layer.begin(), layer.end(), rule.regex);
        if (hit) return &rule;
    }
    return config.default_rule ? &*config.default_rule : nullptr;
}

LayerConfig load_layer_config(const Options& options) {
    LayerConfig config;
    config.fullmatch = options.fullmatch;
    if (!options.layer_config.empty()) {
        std::string where = "--layer-config " + options.layer_config;
        std::string text;
        // PROFILE:NAME (no such file): a layer config a model profile carries.
        const auto colon = options.layer_config.find(':');
        if (colon != std::string::npos && colon > 0 && !std::filesystem::exists(options.layer_config)) {
            std::string label;
            text = profile_layer_config(options.layer_config.substr(0, colon), options.layer_config.substr(colon + 1), label);
            where = "--layer-config " + label;
        } else {
            text = read_text(options.layer_config);
        }
        simdjson::dom::parser parser;
        simdjson::dom::element doc;
        if (auto err = parser.parse(text.data(), text.size()).get(doc)) fail(where + ": invalid JSON: " + simdjson::error_message(err));
        simdjson::dom::object root;
        if (doc.get_object().get(root) != simdjson::SUCCESS) fail(where + ": must be a JSON object of regex -> settings");
        for (const auto [key, value] : root) {
            const std::string pattern(key);
            if (pattern == "_default") {
                config.default_rule = parse_rule(where, pattern, value, options);
            } else if (!pattern.starts_with("_")) {
                LayerRule rule = parse_rule(where, pattern, value, options);
                rule.regex = compile(where, pattern);
                config.rules.push_back(std::move(rule));
            }
        }
    }
    QF_EXPECT_USAGE(options.custom_layers.empty() == options.custom_type.empty(), "--custom_layers and --custom_type go together");
    if (!options.custom_layers.empty()) {
        LayerRule rule;
        rule.pattern = options.custom_layers;
        rule.source = "--custom_layers";
        rule.regex = compile("--custom_layers", options.custom_layers);
        rule.spec = format_by_name("--custom_type", options.custom_type, options.block_size, options.convrot_group_size);
        config.rules.push_back(std::move(rule));
    }
    QF_EXPECT_USAGE(config.empty() || options.comfy_quant, "per-layer formats (--layer-config, --custom_layers) need --comfy_quant");
    return config;
}

}  // namespace quantflow
