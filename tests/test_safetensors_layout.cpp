// The output layout: canonical order, offsets, alignment, header bytes and round trip through the reader.
#include <doctest/doctest.h>

#include <cstring>

#include "kernels/error.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/json_text.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/format/safetensors_layout.hpp"

using namespace quantflow;

TEST_CASE("layout sorts by dtype (descending, safetensors enum order) then name, back to back, 8-aligned header") {
    std::vector<OutputTensorSpec> specs = {
        {"b.weight", DType::F8_E4M3, {4, 4}, {}},
        {"a.weight", DType::F8_E4M3, {2, 3}, {}},
        {"a.weight_scale", DType::F32, {1}, {}},
        {"a.bias", DType::BF16, {2}, {}},
        {"a.comfy_quant", DType::U8, {3}, {std::byte{'{'}, std::byte{'}'}, std::byte{' '}}},
    };
    const auto layout = plan_output_layout(specs, {{"format", "pt"}});
    std::vector<std::string> order;
    for (const auto& t : layout.tensors) order.push_back(t.spec.name);
    CHECK(order == std::vector<std::string>{"a.weight_scale", "a.bias", "a.weight", "b.weight", "a.comfy_quant"});
    CHECK(layout.tensors[0].offset == 0);
    CHECK(layout.tensors[1].offset == 4);
    CHECK(layout.tensors[2].offset == 8);
    CHECK(layout.tensors[3].offset == 14);
    CHECK(layout.tensors[4].offset == 30);
    CHECK(layout.data_start % 8 == 0);
    CHECK(layout.total_size == layout.data_start + 33);
    const std::string json = layout.header.substr(8);
    CHECK(json.rfind(R"({"__metadata__":{"format":"pt"},"a.weight_scale":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)", 0) == 0);
    std::uint64_t n = 0;
    std::memcpy(&n, layout.header.data(), 8);
    CHECK(n == json.size());
    // Round trip: the reader accepts the planned header for a file of the planned size.
    const auto header = parse_safetensors_header("planned", json, n, layout.total_size);
    REQUIRE(header.tensors.size() == 5);
    CHECK(header.tensors[2].name == "a.weight");
    CHECK(header.tensors[2].shape == std::vector<std::int64_t>{2, 3});
    CHECK(header.metadata.size() == 1);
}

TEST_CASE("layout rejects two output tensors with the same name") {
    std::vector<OutputTensorSpec> specs = {{"x", DType::F32, {1}, {}}, {"x", DType::BF16, {1}, {}}};
    CHECK_THROWS_WITH_AS(plan_output_layout(specs, {}), doctest::Contains("output would hold tensor 'x' twice"), Error);
}

TEST_CASE("layout escapes names and metadata as JSON") {
    const auto layout = plan_output_layout({{"we\"ird\\name", DType::U8, {0}, {}}}, {{"k", "line\nbreak"}});
    CHECK(layout.header.find(R"("we\"ird\\name")") != std::string::npos);
    CHECK(layout.header.find(R"("line\nbreak")") != std::string::npos);
}

TEST_CASE("comfy_quant JSON is Python json.dumps text with group_size at the root and under params") {
    CHECK(comfy_quant_json({QuantFormat::Fp8Tensor, 64}, false) == R"({"format": "float8_e4m3fn"})");
    CHECK(comfy_quant_json({QuantFormat::Fp8Tensor, 64}, true) == R"({"format": "float8_e4m3fn", "full_precision_matrix_mult": true})");
    CHECK(comfy_quant_json({QuantFormat::Int8Block, 128}, false) ==
          R"({"format": "int8_blockwise", "group_size": 128, "params": {"group_size": 128}})");
    CHECK(comfy_quant_json({QuantFormat::Int8Lode, 64}, true) ==
          R"({"format": "int8_lodewise", "group_size": 64, "params": {"group_size": 64}, "full_precision_matrix_mult": true})");
    CHECK(comfy_quant_json({QuantFormat::Fp8Row, 64}, false) == R"({"format": "float8_e4m3fn_rowwise"})");
    CHECK(comfy_quant_json({QuantFormat::Int8Row, 64}, false) == R"({"format": "int8_tensorwise"})");
}

TEST_CASE("scale shapes follow the spec 3 table") {
    CHECK(scale_shape({QuantFormat::Fp8Tensor, 64}, 256, 512) == std::vector<std::int64_t>{1});
    CHECK(scale_shape({QuantFormat::Fp8Row, 64}, 256, 512) == std::vector<std::int64_t>{256});
    CHECK(scale_shape({QuantFormat::Fp8Block, 64}, 256, 512) == std::vector<std::int64_t>{256, 8, 1});
    CHECK(scale_shape({QuantFormat::Fp8Block2d, 64}, 256, 512) == std::vector<std::int64_t>{4, 8});
    CHECK(scale_shape({QuantFormat::Int8Block, 64}, 256, 512) == std::vector<std::int64_t>{4, 8});
    CHECK(scale_shape({QuantFormat::Int8Lode, 64}, 256, 512) == std::vector<std::int64_t>{256, 8});
    CHECK(scale_shape({QuantFormat::Int8Tensor, 64}, 256, 512) == std::vector<std::int64_t>{1});
    CHECK(scale_shape({QuantFormat::Int8Row, 64}, 256, 512) == std::vector<std::int64_t>{256, 1});
}

TEST_CASE("python_float_str prints numbers like Python's str(float)") {
    CHECK(python_float_str(0.01) == "0.01");
    CHECK(python_float_str(1e-05) == "1e-05");
    CHECK(python_float_str(0.0001) == "0.0001");
    CHECK(python_float_str(100.0) == "100.0");
    CHECK(python_float_str(1.0) == "1.0");
    CHECK(python_float_str(0.5) == "0.5");
    CHECK(python_float_str(1e16) == "1e+16");
    CHECK(python_float_str(123456.789) == "123456.789");
    CHECK(python_float_str(2.5e-07) == "2.5e-07");
    CHECK(python_float_str(-0.003) == "-0.003");
}
