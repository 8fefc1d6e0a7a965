// mxfp8 / nvfp4: the CPU quantizer's bytes on hand-checked rows, the padded file layout (nibble order, swizzle,
// shapes of notes/comfyui-new-formats.md 3-5) and the plan's per-layer decisions.
#include <doctest/doctest.h>

#include <cstring>
#include <set>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"
#include "pipeline/plan.hpp"
#include "stages/format/block_scaled.hpp"
#include "stages/format/comfy_quant.hpp"
#include "test_support.hpp"

using namespace quantflow;
using namespace qftest;

namespace {

TensorView view_of(const std::vector<float>& w, std::int64_t rows, std::int64_t cols) {
    return {reinterpret_cast<const std::byte*>(w.data()), DType::F32, rows, cols};
}

}  // namespace

TEST_CASE("swizzle: the note's formula, a permutation of each 128x4 tile set") {
    CHECK(swizzled_offset(0, 0, 4) == 0);
    CHECK(swizzled_offset(1, 0, 4) == 16);
    CHECK(swizzled_offset(32, 0, 4) == 4);
    CHECK(swizzled_offset(0, 3, 4) == 3);
    CHECK(swizzled_offset(0, 4, 8) == 512);
    CHECK(swizzled_offset(128, 0, 8) == 1024);
    CHECK(swizzled_offset(127, 3, 4) == 31 * 16 + 3 * 4 + 3);
    std::set<std::int64_t> seen;
    for (std::int64_t r = 0; r < 256; ++r)
        for (std::int64_t c = 0; c < 8; ++c) seen.insert(swizzled_offset(r, c, 8));
    CHECK(seen.size() == 256 * 8);
    CHECK(*seen.rbegin() == 256 * 8 - 1);
}

TEST_CASE("block-scaled shapes: padded weights and swizzled scale grids") {
    CHECK(block_weight_shape(QuantFormat::Nvfp4, 200, 344) == std::vector<std::int64_t>{208, 176});
    CHECK(block_scale_shape(QuantFormat::Nvfp4, 200, 344) == std::vector<std::int64_t>{256, 24});
    CHECK(block_weight_shape(QuantFormat::Mxfp8, 100, 70) == std::vector<std::int64_t>{128, 96});
    CHECK(block_scale_shape(QuantFormat::Mxfp8, 100, 70) == std::vector<std::int64_t>{128, 4});
    CHECK(weight_dtype(QuantFormat::Nvfp4) == DType::U8);
    CHECK(weight_dtype(QuantFormat::Mxfp8) == DType::F8_E4M3);
    CHECK(weight_dtype(QuantFormat::Fp8E5m2Tensor) == DType::F8_E5M2);
    CHECK(scale_dtype(QuantFormat::Mxfp8) == DType::U8);
    CHECK(scale_dtype(QuantFormat::Nvfp4) == DType::F8_E4M3);
    CHECK(comfy_quant_json({QuantFormat::Nvfp4, 16}, false) == "{\"format\": \"nvfp4\"}");
    CHECK(comfy_quant_json({QuantFormat::Mxfp8, 32}, false) == "{\"format\": \"mxfp8\"}");
    CHECK(comfy_quant_json({QuantFormat::Nvfp4, 16}, false, 100, 70) == "{\"format\": \"nvfp4\", \"orig_shape\": [100, 70]}");
    CHECK(comfy_quant_json({QuantFormat::Int8Row, 16}, false, 100, 70) == "{\"format\": \"int8_tensorwise\"}");
    CHECK(comfy_quant_json({QuantFormat::Fp8E5m2Tensor, 64}, false) == "{\"format\": \"float8_e5m2\"}");
}

TEST_CASE("nvfp4 round-to-nearest: global scale, e4m3 block scale, E2M1 codes with the even element high") {
    // One row of 20: a full block of 16 and a partial one of 4 (padded to 16 in the file).
    std::vector<float> w = {6, 3, -1.5f, 0.25f, -0.1f, 0.75f, 5, -6, 0, 0, 0, 0, 0, 0, 0, 1, 3, -3, 0.75f, 0};
    const QuantizedTensor q = quantize_cpu("t", view_of(w, 1, 20), {QuantFormat::Nvfp4, 16});
    CHECK(q.global_scale == 6.0f / 2688.0f);
    REQUIRE(q.scales.size() == 2);
    CHECK(q.scales[0] == 448.0f);  // (6 / 6) / S = 448: the largest e4m3
    CHECK(q.scales[1] == e4m3_to_f32(f32_to_e4m3((3.0f / 6.0f) / q.global_scale)));
    CHECK(q.codes[0] == 7);
    CHECK(q.codes[1] == 5);
    CHECK(q.codes[2] == (8 | 3));
    CHECK(q.codes[3] == 0);
    CHECK(q.codes[4] == 8);  // -0.1 rounds to -0
    CHECK(q.codes[7] == 15);
    const auto bytes = pack_block_weight(q);
    REQUIRE(bytes.size() == 16 * 16);  // [16, 32 / 2]: rows padded to 16, K to 32
    CHECK(bytes[0] == 0x75);
    CHECK(bytes[1] == 0xB0);
    const auto scales = pack_block_scales(q);
    REQUIRE(scales.size() == 128 * 4);
    CHECK(scales[0] == 0x7E);
    CHECK(scales[1] == f32_to_e4m3(q.scales[1]));
    const auto back = unpack_block_scaled(QuantFormat::Nvfp4, 1, 20, std::as_bytes(std::span(bytes)), std::as_bytes(std::span(scales)),
                                          q.global_scale);
    CHECK(back.codes == q.codes);
    CHECK(back.scales == q.scales);
}

TEST_CASE("nvfp4: an all-zero weight has global scale 1, zero scales and codes") {
    std::vector<float> w(40, 0.0f);
    const QuantizedTensor q = quantize_cpu("z", view_of(w, 2, 20), {QuantFormat::Nvfp4, 16});
    CHECK(q.global_scale == 1.0f);
    for (float s : q.scales) CHECK(s == 0.0f);
    CHECK(all_codes_zero(q));
}

TEST_CASE("mxfp8 round-to-nearest: power-of-two scales rounded up, zero blocks get byte 0") {
    std::vector<float> w(2 * 40, 0.0f);
    w[0] = 448.0f;     // block 0: amax 448 -> 2^0 (byte 127)
    w[1] = -1.0f;
    w[32] = 449.0f;    // block 1 (partial): amax just above 448 -> 2^1 (byte 128)
    // row 1 all zero
    const QuantizedTensor q = quantize_cpu("m", view_of(w, 2, 40), {QuantFormat::Mxfp8, 32});
    REQUIRE(q.scales.size() == 4);
    CHECK(q.scales[0] == 1.0f);
    CHECK(q.scales[1] == 2.0f);
    CHECK(q.scales[2] == 0.0f);
    CHECK(q.codes[0] == 0x7E);
    CHECK(q.codes[1] == 0xB8);  // -1.0
    CHECK(q.codes[32] == f32_to_e4m3(224.5f));
    const auto scales = pack_block_scales(q);
    CHECK(scales[0] == 127);
    CHECK(scales[1] == 128);
    CHECK(scales[16] == 0);
    const auto weight = pack_block_weight(q);
    REQUIRE(weight.size() == 32 * 64);
    CHECK(weight[40] == 0);  // padding
}

TEST_CASE("float8_e5m2 tensor-wise: multiplier 57344 / amax, stored scale its reciprocal") {
    std::vector<float> w = {1.0f, -0.5f, 0.25f, 0.0f};
    const QuantizedTensor q = quantize_cpu("e", view_of(w, 2, 2), {QuantFormat::Fp8E5m2Tensor, 64});
    CHECK(q.scales[0] == 1.0f / 57344.0f);
    CHECK(q.codes[0] == f32_to_e5m2(57344.0f));
    CHECK(q.codes[1] == f32_to_e5m2(-28672.0f));
    CHECK(dequantize(q) == w);
}

TEST_CASE("plan: --nvfp4 falls back per layer below one block; learned rounding plans its basis like any format") {
    const std::string dir = temp_dir("block_plan");
    write_safetensors(dir + "/m.safetensors", {{"big.weight", "F32", {40, 72}, random_f32(40 * 72, 1)},
                                               {"tiny.weight", "F32", {8, 64}, random_f32(8 * 64, 2)}}, {});
    Options o;
    o.input = dir + "/m.safetensors";
    o.comfy_quant = true;
    o.nvfp4 = true;
    const Plan p = build_plan(read_safetensors_header(o.input), o, filter_options(o));
    const LayerPlan& big = p.layers[static_cast<std::size_t>(p.input.find("big.weight"))];
    const LayerPlan& tiny = p.layers[static_cast<std::size_t>(p.input.find("tiny.weight"))];
    CHECK(big.spec.format == QuantFormat::Nvfp4);
    CHECK(big.rank_k > 0);
    CHECK(big.reason == "rounding-aware finish budget +0.1% (4-bit grid); block scales searched for the least squared error");
    CHECK(big.search_scales);
    CHECK_FALSE(tiny.search_scales);  // its fp8 fallback keeps its one scale
    CHECK(big.finish_budget == 1e-3);
    CHECK(tiny.finish_budget == 1e-4);
    Options given = o;  // an explicit --rounding-budget applies to every grid
    given.rounding_budget = 0.05;
    given.rounding_budget_given = true;
    const Plan g = build_plan(read_safetensors_header(o.input), given, filter_options(given));
    CHECK(g.layers[static_cast<std::size_t>(g.input.find("big.weight"))].finish_budget == doctest::Approx(5e-4));
    CHECK(g.layers[static_cast<std::size_t>(g.input.find("big.weight"))].reason == "block scales searched for the least squared error");
    Options off = o;  // --rounding-aware off: the reference's algorithm, round-to-nearest's scales
    off.rounding_aware = false;
    const Plan f = build_plan(read_safetensors_header(o.input), off, filter_options(off));
    CHECK_FALSE(f.layers[static_cast<std::size_t>(f.input.find("big.weight"))].search_scales);
    Options simple = o;
    simple.simple = true;
    const Plan sp = build_plan(read_safetensors_header(o.input), simple, filter_options(simple));
    CHECK_FALSE(sp.layers[static_cast<std::size_t>(sp.input.find("big.weight"))].search_scales);
    CHECK(tiny.spec.format == QuantFormat::Fp8Tensor);
    CHECK(tiny.rank_k > 0);
    CHECK(tiny.reason.starts_with("shape [8, 64] is smaller than one nvfp4 block (16): fp8 tensor instead"));
    const auto& t = p.layout.tensors[p.layout.index_of("big.weight")];
    CHECK(t.spec.dtype == DType::U8);
    CHECK(t.spec.shape == std::vector<std::int64_t>{48, 40});
    CHECK(p.layout.tensors[p.layout.index_of("big.weight_scale")].spec.shape == std::vector<std::int64_t>{128, 8});
    CHECK(p.layout.tensors[p.layout.index_of("big.weight_scale_2")].spec.shape.empty());
}

TEST_CASE("plan: bad combinations of the new formats are one-line usage errors") {
    Options o;
    o.comfy_quant = true;
    o.nvfp4 = true;
    o.int8 = true;
    CHECK_THROWS_WITH_AS(requested_spec(o), "choose one of --int8, --nvfp4, --mxfp8, --e5m2, --w4a4", Error);
    o.int8 = false;
    o.comfy_quant = false;
    CHECK_THROWS_WITH_AS(requested_spec(o), "--nvfp4 needs --comfy_quant (legacy scale_weight files cannot hold it)", Error);
    o.comfy_quant = true;
    o.scaling_mode = "block";
    CHECK_THROWS_WITH_AS(requested_spec(o), "--nvfp4 has its own scale layout; drop --scaling_mode block", Error);
    o.nvfp4 = false;
    o.e5m2 = true;
    o.scaling_mode = "tensor";
    CHECK(requested_spec(o).format == QuantFormat::Fp8E5m2Tensor);
}
