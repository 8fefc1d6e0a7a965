// End-to-end: the real quantflow binary on the reference fixtures and on hand-made files.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "stages/format/mapped_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/reader.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

const std::string kFixtures = QF_FIXTURES;
const std::string kBinary = QF_BINARY;

using qftest::comfy_json;
using qftest::load;
using qftest::LoadedFile;

// The reference's argument list for a run of runs.json, with our paths.
std::vector<std::string> reference_args(const std::string& run) {
    simdjson::dom::parser parser;
    const simdjson::dom::element runs = parser.load(kFixtures + "/runs.json");
    std::vector<std::string> args;
    for (const auto a : runs[run]["reference_args"].get_array()) args.emplace_back(std::string_view(a.get_string()));
    return args;
}

std::string join_args(const std::vector<std::string>& args, const std::string& in, const std::string& out) {
    std::string cmd = kBinary;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "-i") cmd += " -i " + in, ++i;
        else if (args[i] == "-o") cmd += " -o " + out, ++i;
        else cmd += " " + args[i];
    }
    return cmd + " --progress none";
}

// Runs the reference's arguments for `run` through quantflow and checks byte parity with its output:
// identical codes and scales for every layer it quantized, identical bytes for every pass-through tensor.
void check_parity(const std::string& run) {
    const std::string dir = qftest::temp_dir("parity_" + run);
    const std::string out = dir + "/out.safetensors";
    std::string log;
    const int rc = qftest::run_command(join_args(reference_args(run), kFixtures + "/small_model.safetensors", out), log);
    INFO(log);
    REQUIRE(rc == 0);
    const LoadedFile ours = load(out), ref = load(kFixtures + "/ref_" + run + ".safetensors"),
                     input = load(kFixtures + "/small_model.safetensors");
    std::set<std::string> ref_names, our_names;
    for (const auto& [name, _] : ref.data) ref_names.insert(name);
    for (const auto& [name, _] : ours.data) our_names.insert(name);
    // Spec 9: comfy mode writes no scaled_fp8 marker (the reference's is inverted).
    ref_names.erase("scaled_fp8");
    CHECK(our_names == ref_names);
    std::size_t quantized = 0, passed = 0;
    for (const auto& [name, bytes] : ref.data) {
        if (name == "scaled_fp8" || !ours.data.count(name)) continue;
        const TensorInfo& ri = *ref.info.at(name);
        const bool ref_quantized = ri.dtype == DType::F8_E4M3 || ri.dtype == DType::I8;
        const bool is_scale = name.size() > 13 && name.substr(name.size() - 13) == ".weight_scale";
        if (ref_quantized || is_scale) {
            INFO("tensor " << name);
            CHECK(ours.info.at(name)->dtype == ri.dtype);
            CHECK(ours.data.at(name) == bytes);  // scales may differ in shape only (spec 9), never in bytes
            quantized += ref_quantized;
        } else if (input.data.count(name) && input.data.at(name) == bytes) {
            INFO("pass-through tensor " << name);
            CHECK(ours.data.at(name) == input.data.at(name));
            ++passed;
        }
    }
    MESSAGE(run << ": " << quantized << " quantized weights byte-identical, " << passed << " pass-through tensors identical");
    CHECK(quantized > 0);
    CHECK(qftest::list_dir(dir) == std::vector<std::string>{"out.safetensors"});
}

}  // namespace

TEST_CASE("parity: fp8 tensor --simple is byte-identical to the reference") { check_parity("fp8_tensor_simple"); }
TEST_CASE("parity: fp8 block64 --simple is byte-identical to the reference") { check_parity("fp8_block64_simple"); }
TEST_CASE("parity: fp8 tensor --simple --t5xxl is byte-identical to the reference") { check_parity("fp8_tensor_simple_t5"); }

TEST_CASE("parity: int8 --heur skips every small-model layer like the reference, metadata kept") {
    const std::string dir = qftest::temp_dir("parity_int8_heur");
    std::string log;
    REQUIRE(qftest::run_command(join_args(reference_args("int8_b64_simple_heur"), kFixtures + "/small_model.safetensors",
                                          dir + "/out.safetensors"), log) == 0);
    const LoadedFile ours = load(dir + "/out.safetensors"), input = load(kFixtures + "/small_model.safetensors");
    CHECK(ours.data == input.data);
    // Spec 9: the input's __metadata__ is kept (the reference drops it) and provenance is added.
    REQUIRE(ours.header.metadata.size() == 3);
    CHECK(ours.header.metadata[0] == std::pair<std::string, std::string>{"format", "pt"});
    CHECK(ours.header.metadata[1] == std::pair<std::string, std::string>{"note", "synthetic"});
    CHECK(ours.header.metadata[2].first == "quantflow");
    CHECK(ours.header.metadata[2].second.find("\"seed\": 0") != std::string::npos);
}

TEST_CASE("formats: comfy_quant JSON, scale shapes and the fixes of spec 9") {
    const std::string dir = qftest::temp_dir("formats");
    const std::string in = kFixtures + "/small_model.safetensors";
    std::string log;
    SUBCASE("fp8 block: block3d name, group_size at root and in params, odd.proj falls back to tensor + fpmm") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/b.safetensors --comfy_quant --simple "
                                    "--scaling_mode block --block_size 64 --manual_seed 0 --progress none", log) == 0);
        const LoadedFile f = load(dir + "/b.safetensors");
        CHECK(comfy_json(f, "blocks.0.mlp.fc2") ==
              R"({"format": "float8_e4m3fn_block3d", "group_size": 64, "params": {"group_size": 64}})");
        CHECK(f.info.at("blocks.0.mlp.fc2.weight_scale")->shape == std::vector<std::int64_t>{256, 16, 1});
        CHECK(comfy_json(f, "odd.proj") == R"({"format": "float8_e4m3fn", "full_precision_matrix_mult": true})");
        CHECK(f.info.at("odd.proj.weight_scale")->shape == std::vector<std::int64_t>{1});
        CHECK(f.data.count("scaled_fp8") == 0);
    }
    SUBCASE("int8 blockwise: the reference aborted on odd.proj; quantflow falls back and finishes") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/i.safetensors --comfy_quant --simple --int8 "
                                    "--block_size 64 --wan --manual_seed 0 --progress none", log) == 0);
        const LoadedFile f = load(dir + "/i.safetensors");
        CHECK(comfy_json(f, "blocks.0.attn.qkv") ==
              R"({"format": "int8_blockwise", "group_size": 64, "params": {"group_size": 64}})");
        CHECK(f.info.at("blocks.0.attn.qkv.weight_scale")->shape == std::vector<std::int64_t>{12, 4});
        CHECK(f.info.at("blocks.0.attn.qkv.weight")->dtype == DType::I8);
        CHECK(f.info.at("blocks.0.attn.qkv.input_scale")->shape == std::vector<std::int64_t>{1});
        CHECK(comfy_json(f, "odd.proj") == R"({"format": "int8_tensorwise"})");
        CHECK(f.info.at("odd.proj.weight")->dtype == DType::I8);
        // --wan keeps time_embedding in bf16.
        CHECK(f.info.at("time_embedding.0.weight")->dtype == DType::BF16);
        CHECK(f.data.count("time_embedding.0.comfy_quant") == 0);
    }
    SUBCASE("int8 row: int8_tensorwise with [M, 1] scales and no input_scale") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/r.safetensors --comfy_quant --simple --int8 "
                                    "--scaling_mode row --manual_seed 0 --progress none", log) == 0);
        const LoadedFile f = load(dir + "/r.safetensors");
        CHECK(comfy_json(f, "blocks.0.attn.qkv") == R"({"format": "int8_tensorwise"})");
        CHECK(f.info.at("blocks.0.attn.qkv.weight_scale")->shape == std::vector<std::int64_t>{768, 1});
        CHECK(f.data.count("blocks.0.attn.qkv.input_scale") == 0);
    }
    SUBCASE("legacy: scale_weight and a zero-filled scaled_fp8 [2] marker") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/l.safetensors --simple --manual_seed 0 "
                                    "--progress none", log) == 0);
        const LoadedFile f = load(dir + "/l.safetensors");
        CHECK(f.info.at("scaled_fp8")->shape == std::vector<std::int64_t>{2});
        CHECK(f.data.at("scaled_fp8") == std::vector<std::byte>(2, std::byte{0}));
        CHECK(f.info.at("blocks.0.attn.qkv.scale_weight")->shape == std::vector<std::int64_t>{1});
        CHECK(f.data.count("blocks.0.attn.qkv.comfy_quant") == 0);
    }
    SUBCASE("--input_scale writes 1.0, not the weight scale (spec 9)") {
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/s.safetensors --comfy_quant --simple "
                                    "--input_scale --manual_seed 0 --progress none", log) == 0);
        const LoadedFile f = load(dir + "/s.safetensors");
        float v = 0;
        std::memcpy(&v, f.data.at("blocks.0.attn.qkv.input_scale").data(), 4);
        CHECK(v == 1.0f);
    }
}

TEST_CASE("determinism: the same --manual_seed gives byte-identical files whatever --threads") {
    const std::string dir = qftest::temp_dir("determinism");
    const std::string in = kFixtures + "/small_model.safetensors";
    std::string log;
    std::vector<std::byte> first;
    for (const char* threads : {"1", "2", "4"}) {
        const std::string out = dir + "/out" + threads + ".safetensors";
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + out + " --comfy_quant --simple --manual_seed 7 --threads " +
                                    threads + " --progress none", log) == 0);
        const auto bytes = qftest::read_file(out);
        if (first.empty()) first = bytes;
        INFO("--threads " << threads);
        CHECK(bytes == first);
    }
    REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/other.safetensors --comfy_quant --simple --manual_seed 8"
                                " --progress none", log) == 0);
    CHECK(qftest::read_file(dir + "/other.safetensors") != first);  // the seed drives the bias calibration
}

TEST_CASE("bad input: one error line naming file, tensor and numbers; exit 1; no output and no temp file") {
    const std::string dir = qftest::temp_dir("bad_input");
    const std::string in = dir + "/bad.safetensors";
    qftest::write_raw_file(in, R"({"a.weight":{"dtype":"BF16","shape":[10,20],"data_offsets":[0,100]}})",
                           std::vector<std::byte>(100));
    qftest::temp_dir("bad_input/out");
    std::string log;
    const int rc = qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/out/x.safetensors --comfy_quant --simple "
                                       "--manual_seed 0 --progress none", log);
    CHECK(rc == 1);
    CHECK(log == "quantflow: error: " + in +
                     ": tensor 'a.weight': data_offsets [0, 100] hold 100 bytes but shape [10, 20] of BF16 needs 400\n");
    CHECK(qftest::list_dir(dir + "/out").empty());
}

TEST_CASE("usage errors exit 2: output equal to input, an unknown flag, bad optimizer settings") {
    const std::string in = kFixtures + "/small_model.safetensors";
    std::string log;
    CHECK(qftest::run_command(kBinary + " -i " + in + " -o " + in + " --simple --manual_seed 0", log) == 2);
    CHECK(log.find("output is the input file") != std::string::npos);
    CHECK(qftest::run_command(kBinary + " -i " + in + " --bogus-flag", log) == 2);
    CHECK(log.find("unrecognised option '--bogus-flag'") != std::string::npos);
    CHECK(qftest::run_command(kBinary + " -i " + in + " --comfy_quant --manual_seed 0 --optimizer sgd", log) == 2);
    CHECK(log == "quantflow: error: --optimizer 'sgd' is not one of original, adamw, radam\n");
    CHECK(qftest::run_command(kBinary + " -i " + in + " --comfy_quant --manual_seed 0 --rounding-budget 12", log) == 2);
    CHECK(log == "quantflow: error: --rounding-budget '12' is not a percentage between 0 and 10\n");
    const std::string effort_dir = qftest::temp_dir("usage_effort");
    CHECK(qftest::run_command(kBinary + " -i " + in + " -o " + effort_dir + "/x.safetensors --comfy_quant --manual_seed 0 --rounding-effort max",
                              log) == 2);
    CHECK(log == "quantflow: error: --rounding-effort 'max' is not normal or thorough\n");
    CHECK(qftest::list_dir(effort_dir).empty());  // no output, no temp file
    CHECK(qftest::run_command(kBinary + " -i " + in + " --comfy_quant --manual_seed 0 --min_k 4 --max_k 2", log) == 2);
    CHECK(log == "quantflow: error: --min_k/--max_k must satisfy 1 <= min_k <= max_k, got 4/2\n");
    CHECK(qftest::run_command(kBinary + " -i " + in + " --comfy_quant --manual_seed 0 --lr 0", log) == 2);
    CHECK(log == "quantflow: error: --lr must be positive, got 0.0\n");
    CHECK(qftest::run_command(kBinary + " compare " + in, log) == 2);
    CHECK(log.find("compare needs two files") != std::string::npos);
    CHECK(qftest::run_command(kBinary + " --version", log) == 0);
    CHECK(log.rfind("quantflow ", 0) == 0);
}

TEST_CASE("auto-named output next to an input given without a directory, refused the second time without --overwrite") {
    const std::string dir = qftest::temp_dir("auto_name");
    std::string log;
    REQUIRE(qftest::run_command("cp " + kFixtures + "/small_model.safetensors " + dir + "/m.safetensors", log) == 0);
    const std::string cmd = "cd " + dir + " && " + kBinary + " -i m.safetensors --comfy_quant --simple --block_size 32 "
                            "--int8 --manual_seed 0 --progress none";
    REQUIRE(qftest::run_command(cmd, log) == 0);
    CHECK(qftest::file_exists(dir + "/m_int8_blockwise_bs32_k1-16_p0.01_lr0.01.safetensors"));
    CHECK(qftest::run_command(cmd, log) == 2);
    CHECK(log.find("output file exists; pass --overwrite") != std::string::npos);
    CHECK(qftest::list_dir(dir).size() == 2);
}

TEST_CASE("Ctrl-C (SIGINT) mid-run: exit 130, nothing under the output name, no temp file") {
    const std::string dir = qftest::temp_dir("sigint");
    std::string log;
    // A model big enough (~200 MB) that the run is still going when the signal arrives.
    REQUIRE(qftest::run_command("python3 " QF_SOURCE_DIR "/tools/make_demo_model.py --dim 2048 --ffn 8192 --blocks 3 -o " +
                                dir + "/m.safetensors", log) == 0);
    qftest::temp_dir("sigint/out");
    const int rc = qftest::run_command("cd " + dir + " && (" + kBinary + " -i m.safetensors -o out/o.safetensors --comfy_quant "
                                       "--simple --manual_seed 0 --progress none --threads 1 --memory-budget 16MiB & "
                                       "pid=$!; sleep 0.3; kill -INT $pid; wait $pid)", log);
    INFO(log);
    CHECK(rc == 130);
    CHECK(log.find("interrupted") != std::string::npos);
    CHECK(qftest::list_dir(dir + "/out").empty());
}

namespace {

struct LayerQuality {
    double relative = 0, projected = 0, output = 0;
    bool loads = false;
};

std::map<std::string, LayerQuality> compare_json(const std::string& original, const std::string& quantized) {
    std::string out;
    const int rc = qftest::run_command(kBinary + " compare " + original + " " + quantized + " --json 2>/dev/null", out);
    INFO(out);
    REQUIRE(rc == 0);
    simdjson::dom::parser parser;
    const simdjson::padded_string json(out);
    const simdjson::dom::element doc = parser.parse(json);
    std::map<std::string, LayerQuality> layers;
    for (const auto l : doc["layers"].get_array())
        layers[std::string(std::string_view(l["name"].get_string()))] = {l["relative_error"].get_double(), l["projected_error"].get_double(),
                                                                         l["output_error"].get_double(), l["comfy_loads"].get_bool()};
    return layers;
}

// Issue 3's quality bar: with the reference's own arguments, every quantized layer's projected error (compare,
// k = 16, accurate SVD) is no worse than in the reference's output file, and its Frobenius error within 0.1%.
void check_quality_against_reference(const std::string& run) {
    const std::string dir = qftest::temp_dir("quality_" + run);
    const std::string in = kFixtures + "/small_model.safetensors", out = dir + "/out.safetensors";
    std::string log;
    REQUIRE(qftest::run_command(join_args(reference_args(run), in, out), log) == 0);
    const auto ours = compare_json(in, out), ref = compare_json(in, kFixtures + "/ref_" + run + ".safetensors");
    REQUIRE(ours.size() == ref.size());
    REQUIRE(ours.size() >= 8);
    for (const auto& [name, r] : ref) {
        CAPTURE(name);
        const LayerQuality& q = ours.at(name);
        CHECK(q.projected <= r.projected);
        CHECK(std::abs(q.relative - r.relative) <= 1e-3 * r.relative);
        MESSAGE(run << " " << name << ": projected " << q.projected << " vs reference " << r.projected << ", relative "
                << q.relative << " vs " << r.relative);
    }
}

}  // namespace

TEST_CASE("quality: fp8 tensor original beats the reference's projected error, same Frobenius error") {
    check_quality_against_reference("fp8_tensor_original");
}
TEST_CASE("quality: fp8 tensor adamw beats the reference's projected error, same Frobenius error") {
    check_quality_against_reference("fp8_tensor_adamw");
}
TEST_CASE("quality: fp8 tensor radam beats the reference's projected error, same Frobenius error") {
    check_quality_against_reference("fp8_tensor_radam");
}
TEST_CASE("quality: fp8 block64 original --input_scale beats the reference's projected error, same Frobenius error") {
    check_quality_against_reference("fp8_block64_original_inputscale");
}

TEST_CASE("compare: reads legacy, block and INT8 tile files; ComfyUI verdicts; a clear error for a foreign file") {
    const std::string in = kFixtures + "/small_model.safetensors";
    const auto legacy = compare_json(in, kFixtures + "/ref_fp8_tensor_original_legacy.safetensors");
    CHECK(legacy.size() == 9);
    CHECK_FALSE(legacy.at("blocks.0.attn.qkv.weight").loads);  // no scaled_fp8 marker in the reference's legacy file
    CHECK(legacy.at("blocks.0.attn.qkv.weight").relative < 0.03);
    const auto block = compare_json(in, kFixtures + "/ref_fp8_block64_simple.safetensors");
    CHECK_FALSE(block.at("blocks.0.attn.qkv.weight").loads);  // [M, N/64, 1] under float8_e4m3fn crashes ComfyUI
    CHECK(block.at("blocks.0.attn.qkv.weight").relative < legacy.at("blocks.0.attn.qkv.weight").relative);
    const std::string dir = qftest::temp_dir("compare_int8");
    std::string log;
    REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/i8.safetensors --comfy_quant --int8 --block_size 64 "
                                "--manual_seed 0 --progress none", log) == 0);
    const auto tiles = compare_json(in, dir + "/i8.safetensors");
    CHECK(tiles.at("blocks.0.mlp.fc1.weight").relative < 0.02);  // INT8 with rounding: about 1% on Gaussian weights
    CHECK_FALSE(tiles.at("blocks.0.mlp.fc1.weight").loads);      // int8_blockwise is not in mainline ComfyUI
    REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/rows.safetensors --comfy_quant --int8 --scaling_mode row "
                                "--manual_seed 0 --progress none", log) == 0);
    CHECK(compare_json(in, dir + "/rows.safetensors").at("blocks.0.mlp.fc1.weight").loads);  // int8_tensorwise [N, 1]
    // The quantized file does not belong to this original: one line naming both files and the tensor.
    qftest::write_safetensors(dir + "/other.safetensors", {{"blocks.0.attn.proj.weight", "BF16", {8, 8}, qftest::random_bf16(64, 1)}});
    CHECK(qftest::run_command(kBinary + " compare " + dir + "/other.safetensors " + dir + "/i8.safetensors", log) == 1);
    CHECK(log == "quantflow: error: " + dir + "/i8.safetensors: tensor 'blocks.0.attn.proj.weight' has shape [256, 256] but " + dir +
                     "/other.safetensors has [8, 8]\n");
}

// Issue 12 finding 2: compare streams layer by layer within the memory budget; the budget changes how far it
// reads ahead, never a number it prints.
TEST_CASE("compare: the same bytes whatever the memory budget (every layer alone, or the whole file read ahead)") {
    const std::string in = kFixtures + "/small_model.safetensors", quantized = kFixtures + "/ref_fp8_block64_simple.safetensors";
    std::string alone, ahead, text_alone, text_ahead;
    REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + quantized + " --json --memory-budget 1 2>/dev/null", alone) == 0);
    REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + quantized + " --json --memory-budget 4GiB 2>/dev/null", ahead) == 0);
    CHECK(alone.find("\"name\": \"blocks.0.attn.qkv.weight\"") != std::string::npos);
    CHECK(alone == ahead);
    REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + quantized + " --memory-budget 1 --profile gpu-8gb 2>/dev/null",
                                text_alone) == 0);
    REQUIRE(qftest::run_command(kBinary + " compare " + in + " " + quantized + " 2>/dev/null", text_ahead) == 0);
    CHECK(text_alone == text_ahead);
    std::string log;
    CHECK(qftest::run_command(kBinary + " compare " + in + " " + quantized + " --memory-budget lots", log) == 2);
    CHECK(log.find("--memory-budget") != std::string::npos);
}

TEST_CASE("report: one quality line per quantized layer; the rounding-aware finish never raises the projected error") {
    const std::string dir = qftest::temp_dir("report_quality");
    const std::string in = kFixtures + "/small_model.safetensors";
    std::string log;
    for (const bool aware : {false, true}) {
        const std::string report = dir + (aware ? "/on.json" : "/off.json");
        REQUIRE(qftest::run_command(kBinary + " -i " + in + " -o " + dir + "/o.safetensors --overwrite --comfy_quant --manual_seed 0 "
                                    "--progress none --rounding-aware " + (aware ? "on" : "off") + " --report " + report, log) == 0);
        simdjson::dom::parser parser;
        const simdjson::dom::element doc = parser.load(report);
        std::size_t learned = 0;
        for (const auto l : doc["layers"].get_array()) {
            const std::string name(std::string_view(l["name"].get_string()));
            CAPTURE(name);
            CAPTURE(aware);
            CHECK(l["relative_error"].get_double().value() < 0.03);
            CHECK(l["output_error"].get_double().value() < 0.03);
            if (name == "zero.proj.weight") continue;
            ++learned;
            CHECK(l["k"].get_int64().value() >= 1);
            CHECK(l["best_loss"].get_double().value() < l["initial_loss"].get_double().value());
            const double rounded = l["rounded_loss"].get_double(), final_loss = l["final_loss"].get_double();
            CHECK(final_loss <= rounded);
            CHECK((aware ? l["moved_codes"].get_int64().value() > 0 : l["moved_codes"].get_int64().value() == 0));
            if (!aware) CHECK(final_loss == rounded);
            // The report's projected error is the final loss over ||W||: both on the optimizer's k components.
            CHECK(l["projected_error"].get_double().value() < 0.01);
        }
        CHECK(learned == 8);
    }
}

TEST_CASE("devices: a GPU that is not there, or --device with --devices, is a one-line usage error (exit 2)") {
    const std::string model = kFixtures + "/small_model.safetensors";
    std::string log;
    CHECK(qftest::run_command(kBinary + " plan -i " + model + " --devices 63", log) == 2);
    CHECK(log.rfind("quantflow: error: --devices 63: ", 0) == 0);
    CHECK(std::count(log.begin(), log.end(), '\n') == 1);
    CHECK(qftest::run_command(kBinary + " plan -i " + model + " --device cuda:63", log) == 2);
    CHECK(log.rfind("quantflow: error: --device cuda:63: ", 0) == 0);
    CHECK(qftest::run_command(kBinary + " plan -i " + model + " --device cpu --devices 0", log) == 2);
    CHECK(log == "quantflow: error: --device cpu and --devices 0 both given; use one of them\n");
    CHECK(qftest::run_command(kBinary + " plan -i " + model + " --devices 0,x", log) == 2);
    CHECK(log == "quantflow: error: --devices '0,x' is not \"all\" or a list of GPU indices such as 0,1\n");
}

TEST_CASE("devices: --profile gpu-node takes every GPU (the CPU on a machine without one) and plan says where it came from") {
    const std::string model = kFixtures + "/small_model.safetensors";
    std::string log;
    REQUIRE(qftest::run_command(kBinary + " plan -i " + model + " --comfy_quant --profile gpu-node", log) == 0);
    CHECK((log.find("device: cpu (--devices all found no CUDA device or driver) [devices \"all\" from profile gpu-node]") != std::string::npos ||
           log.find("(--devices all) [devices \"all\" from profile gpu-node]") != std::string::npos));
    CHECK(log.find("tensors_in_flight") != std::string::npos);
}
