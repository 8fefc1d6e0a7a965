// End-to-end robustness (issue 12): the real binary while its input is truncated, modified or replaced under it
// (finding 1), on a real full filesystem and into a real read-only directory (disk faults).
//
// The input changes while the first layers compute (learned rounding, a second or more each), right after the
// temp file appears. However the timing falls, the outcome is the same: a read of a vanished page is caught
// (finding 1's guard), or the check before the rename refuses to publish.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "tests/test_support.hpp"

namespace {

const std::string kBinary = QF_BINARY;

// Three [rows, rows] bf16 layers; returns the file size.
std::uint64_t write_model(const std::string& path, std::int64_t rows, std::uint64_t seed) {
    std::vector<qftest::RawTensor> tensors;
    for (int i = 0; i < 3; ++i)
        tensors.push_back({"blocks." + std::to_string(i) + ".proj.weight", "BF16", {rows, rows},
                           qftest::random_bf16(static_cast<std::size_t>(rows * rows), seed + i)});
    qftest::write_safetensors(path, tensors);
    return std::filesystem::file_size(path);
}

// Shell: wait (up to 60 s) until a temp file of `output` exists.
std::string wait_for_temp(const std::string& output) {
    const std::filesystem::path p(output);
    return "for i in $(seq 1200); do ls " + p.parent_path().string() + "/." + p.filename().string() +
           ".qf-tmp.* >/dev/null 2>&1 && break; sleep 0.05; done; ";
}

std::map<std::string, std::string> errors_by_input(const std::string& report) {
    simdjson::dom::parser parser;
    const simdjson::dom::element doc = parser.load(report);
    std::map<std::string, std::string> out;
    for (const auto f : doc["files"].get_array())
        out[std::filesystem::path(std::string(std::string_view(f["input"].get_string()))).filename().string()] =
            std::string(std::string_view(f["status"].get_string())) + ": " + std::string(std::string_view(f["error"].get_string()));
    return out;
}

// Mounting needs a user + mount namespace (unshare -rm); without one these tests are skipped with a message.
bool can_mount() {
    std::string out;
    return qftest::run_command("unshare -rm true", out) == 0;
}

// `command` with `dir` read-only: a read-only bind mount in a namespace (root ignores permissions), or mode 0555.
std::string with_read_only(const std::string& dir, const std::string& command) {
    if (::geteuid() != 0) {
        std::filesystem::permissions(dir, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
        return command;
    }
    return "unshare -rm sh -c 'mount --bind " + dir + " " + dir + " && mount -o remount,bind,ro " + dir + " && " + command + "'";
}

}  // namespace

TEST_CASE("finding 1: input truncated while quantflow converts: exit 1, one error line with both sizes, no temp file") {
    const std::string dir = qftest::temp_dir("e2e_truncated");
    std::filesystem::create_directories(dir + "/out");
    const std::string in = dir + "/in.safetensors", out = dir + "/out/o.safetensors";
    const std::uint64_t size = write_model(in, 768, 1);
    const std::uint64_t cut = size / 3;  // inside the first layer
    std::string log;
    const int rc = qftest::run_command("(" + kBinary + " -i " + in + " -o " + out + " --comfy_quant --optimizer adamw --num_iter 300 "
                                       "--manual_seed 0 --progress none & pid=$!; " + wait_for_temp(out) + "truncate -s " +
                                       std::to_string(cut) + " " + in + "; wait $pid)", log);
    INFO(log);
    CHECK(rc == 1);
    const std::string line = "quantflow: error: " + in + ": input shrank from " + std::to_string(size) + " to " + std::to_string(cut) +
                             " bytes while converting\n";
    CHECK(log.size() >= line.size());
    CHECK(log.substr(log.size() - line.size()) == line);  // the last line, and the only error line
    CHECK(log.find("error") == log.rfind("error"));  // one error, and no "Bus error"
    CHECK(qftest::list_dir(dir + "/out").empty());
}

TEST_CASE("finding 1: in a batch, inputs truncated, modified and replaced mid-run fail alone; the batch goes on") {
    const std::string dir = qftest::temp_dir("e2e_batch_changes");
    std::filesystem::create_directories(dir + "/in");
    std::map<std::string, std::uint64_t> size;
    for (const char* n : {"a", "b", "c"}) size[n] = write_model(dir + "/in/" + n + ".safetensors", 512, n[0]);
    write_model(dir + "/in/d.safetensors", 64, 4);
    const auto out = [&](const std::string& n) { return dir + "/out/" + n + ".safetensors"; };
    std::ofstream(dir + "/m.json") << R"({"files": [{"input": "in/a.safetensors", "output": "a.safetensors"},
      {"input": "in/b.safetensors", "output": "b.safetensors"}, {"input": "in/c.safetensors", "output": "c.safetensors"},
      {"input": "in/d.safetensors", "output": "d.safetensors"}]})";
    const std::string a = dir + "/in/a.safetensors", b = dir + "/in/b.safetensors", c = dir + "/in/c.safetensors";
    std::string log;
    const int rc = qftest::run_command(
        "(" + kBinary + " batch --manifest " + dir + "/m.json --out-dir " + dir + "/out --concurrent-files 1 --comfy_quant "
        "--optimizer adamw --num_iter 300 --manual_seed 0 --progress none --report " + dir + "/r.json & pid=$!; " +
        wait_for_temp(out("a")) + "truncate -s 4096 " + a + "; " +
        wait_for_temp(out("b")) + "printf XXXX | dd of=" + b + " bs=1 seek=100000 conv=notrunc 2>/dev/null; touch -d @$(($(date +%s) + 10)) " + b + "; " +
        wait_for_temp(out("c")) + "cp " + c + " " + c + ".new && mv " + c + ".new " + c + "; wait $pid)", log);
    INFO(log);
    CHECK(rc == 3);
    const auto errors = errors_by_input(dir + "/r.json");
    CHECK(errors.at("a.safetensors") == "failed: " + a + ": input shrank from " + std::to_string(size["a"]) + " to 4096 bytes while converting");
    CHECK(errors.at("b.safetensors") == "failed: " + b + ": input was modified while converting (its modification time changed)");
    CHECK(errors.at("c.safetensors") == "failed: " + c + ": input was replaced by another file while converting");
    CHECK(errors.at("d.safetensors") == "ok: ");
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"d.safetensors"});  // no temp file, lock removed
}

TEST_CASE("disk faults: a real full filesystem (tmpfs) fails the file that does not fit; the batch converts the other") {
    if (!can_mount()) {
        MESSAGE("skipped: no user/mount namespace here (unshare -rm failed)");
        return;
    }
    const std::string dir = qftest::temp_dir("e2e_full_disk");
    std::filesystem::create_directories(dir + "/small");
    // big: an 8 MiB output needs 24 MiB with the margin, the filesystem has 20; little: 8 KiB of output.
    qftest::write_safetensors(dir + "/big.safetensors", {{"blocks.0.proj.weight", "BF16", {2048, 4096}, qftest::random_bf16(2048 * 4096, 1)}});
    qftest::write_safetensors(dir + "/little.safetensors", {{"blocks.0.proj.weight", "BF16", {64, 128}, qftest::random_bf16(64 * 128, 2)}});
    std::string log;
    const int rc = qftest::run_command(
        "unshare -rm sh -c 'mount -t tmpfs -o size=20m qf_full " + dir + "/small && " + kBinary + " batch " + dir +
        "/big.safetensors " + dir + "/little.safetensors --out-dir " + dir + "/small --comfy_quant --simple --progress none --report " +
        dir + "/r.json; rc=$?; echo listing: $(ls -A " + dir + "/small); exit $rc'", log);
    INFO(log);
    CHECK(rc == 3);
    const auto errors = errors_by_input(dir + "/r.json");
    const std::string big_out = dir + "/small/big_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors";
    CHECK(errors.at("big.safetensors") == "failed: " + big_out + ": not enough free space in '" + dir +
                                              "/small': need 24.00 MiB (output 8.00 MiB + 16 MiB margin), 20.00 MiB free");
    CHECK(errors.at("little.safetensors") == "ok: ");
    CHECK(log.find("listing: little_float8_e4m3fn_tensor_k1-16_p0.01_lr0.01.safetensors\n") != std::string::npos);
}

TEST_CASE("disk faults: a read-only output directory: convert exits 1 with the OS error; a batch fails that file and goes on") {
    if (::geteuid() == 0 && !can_mount()) {
        MESSAGE("skipped: running as root without a user/mount namespace, so no directory is read-only to us");
        return;
    }
    const std::string dir = qftest::temp_dir("e2e_read_only");
    std::filesystem::create_directories(dir + "/ro");
    std::filesystem::create_directories(dir + "/out");
    qftest::write_safetensors(dir + "/a.safetensors", {{"blocks.0.proj.weight", "BF16", {64, 128}, qftest::random_bf16(64 * 128, 1)}});
    qftest::write_safetensors(dir + "/b.safetensors", {{"blocks.0.proj.weight", "BF16", {64, 128}, qftest::random_bf16(64 * 128, 2)}});
    const std::string why = ::geteuid() == 0 ? "Read-only file system" : "Permission denied";
    std::string log;
    int rc = qftest::run_command(with_read_only(dir + "/ro", kBinary + " -i " + dir + "/a.safetensors -o " + dir +
                                                                 "/ro/a.safetensors --comfy_quant --simple --progress none"), log);
    CHECK(rc == 1);
    CHECK(log.find("quantflow: error: " + dir + "/ro/a.safetensors: cannot create temp file in '" + dir + "/ro': " + why + "\n") !=
          std::string::npos);
    std::ofstream(dir + "/m.json") << "{\"files\": [{\"input\": \"a.safetensors\", \"output\": \"" + dir +
                                          "/ro/a.safetensors\"}, {\"input\": \"b.safetensors\", \"output\": \"b.safetensors\"}]}";
    rc = qftest::run_command(with_read_only(dir + "/ro", kBinary + " batch --manifest " + dir + "/m.json --out-dir " + dir +
                                                             "/out --comfy_quant --simple --progress none --report " + dir + "/r.json"), log);
    INFO(log);
    CHECK(rc == 3);
    const auto errors = errors_by_input(dir + "/r.json");
    CHECK(errors.at("a.safetensors") == "failed: " + dir + "/ro/a.safetensors: cannot create temp file in '" + dir + "/ro': " + why);
    CHECK(errors.at("b.safetensors") == "ok: ");
    std::filesystem::permissions(dir + "/ro", std::filesystem::perms::owner_all);
    CHECK(qftest::list_dir(dir + "/ro").empty());
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"b.safetensors"});
}
