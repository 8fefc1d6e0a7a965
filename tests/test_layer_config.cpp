// Mixed precision per layer: --layer-config files (first match wins, _default, skip, every setting, every error as
// one line naming the file and pattern), --custom_layers/--custom_type, --fallback, and the plan they make.
#include <doctest/doctest.h>

#include <fstream>

#include "kernels/error.hpp"
#include "pipeline/layer_config.hpp"
#include "pipeline/plan.hpp"
#include "stages/format/comfy_quant.hpp"
#include "test_support.hpp"

using namespace quantflow;
using namespace qftest;

namespace {

std::string write_config(const std::string& dir, const std::string& name, const std::string& json) {
    const std::string path = dir + "/" + name;
    std::ofstream(path) << json;
    return path;
}

Options comfy_options(const std::string& config) {
    Options o;
    o.comfy_quant = true;
    o.layer_config = config;
    return o;
}

const LayerPlan& layer(const Plan& p, const std::string& name) { return p.layers[static_cast<std::size_t>(p.input.find(name))]; }

}  // namespace

TEST_CASE("layer config: the first matching pattern wins, then _default; every setting maps to a format") {
    const std::string dir = temp_dir("layer_config");
    const std::string path = write_config(dir, "c.json", R"({
        "_comment": "attention in fp8, the FFN in nvfp4",
        "blocks\\.0\\.ffn": {"format": "int8_tensorwise", "convrot": true, "convrot_groupsize": 64},
        "ffn": {"format": "nvfp4"},
        "attn": {"format": "float8_e4m3fn", "full_precision_matrix_mult": true},
        "norm": {"skip": true},
        "proj": {"format": "int8_tensorwise", "scaling_mode": "row", "simple": true},
        "head": {"format": "int8_blockwise", "block_size": 128},
        "w4": {"format": "w4a4", "convrot_groupsize": 16},
        "_default": {"format": "mxfp8"}
    })");
    const LayerConfig c = load_layer_config(comfy_options(path));
    REQUIRE(c.rules.size() == 7);
    const auto spec_of = [&](std::string_view name) { return match_layer(c, name)->spec; };
    CHECK(spec_of("blocks.0.ffn.0").format == QuantFormat::Int8ConvRot);
    CHECK(spec_of("blocks.0.ffn.0").block_size == 64);
    CHECK(spec_of("blocks.1.ffn.0").format == QuantFormat::Nvfp4);  // the first pattern does not match block 1
    CHECK(spec_of("blocks.1.self_attn.q").format == QuantFormat::Fp8Tensor);
    CHECK(match_layer(c, "blocks.1.self_attn.q")->full_precision_matrix_mult);
    CHECK(match_layer(c, "blocks.1.norm_q")->skip);
    CHECK(spec_of("out_proj").format == QuantFormat::Int8Row);
    CHECK(match_layer(c, "out_proj")->simple);
    CHECK(spec_of("head").format == QuantFormat::Int8Block);
    CHECK(spec_of("head").block_size == 128);
    CHECK(spec_of("w4").format == QuantFormat::W4a4ConvRot);
    CHECK(spec_of("w4").block_size == 16);
    CHECK(spec_of("time_embedding.0").format == QuantFormat::Mxfp8);  // _default
    CHECK(match_layer(c, "blocks.1.ffn.0")->pattern == "ffn");

    Options full = comfy_options(path);
    full.fullmatch = true;
    const LayerConfig f = load_layer_config(full);
    CHECK(match_layer(f, "blocks.1.ffn.0")->pattern == "_default");  // "ffn" does not match the whole name
    CHECK(match_layer(f, "ffn")->pattern == "ffn");

    Options custom;
    custom.comfy_quant = true;
    custom.custom_layers = "attn";
    custom.custom_type = "nvfp4";
    const LayerConfig k = load_layer_config(custom);
    CHECK(match_layer(k, "blocks.0.self_attn.q")->spec.format == QuantFormat::Nvfp4);
    CHECK(match_layer(k, "blocks.0.ffn.0") == nullptr);
}

TEST_CASE("layer config from a model profile: --layer-config PROFILE:NAME") {
    Options o;
    o.comfy_quant = true;
    o.layer_config = "wan:attention_fp8_ffn_nvfp4";
    const LayerConfig c = load_layer_config(o);
    CHECK(match_layer(c, "blocks.3.ffn.0")->spec.format == QuantFormat::Nvfp4);
    CHECK(match_layer(c, "blocks.3.self_attn.q")->spec.format == QuantFormat::Fp8Tensor);  // _default
    CHECK(match_layer(c, "blocks.3.ffn.0")->source == "--layer-config profiles/models/wan.json layer_configs.attention_fp8_ffn_nvfp4");
    o.layer_config = "wan:int8_convrot_ffn_w4a4";
    CHECK(match_layer(load_layer_config(o), "blocks.0.cross_attn.k")->spec.format == QuantFormat::Int8ConvRot);
    for (const char* name : {"flux:attention_fp8_mlp_nvfp4", "qwen:attention_fp8_mlp_nvfp4", "hunyuan:attention_fp8_mlp_nvfp4"}) {
        o.layer_config = name;
        CHECK_FALSE(load_layer_config(o).empty());
    }
    o.layer_config = "wan:nope";
    CHECK_THROWS_WITH_AS(load_layer_config(o),
                         "--layer-config wan:nope: profiles/models/wan.json has no layer config 'nope' (it has attention_fp8_ffn_nvfp4, "
                         "int8_convrot_ffn_w4a4)",
                         Error);
}

TEST_CASE("layer config: every mistake is one usage error naming the file, the pattern and the value") {
    const std::string dir = temp_dir("layer_config_errors");
    const auto error_of = [&](const std::string& json) {
        const std::string path = write_config(dir, "bad.json", json);
        try {
            load_layer_config(comfy_options(path));
        } catch (const Error& e) {
            CHECK(e.code() == ExitCode::kUsage);
            return std::string(e.what()).substr(("--layer-config " + path + ": ").size());
        }
        return std::string("no error");
    };
    CHECK(error_of(R"({"attn": {"format": "fp4"}})").starts_with("'attn': unknown format 'fp4' (float8_e4m3fn, "));
    CHECK(error_of(R"({"attn": {"format": "nvfp4", "blocksize": 16}})").starts_with("'attn': \"blocksize\" is not a setting (format, skip, "));
    CHECK(error_of(R"({"attn": {"skip": "yes"}})") == "'attn': \"skip\" must be true or false");
    CHECK(error_of(R"({"attn": {"full_precision_matrix_mult": true}})") == "'attn' has no \"format\" (or \"skip\": true)");
    CHECK(error_of(R"({"attn(": {"format": "fp8"}})").starts_with("'attn(' is not a valid regular expression: "));
    CHECK(error_of(R"({"attn": "fp8"})") == "'attn' must map to an object of settings");
    CHECK(error_of(R"(["attn"])") == "must be a JSON object of regex -> settings");
    CHECK(error_of(R"({"attn": {"format": "nvfp4", "scaling_mode": "row"}})").starts_with("'attn': \"scaling_mode\": \"row\" does not apply to format nvfp4"));
    CHECK(error_of(R"({"attn": {"format": "convrot_w4a4", "convrot_groupsize": 32}})") ==
          "'attn': ConvRot group size 32 is not a power of 4 (4, 16, 64, 256, 1024, 4096)");
    CHECK(error_of(R"({"attn": {"format": "nvfp4", "convrot": true}})") == "'attn': \"convrot\" needs format int8_tensorwise");
    CHECK(error_of("{\"attn\": ").starts_with("invalid JSON: "));
    Options o = comfy_options(dir + "/missing.json");
    CHECK_THROWS_WITH_AS(load_layer_config(o), ("--layer-config " + dir + "/missing.json: cannot open").c_str(), Error);
    o.layer_config.clear();
    o.custom_layers = "attn";
    CHECK_THROWS_WITH_AS(load_layer_config(o), "--custom_layers and --custom_type go together", Error);
    o.custom_type = "fp16";
    CHECK_THROWS_WITH_AS(load_layer_config(o), doctest::Contains("--custom_type: unknown format 'fp16'"), Error);
    o.custom_type = "nvfp4";
    o.comfy_quant = false;
    CHECK_THROWS_WITH_AS(load_layer_config(o), "per-layer formats (--layer-config, --custom_layers) need --comfy_quant", Error);
}

TEST_CASE("plan with a layer config: mixed formats, skip, quantizing what the profile keeps, --fallback, one comfy_quant each") {
    const std::string dir = temp_dir("layer_config_plan");
    write_safetensors(dir + "/m.safetensors", {{"blocks.0.attn.q.weight", "F32", {64, 128}, random_f32(64 * 128, 1)},
                                               {"blocks.0.ffn.0.weight", "F32", {96, 128}, random_f32(96 * 128, 2)},
                                               {"blocks.0.ffn.2.weight", "F32", {8, 40}, random_f32(8 * 40, 3)},
                                               {"blocks.0.norm.weight", "F32", {64, 64}, random_f32(64 * 64, 4)},
                                               {"time_embedding.0.weight", "F32", {64, 64}, random_f32(64 * 64, 5)},
                                               {"head.head.weight", "F32", {64, 64}, random_f32(64 * 64, 6)}},
                      {});
    const std::string config = write_config(dir, "c.json", R"({"attn": {"format": "float8_e4m3fn"}, "ffn": {"format": "nvfp4"},
        "norm": {"skip": true}, "time_embedding": {"format": "int8_tensorwise", "scaling_mode": "row"}, "_default": {"format": "mxfp8"}})");
    Options o = comfy_options(config);
    o.input = dir + "/m.safetensors";
    o.model_flags = {"wan"};  // keeps time_embedding unquantized: the config overrides it
    o.fallback = "int8";
    o.block_size = 16;
    const Plan p = build_plan(read_safetensors_header(o.input), o, filter_options(o));
    CHECK(layer(p, "blocks.0.attn.q.weight").spec.format == QuantFormat::Fp8Tensor);
    CHECK(layer(p, "blocks.0.attn.q.weight").reason == "--layer-config " + config + " 'attn': fp8 tensor");
    CHECK(layer(p, "blocks.0.ffn.0.weight").spec.format == QuantFormat::Nvfp4);
    CHECK(layer(p, "blocks.0.ffn.0.weight").rank_k > 0);
    // [8, 40] is smaller than one nvfp4 block: --fallback int8 (blockwise 16 does not divide 40) -> int8 tensor.
    const LayerPlan& tiny = layer(p, "blocks.0.ffn.2.weight");
    CHECK(tiny.spec.format == QuantFormat::Int8Tensor);
    CHECK(tiny.reason.find("shape [8, 40] is smaller than one nvfp4 block (16): int8 tensor instead of nvfp4") != std::string::npos);
    CHECK(layer(p, "blocks.0.norm.weight").action == Action::Copy);
    CHECK(layer(p, "blocks.0.norm.weight").reason == "skipped by --layer-config " + config + " 'norm'");
    CHECK(layer(p, "time_embedding.0.weight").action == Action::Quantize);
    CHECK(layer(p, "time_embedding.0.weight").spec.format == QuantFormat::Int8Row);
    CHECK(layer(p, "head.head.weight").action == Action::Copy);  // _default does not override the profile's keep rule
    const auto json_of = [&](const std::string& layer_name) {
        const auto& t = p.layout.tensors[p.layout.index_of(layer_name + ".comfy_quant")];
        return std::string(reinterpret_cast<const char*>(t.spec.constant.data()), t.spec.constant.size());
    };
    CHECK(json_of("blocks.0.ffn.0") == R"({"format": "nvfp4", "orig_shape": [96, 128]})");
    CHECK(json_of("time_embedding.0") == R"({"format": "int8_tensorwise"})");
    CHECK(p.counts.fallbacks == 1);
    bool native_note = false;
    for (const auto& n : p.notes) native_note = native_note || n.starts_with("nvfp4 runs natively only on NVIDIA SM >= 10");
    CHECK(native_note);
    // A different config file is a different conversion (resume compares canonical options).
    const std::string before = canonical_options(o);
    write_config(dir, "c.json", R"({"attn": {"format": "nvfp4"}})");
    CHECK(canonical_options(o) != before);
    CHECK(before.find("--fallback int8") != std::string::npos);
}
