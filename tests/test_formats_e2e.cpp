// End-to-end: the formats mainline ComfyUI learned after the seed (notes/comfyui-new-formats.md): nvfp4, mxfp8,
// float8_e5m2, int8 with ConvRot, convrot_w4a4, and the _quantization_metadata header entry.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <string>
#include <vector>

#include "tests/test_support.hpp"

using namespace quantflow;
using qftest::comfy_json;
using qftest::load;
using qftest::LoadedFile;

namespace {

const std::string kFixtures = QF_FIXTURES;
const std::string kBinary = QF_BINARY;

}  // namespace

TEST_CASE("new formats: storage dtypes, shapes, comfy_quant keys and compare's verdict") {
    const std::string dir = qftest::temp_dir("new_formats");
    const std::string in = kFixtures + "/small_model.safetensors";
    std::string log;
    SUBCASE("nvfp4 / mxfp8 / e5m2: storage dtypes, padded shapes, swizzled scale grids, compare's verdict") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/n.safetensors --comfy_quant --simple --nvfp4 "
                                    "--manual_seed 0 --progress none", log) == 0);
        const LoadedFile n = load(dir + "/n.safetensors");
        CHECK(comfy_json(n, "odd.proj") == R"({"format": "nvfp4", "orig_shape": [100, 300]})");
        CHECK(n.info.at("odd.proj.weight")->dtype == DType::U8);
        CHECK(n.info.at("odd.proj.weight")->shape == std::vector<std::int64_t>{112, 152});
        CHECK(n.info.at("odd.proj.weight_scale")->dtype == DType::F8_E4M3);
        CHECK(n.info.at("odd.proj.weight_scale")->shape == std::vector<std::int64_t>{128, 20});
        CHECK(n.info.at("odd.proj.weight_scale_2")->shape.empty());
        CHECK(n.data.count("odd.proj.input_scale") == 0);
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/m.safetensors --comfy_quant --simple --mxfp8 "
                                    "--manual_seed 0 --progress none", log) == 0);
        const LoadedFile m = load(dir + "/m.safetensors");
        CHECK(m.info.at("odd.proj.weight")->dtype == DType::F8_E4M3);
        CHECK(m.info.at("odd.proj.weight")->shape == std::vector<std::int64_t>{128, 320});
        CHECK(m.info.at("odd.proj.weight_scale")->dtype == DType::U8);
        CHECK(m.info.at("odd.proj.weight_scale")->shape == std::vector<std::int64_t>{128, 12});
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/e.safetensors --comfy_quant --simple --e5m2 "
                                    "--manual_seed 0 --progress none", log) == 0);
        const LoadedFile e = load(dir + "/e.safetensors");
        CHECK(e.info.at("blocks.0.attn.qkv.weight")->dtype == DType::F8_E5M2);
        CHECK(comfy_json(e, "odd.proj") == R"({"format": "float8_e5m2", "full_precision_matrix_mult": true})");
        REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + dir + "/n.safetensors --json", log) == 0);
        CHECK(log.find("\"format\": \"nvfp4\"") != std::string::npos);
        CHECK(log.find("\"comfy_note\": \"native on SM >= 10 only; emulated (dequantized per forward) elsewhere\"") != std::string::npos);
        CHECK(qftest::run_command(kBinary + " decode " + dir + "/n.safetensors", log) == 2);
        CHECK(log.find("decode needs one file and -o") != std::string::npos);
        CHECK(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/x.safetensors --nvfp4 --simple", log) == 2);
        CHECK(log.find("--nvfp4 needs --comfy_quant (legacy scale_weight files cannot hold it)") != std::string::npos);
    }
    SUBCASE("ConvRot int8 / w4a4: storage, comfy_quant keys, per-layer fallback, compare's verdict") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/cl.safetensors --comfy_quant --int8 --convrot "
                                    "--manual_seed 0 --progress none", log) == 0);
        const LoadedFile c = load(dir + "/cl.safetensors");
        CHECK(comfy_json(c, "blocks.0.mlp.fc2") == R"({"format": "int8_tensorwise", "convrot": true, "convrot_groupsize": 256})");
        CHECK(c.info.at("blocks.0.mlp.fc2.weight")->dtype == DType::I8);
        CHECK(c.info.at("blocks.0.mlp.fc2.weight_scale")->shape == std::vector<std::int64_t>{256, 1});
        CHECK(comfy_json(c, "odd.proj") == R"({"format": "int8_tensorwise"})");  // its width is no multiple of 256
        REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + dir + "/cl.safetensors --json", log) == 0);
        CHECK(log.find("\"format\": \"int8_tensorwise (convrot, group 256)\"") != std::string::npos);
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/w.safetensors --comfy_quant --w4a4 --convrot_group_size 64 "
                                    "--manual_seed 0 --progress none", log) == 0);
        const LoadedFile w = load(dir + "/w.safetensors");
        CHECK(comfy_json(w, "blocks.0.mlp.fc2") == R"({"format": "convrot_w4a4", "convrot_groupsize": 64})");
        CHECK(w.info.at("blocks.0.mlp.fc2.weight")->shape == std::vector<std::int64_t>{256, 512});
        CHECK(w.info.at("blocks.0.mlp.fc2.weight_scale")->shape == std::vector<std::int64_t>{256});
        REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + dir + "/w.safetensors --json", log) == 0);
        CHECK(log.find("\"format\": \"convrot_w4a4 (group 64)\"") != std::string::npos);
        CHECK(log.find("\"comfy_note\": \"W4A4/W4A8 through comfy-kitchen on every device\"") != std::string::npos);
        CHECK(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/x.safetensors --comfy_quant --int8 --convrot "
                                  "--convrot_group_size 512 --simple", log) == 2);
        CHECK(log == "quantflow: error: --convrot_group_size: ConvRot group size 512 is not a power of 4 (4, 16, 64, 256, 1024, 4096)\n");
    }
    SUBCASE("--save_quant_metadata: the header lists every quantized layer with its own comfy_quant object") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/q.safetensors --comfy_quant --simple --int8 --convrot "
                                    "--save_quant_metadata --manual_seed 0 --progress none", log) == 0);
        const LoadedFile f = load(dir + "/q.safetensors");
        std::string text;
        for (const auto& [k, v] : f.header.metadata)
            if (k == "_quantization_metadata") text = v;
        REQUIRE(!text.empty());
        simdjson::dom::parser parser;
        const simdjson::padded_string padded(text);
        simdjson::dom::element doc;
        REQUIRE(parser.parse(padded).get(doc) == simdjson::SUCCESS);
        CHECK(std::string_view(doc["format_version"].get_string().value()) == "1.0");
        std::size_t listed = 0;
        for (const auto [layer, obj] : doc["layers"].get_object()) {
            ++listed;
            // The same object as the layer's comfy_quant tensor, key for key (ComfyUI lets the header win).
            simdjson::dom::parser p2;
            const std::string own = comfy_json(f, std::string(layer));
            const simdjson::padded_string own_padded(own);
            CHECK(simdjson::to_string(p2.parse(own_padded).value()) == simdjson::to_string(obj));
        }
        std::size_t quantized = 0;
        for (const auto& t : f.header.tensors) quantized += t.name.ends_with(".comfy_quant");
        CHECK(listed == quantized);
        CHECK(text.find("\"blocks.0.mlp.fc2\": {\"format\": \"int8_tensorwise\", \"convrot\": true, \"convrot_groupsize\": 256}") !=
              std::string::npos);
        // A file made from that one (its quantized layers copied as they are) never inherits the stale entry.
        REQUIRE(qftest::run_command(kBinary + " -i " + dir + "/q.safetensors -o " + dir + "/r.safetensors --comfy_quant --simple "
                                    "--manual_seed 0 --progress none", log) == 0);
        for (const auto& [k, v] : load(dir + "/r.safetensors").header.metadata) CHECK(k != "_quantization_metadata");
        CHECK(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/x.safetensors --simple --save_quant_metadata", log) == 2);
        CHECK(log == "quantflow: error: --save_quant_metadata describes comfy_quant layers: add --comfy_quant\n");
    }
}

namespace {

// compare's mean relative error of QUANTIZED against ORIGINAL.
double mean_error(const std::string& original, const std::string& quantized) {
    std::string json;
    REQUIRE(qftest::run_command(kBinary + " compare " + original + " " + quantized + " --json --manual_seed 0", json) == 0);
    double sum = 0;
    int n = 0;
    for (auto at = json.find("\"relative_error\": "); at != std::string::npos; at = json.find("\"relative_error\": ", at + 1), ++n)
        sum += std::stod(json.substr(at + 18));
    REQUIRE(n > 0);
    return sum / n;
}

}  // namespace

TEST_CASE("re-quantizing: quantized files are inputs; their layers are decoded and re-encoded, or re-wrapped with --convert_*_scaled") {
    const std::string dir = qftest::temp_dir("requantize");
    const std::string in = kFixtures + "/small_model.safetensors";
    std::string log;
    const auto convert = [&](const std::string& from, const std::string& to, const std::string& flags) {
        INFO(flags);
        REQUIRE(qftest::run_command(kBinary + " -i " + from + " -o " + to + " --overwrite --manual_seed 0 --progress none " + flags, log) == 0);
    };
    convert(in, dir + "/fp8.safetensors", "--comfy_quant --simple");
    const double direct = mean_error(in, dir + "/fp8.safetensors");
    for (const std::string flags : {"--simple", "--comfy_quant --simple --nvfp4", "--comfy_quant --simple --int8 --convrot --convrot_group_size 64",
                                    "--comfy_quant --simple --int8", "--comfy_quant --w4a4 --convrot_group_size 16"}) {
        CAPTURE(flags);
        convert(in, dir + "/first.safetensors", flags);
        REQUIRE(qftest::run_command(kBinary + " plan -i " + dir + "/first.safetensors --comfy_quant --simple", log) == 0);
        CHECK(log.find(": decoded and re-encoded)") != std::string::npos);
        convert(dir + "/first.safetensors", dir + "/again.safetensors", "--comfy_quant --simple");
        const LoadedFile again = load(dir + "/again.safetensors");
        CHECK(comfy_json(again, "blocks.0.mlp.fc2") == R"({"format": "float8_e4m3fn"})");
        CHECK(again.data.count("scaled_fp8") == 0);
        CHECK(again.data.count("blocks.0.mlp.fc2.scale_weight") == 0);
        CHECK(again.data.count("blocks.0.mlp.fc2.weight_scale_2") == 0);
        // ||W - again|| <= ||W - first|| + ||first - again||, the last about one fp8 rounding.
        CHECK(mean_error(in, dir + "/again.safetensors") <= mean_error(in, dir + "/first.safetensors") + 1.1 * direct);
    }
    // --convert_fp8_scaled: a legacy fp8_scaled file becomes comfy_quant with the very same codes and scale values.
    convert(in, dir + "/legacy.safetensors", "--simple");
    convert(dir + "/legacy.safetensors", dir + "/wrapped.safetensors", "--convert_fp8_scaled");
    const LoadedFile legacy = load(dir + "/legacy.safetensors"), wrapped = load(dir + "/wrapped.safetensors");
    for (const std::string layer : {"blocks.0.attn.qkv", "blocks.0.mlp.fc2", "odd.proj", "zero.proj"}) {
        CAPTURE(layer);
        CHECK(wrapped.data.at(layer + ".weight") == legacy.data.at(layer + ".weight"));
        CHECK(wrapped.data.at(layer + ".weight_scale") == legacy.data.at(layer + ".scale_weight"));
        if (legacy.data.count(layer + ".bias")) CHECK(wrapped.data.at(layer + ".bias") == legacy.data.at(layer + ".bias"));
        CHECK(wrapped.data.count(layer + ".scale_weight") == 0);
    }
    CHECK(comfy_json(wrapped, "odd.proj") == R"({"format": "float8_e4m3fn", "full_precision_matrix_mult": true})");
    CHECK(wrapped.data.count("scaled_fp8") == 0);
    CHECK(mean_error(in, dir + "/wrapped.safetensors") == mean_error(in, dir + "/legacy.safetensors"));
    // A layer the input left in BF16 stays BF16 (a migration quantizes nothing new); format flags are refused.
    convert(in, dir + "/partial.safetensors", "--simple --exclude-layers fc2");
    convert(dir + "/partial.safetensors", dir + "/partial_wrapped.safetensors", "--convert_fp8_scaled");
    const LoadedFile partial = load(dir + "/partial_wrapped.safetensors");
    CHECK(partial.info.at("blocks.0.mlp.fc2.weight")->dtype == DType::BF16);
    CHECK(partial.data.count("blocks.0.mlp.fc2.comfy_quant") == 0);
    CHECK(partial.info.at("blocks.0.mlp.fc1.weight")->dtype == DType::F8_E4M3);
    CHECK(qftest::run_command(kBinary + " -i " + dir + "/legacy.safetensors -o " + dir + "/x.safetensors --convert_fp8_scaled --nvfp4", log) == 2);
    CHECK(log == "quantflow: error: --convert_fp8_scaled / --convert_int8_scaled keep every stored layer's own format: drop the format flags\n");
}
