#include <algorithm>
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "kernels/error.hpp"
#include "pipeline/profiles.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

const char* const kModelKeys = "(expected one of: name, description, detect, skip, remove, input_scale_from_weight, layer_configs)";
const char* const kSizeUnits = "use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB";

std::string write_profile(const std::string& file, const std::string& json) {
    const std::string path = qftest::temp_dir("profiles_" + file) + "/" + file;
    std::ofstream(path) << json;
    return path;
}

// The message of the Error `f` throws; Error is also required to carry the usage exit code.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        CHECK(e.code() == ExitCode::kUsage);
        return e.what();
    }
    FAIL("no Error thrown");
    return {};
}

std::string model_error(const std::string& file, const std::string& json) {
    const std::string path = write_profile(file, json);
    const std::string message = error_of([&] { load_model_profile(path); });
    REQUIRE(message.starts_with(path + ": "));
    return message.substr(path.size() + 2);
}

std::string hardware_error(const std::string& file, const std::string& json) {
    const std::string path = write_profile(file, json);
    const std::string message = error_of([&] { load_hardware_profile(path); });
    REQUIRE(message.starts_with(path + ": "));
    return message.substr(path.size() + 2);
}

}  // namespace

TEST_CASE("shipped hardware profiles are cpu, gpu-8gb, gpu-24gb, gpu-80gb, gpu-node") {
    CHECK(hardware_profile_names() == std::vector<std::string>{"cpu", "gpu-24gb", "gpu-80gb", "gpu-8gb", "gpu-node"});
}

TEST_CASE("shipped hardware profiles load with sane values") {
    const std::vector<std::pair<std::string, std::uint64_t>> budgets = {
        {"cpu", 1 * kGiB}, {"gpu-8gb", 768 * kMiB}, {"gpu-24gb", 1280 * kMiB}, {"gpu-80gb", 1536 * kMiB}};
    // Host budgets stay small with a GPU (the work lives in GPU memory): peak RSS below 2 GiB whatever the model.
    const std::vector<std::pair<std::string, std::uint64_t>> gpu_budgets = {
        {"cpu", 0}, {"gpu-8gb", 4 * kGiB}, {"gpu-24gb", 12 * kGiB}, {"gpu-80gb", 40 * kGiB}};
    for (const auto& [name, budget] : budgets) {
        CAPTURE(name);
        const HardwareProfile hw = load_hardware_profile(name);
        CHECK(hw.name == name);
        CHECK(hw.memory_budget == budget);
        CHECK(hw.memory_budget < 2 * kGiB);
        CHECK(hw.gpu_memory_budget == std::find_if(gpu_budgets.begin(), gpu_budgets.end(), [&](const auto& g) { return g.first == name; })->second);
        CHECK(hw.tensors_in_flight >= 1);
        CHECK(hw.cpu_threads == 0);
        CHECK(hw.concurrent_files == 1);
        CHECK(hw.reader_chunk >= 16 * kMiB);
        CHECK(hw.reader_chunk <= hw.memory_budget);
        // Pinned staging memory is part of the budget, never on top of it.
        CHECK(hw.pinned_slab * static_cast<std::uint64_t>(hw.pinned_slabs) <= hw.memory_budget);
        if (name == "cpu") {
            CHECK(hw.device == "cpu");
            CHECK(hw.gpu_streams == 0);
            CHECK(hw.pinned_slab * static_cast<std::uint64_t>(hw.pinned_slabs) == 0);
        } else {
            CHECK(hw.device == "cuda");
            CHECK(hw.gpu_streams >= 2);
            CHECK(hw.pinned_slab >= 32 * kMiB);
            CHECK(hw.pinned_slabs >= hw.gpu_streams);
            CHECK(hw.pinned_slab * static_cast<std::uint64_t>(hw.pinned_slabs) <= hw.memory_budget / 4);
        }
    }
    CHECK(load_hardware_profile("gpu-24gb").pinned_slab == 64 * kMiB);
    CHECK(load_hardware_profile("gpu-24gb").pinned_slabs == 4);
    CHECK(load_hardware_profile("gpu-80gb").gpu_streams == 4);
}

TEST_CASE("every shipped model profile loads, is named after its file and has no duplicate entry") {
    for (const auto& name : model_profile_names()) {
        CAPTURE(name);
        const ModelProfile p = load_model_profile(name);
        CHECK(p.name == name);
        CHECK(!p.description.empty());
        CHECK(!p.skip.empty());
        CHECK(std::set<std::string>(p.skip.begin(), p.skip.end()).size() == p.skip.size());
    }
}

TEST_CASE("an unknown profile name lists the available ones") {
    CHECK(error_of([] { load_model_profile("flux9"); }) ==
          "unknown model profile 'flux9' (available: distillation_large, distillation_small, flux, hunyuan, nerf_large, "
          "nerf_small, qwen, radiance, t5xxl, wan, zimage_l, zimage_s; or give a path to a .json file)");
    CHECK(
        error_of([] { load_hardware_profile("tpu"); }) ==
        "unknown hardware profile 'tpu' (available: cpu, gpu-24gb, gpu-80gb, gpu-8gb, gpu-node; or give a path to a .json file)");
    // A name is never looked up as a model when a hardware profile is asked for.
    CHECK(error_of([] { load_hardware_profile("wan"); }).starts_with("unknown hardware profile 'wan'"));
}

TEST_CASE("a user's model profile is read from its path") {
    const std::string path = write_profile("mine.json", R"({
        "name": "mine", "description": "test", "detect": {"all": ["a.weight", "b.weight"]},
        "skip": ["emb", "head"], "remove": ["aux"], "input_scale_from_weight": true })");
    const ModelProfile p = load_model_profile(path);
    CHECK(p.name == "mine");
    CHECK(p.description == "test");
    CHECK(p.detect_all == std::vector<std::string>{"a.weight", "b.weight"});
    CHECK(p.skip == std::vector<std::string>{"emb", "head"});
    CHECK(p.remove == std::vector<std::string>{"aux"});
    CHECK(p.input_scale_from_weight);

    const ModelProfile minimal = load_model_profile(write_profile("min.json", R"({"name": "min", "skip": []})"));
    CHECK(minimal.remove.empty());
    CHECK(minimal.detect_all.empty());
    CHECK(!minimal.input_scale_from_weight);
}

TEST_CASE("a missing profile file is an error naming the path") {
    const std::string path = qftest::temp_dir("profiles_missing") + "/nope.json";
    CHECK(error_of([&] { load_model_profile(path); }) ==
          path + ": cannot open model profile: No such file or directory");
    CHECK(error_of([&] { load_hardware_profile(path); }) ==
          path + ": cannot open hardware profile: No such file or directory");
}

TEST_CASE("model profile: an unknown key is an error naming the file and the key") {
    CHECK(model_error("k.json", R"({"name": "x", "skip": [], "skp": []})") ==
          "unknown key 'skp' " + std::string(kModelKeys));
    CHECK(model_error("d.json", R"({"name": "x", "skip": [], "detect": {"some": []}})") ==
          "unknown key 'detect.some' (expected one of: all, any, none, rank)");
    CHECK(model_error("d0.json", R"({"name": "x", "skip": [], "detect": {"none": ["a"]}})") ==
          "field 'detect' needs a non-empty 'all' or 'any' list");
    CHECK(model_error("dr.json", R"({"name": "x", "skip": [], "detect": {"all": ["a"], "rank": {"a": "five"}}})") ==
          "field 'detect.rank.a' must be an integer 0..8");
    CHECK(model_error("dup.json", R"({"name": "x", "skip": [], "skip": ["a"]})") == "duplicate key 'skip'");
}

TEST_CASE("model profile: wrong types name the field") {
    CHECK(model_error("s.json", R"({"name": "x", "skip": "norm"})") == "field 'skip' must be an array of strings");
    CHECK(model_error("s1.json", R"({"name": "x", "skip": ["norm", 1]})") ==
          "field 'skip' must be an array of strings");
    CHECK(model_error("r.json", R"({"name": "x", "skip": [], "remove": {}})") ==
          "field 'remove' must be an array of strings");
    CHECK(model_error("n.json", R"({"name": 5, "skip": []})") == "field 'name' must be a string");
    CHECK(model_error("de.json", R"({"name": "x", "skip": [], "description": null})") ==
          "field 'description' must be a string");
    CHECK(model_error("i.json", R"({"name": "x", "skip": [], "input_scale_from_weight": "yes"})") ==
          "field 'input_scale_from_weight' must be true or false");
    CHECK(model_error("dt.json", R"({"name": "x", "skip": [], "detect": ["a"]})") ==
          "field 'detect' must be an object");
    CHECK(model_error("da.json", R"({"name": "x", "skip": [], "detect": {"all": "a"}})") ==
          "field 'detect.all' must be an array of strings");
}

TEST_CASE("model profile: required fields, empty entries and bad JSON") {
    CHECK(model_error("nn.json", R"({"skip": []})") == "missing field 'name'");
    CHECK(model_error("ns.json", R"({"name": "x"})") == "missing field 'skip'");
    CHECK(model_error("en.json", R"({"name": "", "skip": []})") == "field 'name' must not be empty");
    // "" is a substring of every key: it would keep (or remove) the whole model.
    CHECK(model_error("es.json", R"({"name": "x", "skip": ["norm", ""]})") ==
          "field 'skip' has an empty string, which matches every key");
    CHECK(model_error("arr.json", R"(["name"])") == "the top level must be a JSON object");
    CHECK(model_error("bad.json", R"({"name": "x", "skip": [)").starts_with("invalid JSON: "));
}

TEST_CASE("hardware profile: a partial file keeps the defaults of the other fields") {
    const HardwareProfile hw =
        load_hardware_profile(write_profile("hw.json", R"({"name": "box", "memory_budget": "3GiB"})"));
    const HardwareProfile defaults;
    CHECK(hw.name == "box");
    CHECK(hw.memory_budget == 3 * kGiB);
    CHECK(hw.device == defaults.device);
    CHECK(hw.tensors_in_flight == defaults.tensors_in_flight);
    CHECK(hw.pinned_slab == defaults.pinned_slab);
    CHECK(hw.reader_chunk == defaults.reader_chunk);
    // Sizes may also be plain byte counts.
    CHECK(load_hardware_profile(write_profile("hw2.json", R"({"name": "b", "reader_chunk": 1048576})")).reader_chunk ==
          kMiB);
    CHECK(load_hardware_profile(write_profile("hw3.json", R"({"name": "b", "device": "cuda:1"})")).device == "cuda:1");
}

TEST_CASE("hardware profile: unknown keys, wrong types and bad sizes name the field") {
    CHECK(hardware_error("u.json", R"({"name": "x", "streams": 2})") ==
          "unknown key 'streams' (expected one of: name, device, devices, memory_budget, gpu_memory_budget, tensors_in_flight, cpu_threads, "
          "gpu_streams, pinned_slab, pinned_slabs, reader_chunk, concurrent_files)");
    CHECK(hardware_error("s.json", R"({"name": "x", "memory_budget": "6gib"})") ==
          "field 'memory_budget': invalid size '6gib' (unknown unit 'gib'; " + std::string(kSizeUnits) + ")");
    CHECK(hardware_error("t.json", R"({"name": "x", "memory_budget": true})") ==
          "field 'memory_budget' must be a size such as \"256MiB\" or a byte count");
    CHECK(hardware_error("neg.json", R"({"name": "x", "pinned_slab": -1})") ==
          "field 'pinned_slab' must be a size such as \"256MiB\" or a byte count");
    CHECK(hardware_error("z.json", R"({"name": "x", "memory_budget": "0B"})") ==
          "field 'memory_budget' must be at least 1 B");
    CHECK(hardware_error("f.json", R"({"name": "x", "tensors_in_flight": 0})") ==
          "field 'tensors_in_flight' must be an integer from 1 to 1024");
    CHECK(hardware_error("f2.json", R"({"name": "x", "cpu_threads": 1.5})") ==
          "field 'cpu_threads' must be an integer from 0 to 4096");
    CHECK(hardware_error("f3.json", R"({"name": "x", "gpu_streams": "2"})") ==
          "field 'gpu_streams' must be an integer from 0 to 64");
    CHECK(hardware_error("d.json", R"({"name": "x", "device": "gpu"})") ==
          "field 'device' must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", not \"gpu\"");
    CHECK(hardware_error("d2.json", R"({"name": "x", "device": "cuda:"})") ==
          "field 'device' must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", not \"cuda:\"");
    CHECK(hardware_error("n.json", R"({"device": "cpu"})") == "missing field 'name'");
}

TEST_CASE("parse_size: plain bytes, decimal and binary units, decimals") {
    CHECK(parse_size("4096", "x") == 4096);
    CHECK(parse_size("0", "x") == 0);
    CHECK(parse_size("512B", "x") == 512);
    CHECK(parse_size("64KiB", "x") == 64 * 1024);
    CHECK(parse_size("256MiB", "x") == 256 * kMiB);
    CHECK(parse_size("6GiB", "x") == 6 * kGiB);
    CHECK(parse_size("1TiB", "x") == 1024 * kGiB);
    CHECK(parse_size("2KB", "x") == 2000);
    CHECK(parse_size("3MB", "x") == 3000000);
    CHECK(parse_size("1.5GB", "x") == 1500000000);
    CHECK(parse_size("1.5GiB", "x") == 1610612736);
    CHECK(parse_size("0.5KiB", "x") == 512);
    CHECK(parse_size("2TB", "x") == 2000000000000ull);
    CHECK(parse_size("256 MiB", "x") == 256 * kMiB);  // as format_size prints it
}

TEST_CASE("parse_size: errors name what was parsed and the text") {
    const std::string expected = "(expected bytes or a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 6GiB)";
    CHECK(error_of([] { parse_size("", "--memory-budget"); }) == "--memory-budget: invalid size '' " + expected);
    CHECK(error_of([] { parse_size("GiB", "--memory-budget"); }) == "--memory-budget: invalid size 'GiB' " + expected);
    CHECK(error_of([] { parse_size("-1", "--memory-budget"); }) == "--memory-budget: invalid size '-1' " + expected);
    CHECK(error_of([] { parse_size(".5GiB", "--memory-budget"); }) ==
          "--memory-budget: invalid size '.5GiB' " + expected);
    CHECK(error_of([] { parse_size("5.GiB", "--memory-budget"); }) ==
          "--memory-budget: invalid size '5.GiB' " + expected);
    CHECK(error_of([] { parse_size("1.2.3GiB", "--memory-budget"); }) ==
          "--memory-budget: invalid size '1.2.3GiB' " + expected);
    // Units are case-sensitive: "gib" and "mb" would be guesses.
    CHECK(error_of([] { parse_size("6gib", "--memory-budget"); }) ==
          "--memory-budget: invalid size '6gib' (unknown unit 'gib'; " + std::string(kSizeUnits) + ")");
    CHECK(error_of([] { parse_size("6 ", "--memory-budget"); }) ==
          "--memory-budget: invalid size '6 ' (unknown unit ' '; " + std::string(kSizeUnits) + ")");
    CHECK(error_of([] { parse_size("1.5", "--memory-budget"); }) ==
          "--memory-budget: invalid size '1.5' (a byte count must be a whole number)");
    CHECK(error_of([] { parse_size("1.5B", "--memory-budget"); }) ==
          "--memory-budget: invalid size '1.5B' (a byte count must be a whole number)");
    CHECK(error_of([] { parse_size("99999999999999999999", "--memory-budget"); }) ==
          "--memory-budget: invalid size '99999999999999999999' (too large)");
    CHECK(error_of([] { parse_size("20000000TiB", "--memory-budget"); }) ==
          "--memory-budget: invalid size '20000000TiB' (too large)");
}

TEST_CASE("format_size: whole binary units without decimals, others with two") {
    CHECK(format_size(0) == "0 B");
    CHECK(format_size(512) == "512 B");
    CHECK(format_size(1023) == "1023 B");
    CHECK(format_size(1024) == "1 KiB");
    CHECK(format_size(1536) == "1.50 KiB");
    CHECK(format_size(256 * kMiB) == "256 MiB");
    CHECK(format_size(1500000000) == "1.40 GiB");
    CHECK(format_size(6 * kGiB) == "6 GiB");
    CHECK(format_size(1024 * kGiB) == "1 TiB");
    CHECK(format_size(kMiB - 1) == "1.00 MiB");  // not "1024.00 KiB"
    for (std::uint64_t bytes : {std::uint64_t{0}, std::uint64_t{777}, 64 * kMiB, 16 * kGiB})
        CHECK(parse_size(format_size(bytes), "round trip") == bytes);
}
