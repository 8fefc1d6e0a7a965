// Finding 1 (issue 12) through a whole conversion: the input changes at a controlled point (from the optimizer's
// progress callback, while the first layer computes) and the conversion fails with one line, publishing nothing.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "kernels/error.hpp"
#include "pipeline/convert.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

// Three [256, 512] bf16 layers: 256 KiB each after the header.
std::string write_model(const std::string& dir) {
    const std::string path = dir + "/in.safetensors";
    std::vector<qftest::RawTensor> tensors;
    for (int i = 0; i < 3; ++i)
        tensors.push_back({"blocks." + std::to_string(i) + ".proj.weight", "BF16", {256, 512}, qftest::random_bf16(256 * 512, 7 + i)});
    qftest::write_safetensors(path, tensors);
    return path;
}

Prepared prepare(const std::string& input, const std::string& output) {
    Options o;
    o.input = input;
    o.output = output;
    o.comfy_quant = true;
    o.manual_seed = 0;
    o.num_iter = 20;
    o.progress = "none";
    Prepared p = prepare_conversion(o);
    p.run.concurrency = 1;  // the later layers are not read before the first one's optimizer runs
    return p;
}

// Runs the conversion; `change` runs once, from the first progress report of the first layer.
void convert_with_change(Prepared& p, const std::function<void()>& change) {
    bool done = false;
    p.run.optimizer.on_progress = [&](std::string_view tensor, std::string_view, int, int) {
        if (!done && tensor == "blocks.0.proj.weight") {
            done = true;
            change();
        }
    };
    Progress quiet(ProgressStyle::None, 1);
    execute_conversion(p, quiet);
}

}  // namespace

TEST_CASE("finding 1: input truncated during conversion: one line with both sizes; no output and no temp file") {
    const std::string dir = qftest::temp_dir("change_truncated");
    std::filesystem::create_directories(dir + "/out");
    const std::string input = write_model(dir);
    Prepared p = prepare(input, dir + "/out/o.safetensors");
    const std::uint64_t size = p.plan.input.file_size, cut = p.plan.input.data_start + 300 * 1024;
    const std::string expected = input + ": input shrank from " + std::to_string(size) + " to " + std::to_string(cut) +
                                 " bytes while converting";
    CHECK_THROWS_WITH_AS(convert_with_change(p, [&] { REQUIRE(::truncate(input.c_str(), static_cast<off_t>(cut)) == 0); }),
                         expected.c_str(), Error);
    CHECK(qftest::list_dir(dir + "/out").empty());
}

TEST_CASE("finding 1: input modified during conversion: the finished output is not published") {
    const std::string dir = qftest::temp_dir("change_modified");
    std::filesystem::create_directories(dir + "/out");
    const std::string input = write_model(dir);
    Prepared p = prepare(input, dir + "/out/o.safetensors");
    const auto modify = [&] {
        std::fstream io(input, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(static_cast<std::streamoff>(p.plan.input.data_start + 600 * 1024));
        io << "new bytes";
        io.close();
        struct timespec later[2] = {{0, UTIME_OMIT}, {p.plan.input.mtime_ns / 1000000000 + 5, 0}};
        REQUIRE(::utimensat(AT_FDCWD, input.c_str(), later, 0) == 0);  // coarse-mtime filesystems too
    };
    CHECK_THROWS_WITH_AS(convert_with_change(p, modify),
                         (input + ": input was modified while converting (its modification time changed)").c_str(), Error);
    CHECK(qftest::list_dir(dir + "/out").empty());
}

TEST_CASE("finding 1: input replaced during conversion: the output of the old file is not published under the name") {
    const std::string dir = qftest::temp_dir("change_replaced");
    std::filesystem::create_directories(dir + "/out");
    const std::string input = write_model(dir);
    Prepared p = prepare(input, dir + "/out/o.safetensors");
    const auto replace = [&] {
        std::filesystem::copy_file(input, dir + "/copy.safetensors");
        struct timespec same[2] = {{0, UTIME_OMIT}, {p.plan.input.mtime_ns / 1000000000, p.plan.input.mtime_ns % 1000000000}};
        REQUIRE(::utimensat(AT_FDCWD, (dir + "/copy.safetensors").c_str(), same, 0) == 0);  // identical but for the inode
        std::filesystem::rename(dir + "/copy.safetensors", input);
    };
    CHECK_THROWS_WITH_AS(convert_with_change(p, replace), (input + ": input was replaced by another file while converting").c_str(),
                         Error);
    CHECK(qftest::list_dir(dir + "/out").empty());
}

TEST_CASE("finding 1: input changed between planning and converting is refused before any work") {
    const std::string dir = qftest::temp_dir("change_before_run");
    std::filesystem::create_directories(dir + "/out");
    const std::string input = write_model(dir);
    Prepared p = prepare(input, dir + "/out/o.safetensors");
    std::ofstream(input, std::ios::app | std::ios::binary) << "trailing";
    Progress quiet(ProgressStyle::None, 1);
    CHECK_THROWS_WITH_AS(execute_conversion(p, quiet),
                         (input + ": input grew from " + std::to_string(p.plan.input.file_size) + " to " +
                          std::to_string(p.plan.input.file_size + 8) + " bytes while converting").c_str(),
                         Error);
    CHECK(qftest::list_dir(dir + "/out").empty());
}

TEST_CASE("finding 1: an unchanged input converts and is published (the checks do not fire on their own)") {
    const std::string dir = qftest::temp_dir("change_none");
    std::filesystem::create_directories(dir + "/out");
    const std::string input = write_model(dir);
    Prepared p = prepare(input, dir + "/out/o.safetensors");
    convert_with_change(p, [] {});
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"o.safetensors"});
}
