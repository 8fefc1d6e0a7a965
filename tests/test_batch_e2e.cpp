// End-to-end batch mode: the real binary on directories of generated models: a corrupt input among good
// ones, resume after SIGKILL, manifests with overrides, shards over one directory, the lock, and --model auto
// in `plan`. Full disks and read-only directories: test_robustness_e2e.cpp.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "tests/test_support.hpp"

namespace {

const std::string kFixtures = QF_FIXTURES;
const std::string kBinary = QF_BINARY;

// A model of one [rows, cols] layer with a bias: big enough for learned rounding to take a moment.
void write_model(const std::string& path, std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
    qftest::write_safetensors(path, {{"blocks.0.proj.weight", "BF16", {rows, cols}, qftest::random_bf16(static_cast<std::size_t>(rows * cols), seed)},
                                     {"blocks.0.proj.bias", "BF16", {rows}, qftest::random_bf16(static_cast<std::size_t>(rows), seed + 1)}});
}

std::map<std::string, std::string> statuses(const std::string& report) {
    simdjson::dom::parser parser;
    const simdjson::dom::element doc = parser.load(report);
    std::map<std::string, std::string> out;
    for (const auto f : doc["files"].get_array())
        out[std::filesystem::path(std::string(std::string_view(f["input"].get_string()))).filename().string()] =
            std::string(std::string_view(f["status"].get_string()));
    return out;
}

std::size_t temps_in(const std::string& dir) {
    std::size_t n = 0;
    for (const auto& f : qftest::list_dir(dir)) n += f.find(".qf-tmp.") != std::string::npos;
    return n;
}

}  // namespace

TEST_CASE("batch: a corrupt input among good ones fails alone; exit 3; the report lists it") {
    const std::string dir = qftest::temp_dir("batch_corrupt");
    std::filesystem::create_directories(dir + "/in");
    write_model(dir + "/in/a.safetensors", 64, 128, 1);
    write_model(dir + "/in/b.safetensors", 64, 128, 2);
    std::ofstream(dir + "/in/broken.safetensors") << "not a safetensors file at all";
    std::string log;
    const int rc = qftest::run_command(kBinary + " batch " + dir + "/in --out-dir " + dir + "/out --comfy_quant --simple "
                                       "--manual_seed 0 --progress none --report " + dir + "/r.json", log);
    INFO(log);
    CHECK(rc == 3);
    const auto st = statuses(dir + "/r.json");
    CHECK(st.at("a.safetensors") == "ok");
    CHECK(st.at("b.safetensors") == "ok");
    CHECK(st.at("broken.safetensors") == "failed");
    CHECK(log.find("broken.safetensors: header length") != std::string::npos);
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"a_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors",
                                                                    "b_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors"});
    CHECK(log.find("3 files: 2 converted, 0 skipped (complete), 1 failed") != std::string::npos);
}

TEST_CASE("batch: killed with SIGKILL mid-file, --resume skips the finished files and completes the rest") {
    const std::string dir = qftest::temp_dir("batch_kill");
    std::filesystem::create_directories(dir + "/in");
    for (int i = 0; i < 3; ++i) write_model(dir + "/in/m" + std::to_string(i) + ".safetensors", 1536, 1536, 10 + i);
    const std::string cmd = kBinary + " batch " + dir + "/in --out-dir " + dir + "/out --comfy_quant --optimizer adamw "
                            "--num_iter 300 --manual_seed 0 --progress none";
    std::string log;
    // Start, wait for the first output to be committed, give the second a moment to start, then SIGKILL.
    const int rc = qftest::run_command("(" + cmd + " > " + dir + "/first.log 2>&1 & pid=$!; "
                                       "for i in $(seq 600); do ls " + dir + "/out/m0_*.safetensors >/dev/null 2>&1 && break; sleep 0.1; done; "
                                       "sleep 0.3; kill -9 $pid; wait $pid)", log);
    INFO(log);
    CHECK(rc == 137);
    const auto after_kill = qftest::list_dir(dir + "/out");
    INFO("after kill: " << after_kill.size() << " entries");
    CHECK(qftest::file_exists(dir + "/out/m0_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors"));
    CHECK_FALSE(qftest::file_exists(dir + "/out/m2_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors"));
    const bool second_done = qftest::file_exists(dir + "/out/m1_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors");

    REQUIRE(qftest::run_command(cmd + " --resume --report " + dir + "/r.json", log) == 0);
    const auto st = statuses(dir + "/r.json");
    CHECK(st.at("m0.safetensors") == "skipped");
    CHECK(st.at("m1.safetensors") == (second_done ? "skipped" : "ok"));
    CHECK(st.at("m2.safetensors") == "ok");
    CHECK(temps_in(dir + "/out") == 0);
    for (int i = 0; i < 3; ++i)
        CHECK(qftest::run_command(kBinary + " inspect " + dir + "/out/m" + std::to_string(i) +
                                  "_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors", log) == 0);
    // A third run has nothing to do.
    REQUIRE(qftest::run_command(cmd + " --resume", log) == 0);
    CHECK(log.find("3 files: 0 converted, 3 skipped (complete)") != std::string::npos);
    // Changed options are not "complete": the outputs are redone.
    REQUIRE(qftest::run_command(cmd + " --resume --heur", log) == 0);
    CHECK(log.find("3 files: 3 converted, 0 skipped") != std::string::npos);
}

TEST_CASE("batch: a manifest with per-file overrides and output names") {
    const std::string dir = qftest::temp_dir("batch_manifest");
    write_model(dir + "/a.safetensors", 128, 256, 3);
    write_model(dir + "/b.safetensors", 128, 256, 4);
    std::ofstream(dir + "/m.json") << R"({"defaults": {"simple": true},
      "files": [{"input": "a.safetensors", "output": "a_int8.safetensors", "int8": true, "block_size": 128},
                {"input": "b.safetensors", "scaling_mode": "row"}]})";
    std::string log;
    REQUIRE(qftest::run_command(kBinary + " batch --manifest " + dir + "/m.json --out-dir " + dir + "/out --comfy_quant "
                                "--manual_seed 0 --progress none", log) == 0);
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"a_int8.safetensors", "b_float8_e4m3fn_row_k1-16_p0.01_lr0.01.safetensors"});
    REQUIRE(qftest::run_command(kBinary + " inspect " + dir + "/out/a_int8.safetensors", log) == 0);
    CHECK(log.find("int8_blockwise") != std::string::npos);
    CHECK(log.find("group_size") != std::string::npos);
}

TEST_CASE("batch: three shards into one directory produce every output exactly once; concurrent files match") {
    const std::string dir = qftest::temp_dir("batch_shards");
    std::filesystem::create_directories(dir + "/in");
    for (int i = 0; i < 7; ++i) write_model(dir + "/in/f" + std::to_string(i) + ".safetensors", 32, 64, 20 + i);
    std::string log;
    std::size_t total = 0;
    for (int s = 0; s < 3; ++s) {
        REQUIRE(qftest::run_command(kBinary + " batch " + dir + "/in --out-dir " + dir + "/out --comfy_quant --simple --manual_seed 0 "
                                    "--progress none --shard " + std::to_string(s) + "/3 --report " + dir + "/r" + std::to_string(s) + ".json", log) == 0);
        total += statuses(dir + "/r" + std::to_string(s) + ".json").size();
    }
    CHECK(total == 7);
    CHECK(qftest::list_dir(dir + "/out").size() == 7);
    // Several files at once (budget divided between them) give the same bytes as one at a time.
    REQUIRE(qftest::run_command(kBinary + " batch " + dir + "/in --out-dir " + dir + "/par --comfy_quant --simple --manual_seed 0 "
                                "--progress none --concurrent-files 3", log) == 0);
    CHECK(log.find("3 at a time") != std::string::npos);
    for (const auto& f : qftest::list_dir(dir + "/out")) CHECK(qftest::read_file(dir + "/out/" + f) == qftest::read_file(dir + "/par/" + f));
}

TEST_CASE("batch: a second run on a locked directory stops at once") {
    const std::string dir = qftest::temp_dir("batch_lock_disk");
    std::filesystem::create_directories(dir + "/out");
    write_model(dir + "/a.safetensors", 64, 128, 5);
    write_model(dir + "/b.safetensors", 64, 128, 6);
    std::string log;
    {
        const int fd = ::open((dir + "/out/.quantflow-batch.lock").c_str(), O_RDWR | O_CREAT, 0644);
        REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
        CHECK(qftest::run_command(kBinary + " batch " + dir + "/a.safetensors --out-dir " + dir + "/out --simple --progress none", log) == 1);
        CHECK(log == "quantflow: error: " + dir + "/out/.quantflow-batch.lock: another quantflow batch is writing to " + dir +
                         "/out (this shard); wait for it to finish\n");
        ::close(fd);
    }
}

TEST_CASE("--model auto: plan names the detected architecture; an explicit flag wins; none turns it off") {
    const std::string dir = qftest::temp_dir("model_auto");
    const std::string model = dir + "/wan.safetensors";
    qftest::write_safetensors(model, {{"patch_embedding.weight", "BF16", {64, 16, 1, 2, 2}, qftest::random_bf16(64 * 64, 1)},
                                      {"blocks.0.self_attn.q.weight", "BF16", {64, 64}, qftest::random_bf16(64 * 64, 2)},
                                      {"blocks.0.cross_attn.k.weight", "BF16", {64, 64}, qftest::random_bf16(64 * 64, 3)},
                                      {"time_embedding.0.weight", "BF16", {64, 64}, qftest::random_bf16(64 * 64, 4)},
                                      {"head.modulation", "BF16", {1, 2, 64}, qftest::random_bf16(2 * 64, 5)}});
    std::string log;
    REQUIRE(qftest::run_command(kBinary + " plan -i " + model + " --comfy_quant --simple 2>/dev/null", log) == 0);
    CHECK(log.find("model: auto: wan (WAN 2.x video DiT (seed AVOID + WAN lists)): found patch_embedding.weight") != std::string::npos);
    CHECK(log.find("profile wan: 'time_embedding'") != std::string::npos);  // the WAN filter is applied
    REQUIRE(qftest::run_command(kBinary + " plan -i " + model + " --comfy_quant --simple --model none 2>/dev/null", log) == 0);
    CHECK(log.find("model: none") != std::string::npos);
    CHECK(log.find("profile wan") == std::string::npos);
    REQUIRE(qftest::run_command(kBinary + " plan -i " + model + " --comfy_quant --simple --model auto --t5xxl 2>/dev/null", log) == 0);
    CHECK(log.find("model: --model auto ignored, explicit model flags win") != std::string::npos);
    CHECK(log.find("model profiles: t5xxl") != std::string::npos);
}

TEST_CASE("batch: SIGINT abandons the file in flight, removes its temp file and still writes the report") {
    const std::string dir = qftest::temp_dir("batch_sigint");
    std::filesystem::create_directories(dir + "/in");
    for (int i = 0; i < 2; ++i) write_model(dir + "/in/s" + std::to_string(i) + ".safetensors", 1536, 1536, 40 + i);
    std::string log;
    const int rc = qftest::run_command("(" + kBinary + " batch " + dir + "/in --out-dir " + dir + "/out --comfy_quant --optimizer adamw "
                                       "--num_iter 300 --manual_seed 0 --progress none --report " + dir + "/r.json & pid=$!; "
                                       "sleep 0.5; kill -INT $pid; wait $pid)", log);
    INFO(log);
    CHECK(rc == 130);
    const auto st = statuses(dir + "/r.json");
    CHECK(st.at("s0.safetensors") == "interrupted");
    CHECK(st.at("s1.safetensors") == "not_started");
    CHECK(qftest::list_dir(dir + "/out").empty());  // no output, no temp file, lock file removed
}
