// Disk faults (issue 12): a full disk, EIO on write and EIO on fdatasync, injected on one file's OutputFile through
// Options::output_fault, in a real batch of real files. Each is one line naming the file and the OS error; nothing
// is published for that file, no temp file is left, and the batch converts the others.
#include <doctest/doctest.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <vector>

#include "pipeline/batch.hpp"
#include "pipeline/convert.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

struct FaultCase {
    const char* name;
    InjectedFault fault;
    std::string message;  // the error after "INPUT: "; OUTPUT stands for the output's path
};

// Runs a batch of a, b, c ([64, 128] bf16 layer + bias each) where only b's output gets `fault`.
void run_faulty_batch(const std::string& dir, const FaultCase& c, int concurrent) {
    std::filesystem::create_directories(dir + "/in");
    std::vector<BatchItem> items;
    for (const char* n : {"a", "b", "c"}) {
        const std::string path = dir + "/in/" + n + ".safetensors";
        qftest::write_safetensors(path, {{"blocks.0.proj.weight", "BF16", {64, 128}, qftest::random_bf16(64 * 128, n[0])},
                                         {"blocks.0.proj.bias", "BF16", {64}, qftest::random_bf16(64, n[0] + 1)}});
        items.push_back({path, path, std::string(n) + "_out.safetensors", {}});
    }
    BatchSettings settings;
    settings.out_dir = dir + "/out";
    settings.concurrent_files = concurrent;
    settings.progress = "none";
    const auto options_for = [&](const BatchItem& item) {
        Options o;
        o.comfy_quant = true;
        o.simple = true;
        o.manual_seed = 0;
        if (item.output == "b_out.safetensors") o.output_fault = c.fault;
        return o;
    };
    std::vector<std::string> log;
    const BatchOutcome outcome = run_batch(items, settings, options_for, [&](const std::string& line) { log.push_back(line); });
    std::string all;
    for (const auto& l : log) all += l + "\n";
    INFO(all);
    CHECK(outcome.exit_code == 3);
    CHECK(outcome.converted == 2);
    CHECK(outcome.failed == 1);
    std::string message = c.message;
    message.replace(message.find("OUTPUT"), 6, dir + "/out/b_out.safetensors");
    const std::string line = dir + "/in/b.safetensors: " + message;
    CHECK(all.find(line + "\n") != std::string::npos);
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"a_out.safetensors", "c_out.safetensors"});
}

}  // namespace

TEST_CASE("disk faults: a full disk mid-write, EIO on write and EIO on fdatasync each fail one file; the batch goes on") {
    const FaultCase cases[] = {
        // The header (704 bytes) fits under 2048 bytes; the layer's 8192 code bytes do not.
        {"enospc", {InjectedFault::Step::Write, ENOSPC, 2048},
         "tensor 'blocks.0.proj.weight': OUTPUT: write of 8192 bytes at offset 836 failed: No space left on device"},
        {"eio_write", {InjectedFault::Step::Write, EIO, 0}, "OUTPUT: write of 704 bytes at offset 0 failed: Input/output error"},
        {"eio_fsync", {InjectedFault::Step::Sync, EIO, 0}, "OUTPUT: fdatasync failed: Input/output error"},
    };
    for (const auto& c : cases)
        for (int concurrent : {1, 3}) {
            CAPTURE(c.name);
            CAPTURE(concurrent);
            run_faulty_batch(qftest::temp_dir(std::string("disk_fault_") + c.name + "_" + std::to_string(concurrent)), c, concurrent);
        }
}
