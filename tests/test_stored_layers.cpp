// Quantized layers already in an input file (stages/format/stored_layer.hpp): which format each one is, in
// ComfyUI's order of precedence, what cannot be decoded and why, and the plan that re-quantizes them.
#include <doctest/doctest.h>

#include <cstring>

#include "kernels/error.hpp"
#include "pipeline/plan.hpp"
#include "stages/format/stored_layer.hpp"
#include "test_support.hpp"

using namespace quantflow;
using namespace qftest;

namespace {

std::vector<std::byte> bytes_of(std::string_view text) {
    std::vector<std::byte> b(text.size());
    std::memcpy(b.data(), text.data(), text.size());
    return b;
}

std::vector<std::byte> f32s(std::initializer_list<float> v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), std::data(v), b.size());
    return b;
}

std::string escaped(const std::string& json) {
    std::string out;
    for (const char c : json) out += c == '"' ? std::string("\\\"") : std::string(1, c);
    return out;
}

std::vector<StoredLayer> stored_of(const std::string& path) {
    return find_stored_layers(read_safetensors_header(path));
}

}  // namespace

TEST_CASE("stored layers: legacy, comfy_quant and the header's _quantization_metadata, in ComfyUI's order") {
    const std::string dir = temp_dir("stored_layers");
    const std::string cq = R"({"format": "int8_tensorwise"})";
    const std::string header = R"({"format_version": "1.0", "layers": {"rot": {"format": "int8_tensorwise", "convrot": true, "convrot_groupsize": 16}}})";
    write_safetensors(dir + "/m.safetensors",
                      {{"legacy.weight", "F8_E4M3", {4, 16}, std::vector<std::byte>(64, std::byte{0x38})},
                       {"legacy.scale_weight", "F32", {1}, f32s({0.5f})},
                       {"rot.weight", "I8", {4, 16}, std::vector<std::byte>(64, std::byte{1})},
                       {"rot.weight_scale", "F32", {4, 1}, f32s({1, 2, 3, 4})},
                       {"rot.comfy_quant", "U8", {static_cast<std::int64_t>(cq.size())}, bytes_of(cq)},
                       {"ids.weight", "I8", {4, 4}, std::vector<std::byte>(16)},  // no scale: not a layer
                       {"plain.weight", "BF16", {4, 4}, std::vector<std::byte>(32)}},
                      {{"_quantization_metadata", escaped(header)}});  // write_safetensors writes values verbatim
    const auto layers = stored_of(dir + "/m.safetensors");
    REQUIRE(layers.size() == 2);
    CHECK(layers[0].format == "legacy fp8");
    CHECK(layers[0].spec.format == QuantFormat::Fp8Tensor);
    CHECK(layers[1].format == "int8_tensorwise");
    CHECK(layers[1].spec.format == QuantFormat::Int8ConvRot);  // the header wins over the tensor
    CHECK(layers[1].spec.block_size == 16);
    CHECK(layers[1].comfy_quant != kNoStoredTensor);
    const SafetensorsHeader h = read_safetensors_header(dir + "/m.safetensors");
    const MappedFile file(dir + "/m.safetensors");
    const QuantizedTensor legacy = read_stored_layer(h, file, layers[0]);
    CHECK(dequantize(legacy)[0] == 0.5f);  // e4m3 0x38 = 1.0, times the scale
    const QuantizedTensor rot = read_stored_layer(h, file, layers[1]);
    CHECK(rot.scales == std::vector<float>{1, 2, 3, 4});
    // Rows of ones rotate back to rows of ones (a regular Hadamard matrix: H4 rows sum to 2, H_16 = H4 (x) H4 / 4).
    const auto values = dequantize(rot);
    CHECK(values[0] == 1.0f);
    CHECK(values[15] == 1.0f);
    CHECK(values[16] == 2.0f);
    CHECK(values[63] == 4.0f);
}

TEST_CASE("stored layers: what cannot be decoded is kept with a reason, contradictions are errors naming the tensor") {
    const std::string dir = temp_dir("stored_layer_problems");
    const std::string nv = R"({"format": "nvfp4"})";
    write_safetensors(dir + "/nv.safetensors", {{"l.weight", "U8", {16, 8}, std::vector<std::byte>(128)},
                                                {"l.weight_scale", "F8_E4M3", {128, 4}, std::vector<std::byte>(512)},
                                                {"l.weight_scale_2", "F32", {}, f32s({1.0f})},
                                                {"l.comfy_quant", "U8", {static_cast<std::int64_t>(nv.size())}, bytes_of(nv)}});
    const auto layers = stored_of(dir + "/nv.safetensors");
    REQUIRE(layers.size() == 1);
    CHECK(layers[0].problem == "nvfp4 without an \"orig_shape\" matching its stored [16, 8]: the layer's real shape is unknown");
    Options o;
    o.input = dir + "/nv.safetensors";
    o.comfy_quant = true;
    const Plan p = build_plan(read_safetensors_header(o.input), o, filter_options(o));
    CHECK(p.layers[0].action == Action::Copy);
    CHECK(p.layers[0].reason.starts_with("stored layer kept as it is: nvfp4 without an \"orig_shape\""));

    const std::string rot = R"({"format": "int8_tensorwise", "convrot": true, "convrot_groupsize": 64})";
    write_safetensors(dir + "/bad.safetensors", {{"l.weight", "I8", {4, 48}, std::vector<std::byte>(192)},
                                                 {"l.weight_scale", "F32", {4, 1}, f32s({1, 1, 1, 1})},
                                                 {"l.comfy_quant", "U8", {static_cast<std::int64_t>(rot.size())}, bytes_of(rot)}});
    CHECK_THROWS_WITH_AS(stored_of(dir + "/bad.safetensors"),
                         (dir + "/bad.safetensors: tensor 'l.weight': ConvRot group 64 does not divide 48 input columns").c_str(), Error);
    write_safetensors(dir + "/scale.safetensors", {{"l.weight", "F8_E4M3", {4, 48}, std::vector<std::byte>(192)},
                                                   {"l.scale_weight", "F32", {3}, f32s({1, 1, 1})}});
    CHECK_THROWS_WITH_AS(stored_of(dir + "/scale.safetensors"),
                         (dir + "/scale.safetensors: tensor 'l.weight': scale of 3 values does not fit weight [4, 48] as a tensor, row, "
                                "group or tile grid").c_str(),
                         Error);
}
