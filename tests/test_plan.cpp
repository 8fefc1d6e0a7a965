// Planning: decisions, fallbacks, output slots and the `plan --json` golden file for the reference model.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "kernels/error.hpp"
#include "pipeline/naming.hpp"
#include "pipeline/plan.hpp"
#include "pipeline/plan_print.hpp"

using namespace quantflow;

namespace {

const std::string kModel = std::string(QF_FIXTURES) + "/small_model.safetensors";

Options base_options() {
    Options o;
    o.input = kModel;
    o.comfy_quant = true;
    o.simple = true;
    o.manual_seed = 0;
    return o;
}

Plan plan_for(const Options& o) { return build_plan(read_safetensors_header(o.input), o, filter_options(o)); }

const LayerPlan& layer(const Plan& p, const std::string& name) {
    return p.layers[static_cast<std::size_t>(p.input.find(name))];
}

}  // namespace

TEST_CASE("plan: FP8 tensor-wise comfy on the reference model") {
    const Plan p = plan_for(base_options());
    CHECK(p.counts.quantized == 9);
    CHECK(p.counts.biases_corrected == 6);
    CHECK(p.counts.removed == 0);
    CHECK(layer(p, "conv.weight").action == Action::Copy);
    CHECK(layer(p, "blocks.0.attn.norm_q.weight").action == Action::Copy);
    CHECK(layer(p, "blocks.0.attn.qkv.bias").action == Action::CorrectBias);
    CHECK(layer(p, "odd.proj.weight").full_precision_mm);
    CHECK_FALSE(layer(p, "blocks.0.attn.qkv.weight").full_precision_mm);
    CHECK(p.layout.by_name.count("scaled_fp8") == 0);
    CHECK(p.layout.by_name.count("blocks.0.attn.qkv.comfy_quant") == 1);
}

TEST_CASE("plan: INT8 block size that does not divide a layer falls back per layer instead of aborting") {
    Options o = base_options();
    o.int8 = true;
    const Plan p = plan_for(o);
    CHECK(p.requested.format == QuantFormat::Int8Block);
    CHECK(layer(p, "odd.proj.weight").spec.format == QuantFormat::Int8Tensor);
    CHECK(layer(p, "odd.proj.weight").reason.find("block size 64 does not divide [100, 300]") != std::string::npos);
    CHECK(p.counts.fallbacks == 1);
}

TEST_CASE("plan: --int8 with explicit tensor/row scaling gives int8_tensorwise, lodewise backend gives lodewise") {
    Options o = base_options();
    o.int8 = true;
    o.scaling_mode = "row";
    CHECK(requested_spec(o).format == QuantFormat::Int8Row);
    o.scaling_mode = "tensor";
    CHECK(requested_spec(o).format == QuantFormat::Int8Tensor);
    o.scaling_mode.reset();
    o.kernel_backend = "lodewise";
    CHECK(requested_spec(o).format == QuantFormat::Int8Lode);
    o.scaling_mode = "bogus";
    CHECK_THROWS_WITH_AS(requested_spec(o), doctest::Contains("--scaling_mode 'bogus' is not one of"), Error);
}

TEST_CASE("plan: t5xxl copies single-element weight scales into input_scale; legacy marker [0] with scale_input") {
    Options o = base_options();
    o.model_flags = {"t5xxl"};
    const Plan p = plan_for(o);
    CHECK(layer(p, "blocks.0.attn.qkv.weight").out_input_scale != kNoTensor);
    o.comfy_quant = false;
    const Plan legacy = plan_for(o);
    const auto& marker = legacy.layout.tensors[legacy.layout.index_of("scaled_fp8")];
    CHECK(marker.spec.shape == std::vector<std::int64_t>{0});
    CHECK(legacy.layout.by_name.count("blocks.0.attn.qkv.scale_input") == 1);
}

TEST_CASE("plan: --bias-correction off copies biases untouched") {
    Options o = base_options();
    o.bias_correction = false;
    const Plan p = plan_for(o);
    CHECK(p.counts.biases_corrected == 0);
    CHECK(layer(p, "blocks.0.attn.qkv.bias").action == Action::Copy);
}

TEST_CASE("plan: --exclude-layers keeps matching layers, with the regex in the reason") {
    Options o = base_options();
    o.exclude_layers = "mlp\\.fc[12]";
    const Plan p = plan_for(o);
    CHECK(layer(p, "blocks.0.mlp.fc1.weight").action == Action::Copy);
    CHECK(layer(p, "blocks.0.mlp.fc1.bias").action == Action::Copy);
    CHECK(p.counts.quantized == 7);
}

TEST_CASE("output naming follows the reference rule (spec 1.2)") {
    Options o;
    o.input = "/models/flux.safetensors";
    CHECK(default_output_path(o) == "/models/flux_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors");
    o.int8 = true;
    o.block_size = 128;
    o.model_flags = {"nerf_small", "t5xxl"};
    o.lr = 1e-05;
    CHECK(default_output_path(o) == "/models/flux_int8_blockwise_bs128_t5_nonerf_s_k1-16_p0.01_lr1e-05.safetensors");
    o.int8 = false;
    o.scaling_mode = "block";
    o.model_flags = {"radiance", "distillation_large"};
    o.input = "plain";
    CHECK(default_output_path(o) == "plain_float8_e4m3fn_block_nodist_l_norad_k1-16_p0.01_lr1e-05.safetensors");
    CHECK_THROWS_WITH_AS(check_distinct_paths(kModel, kModel), doctest::Contains("output is the input file"), Error);
}

TEST_CASE("plan --json golden file for the reference model (tests/data/plan_small_model.json)") {
    Options o = base_options();
    o.scaling_mode = "block";
    o.model_flags = {"wan"};
    Plan p = plan_for(o);
    p.input.path = "small_model.safetensors";  // the golden must not depend on where the checkout lives
    PlanContext ctx;
    ctx.output_path = "out.safetensors";
    ctx.device_line = "device: cpu";
    ctx.memory_budget = 1 << 30;
    ctx.settings = {{"memory_budget", "1.00 GiB", "profile cpu"}};
    const std::string json = plan_json(p, ctx);
    const std::string golden_path = std::string(QF_SOURCE_DIR) + "/tests/data/plan_small_model.json";
    std::ifstream golden(golden_path);
    std::stringstream expected;
    expected << golden.rdbuf();
    INFO("regenerate with QF_UPDATE_GOLDEN=1 after reviewing the change");
    if (std::getenv("QF_UPDATE_GOLDEN")) std::ofstream(golden_path) << json;
    CHECK(json == expected.str());
}
