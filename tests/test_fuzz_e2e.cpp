// Findings of the fuzz targets that need the real binary (tools/cli.cpp is not in qf_core), named after the
// file libFuzzer wrote; the input itself is in fuzz/corpus/TARGET. Commands run under `timeout -s KILL` because
// quantflow turns SIGTERM into a clean stop, which a hung parser never reaches.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "tests/test_support.hpp"

namespace {

const std::string kBinary = QF_BINARY;

}  // namespace

TEST_CASE("fuzz: a '%value%' in an option's value or name no longer hangs Boost's message (manifest-timeout-41d093fb)") {
    const std::string dir = qftest::temp_dir("fuzz_percent_value");
    std::string out;
    CHECK(qftest::run_command("timeout -s KILL 30 " + kBinary + " -i x.safetensors --lr '%value%' 2>&1", out) == 2);
    CHECK(out == "quantflow: error: the argument ('%25value%25') for option '--lr' is invalid (see quantflow --help)\n");
    CHECK(qftest::run_command("timeout -s KILL 30 " + kBinary + " -i x.safetensors '--x%option%' 2>&1", out) == 2);
    CHECK(out == "quantflow: error: unrecognised option '--x%25option%25' (see quantflow --help)\n");

    // The fuzzer's own input: a manifest key holding "%value%" becomes the option name of an override.
    qftest::write_safetensors(dir + "/a.safetensors", {{"w", "F32", {1}, qftest::random_f32(1, 1)}});
    std::ofstream(dir + "/jobs.json") << R"({"files": [{"input": "a.safetensors", "lr=d%value%') for opget": "0/2"}]})";
    const int rc = qftest::run_command("timeout -s KILL 30 " + kBinary + " batch --manifest " + dir + "/jobs.json --out-dir " + dir +
                                           "/out --comfy_quant --simple --progress none 2>&1",
                                       out);
    CHECK(rc != 137);
    CHECK(rc != 0);
    CHECK(out.find("%25value%25") != std::string::npos);
}
