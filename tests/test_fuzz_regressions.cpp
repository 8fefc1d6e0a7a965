// One TEST_CASE per finding of the fuzz targets (fuzz/, tools/fuzz.sh), named after the crash file libFuzzer
// wrote. Each input is spelled out here; the crash files themselves stay in fuzz/corpus/TARGET.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "kernels/error.hpp"
#include "pipeline/batch.hpp"
#include "pipeline/profiles.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    FAIL("no Error thrown");
    return {};
}

}  // namespace

TEST_CASE("fuzz: a size with a newline gives a one-line error (profiles crash-6949c8ce)") {
    // The profile's JSON escape "\n" reached the message verbatim: a two-line error.
    const std::string path = qftest::temp_dir("fuzz_size_newline") + "/hw.json";
    std::ofstream(path) << R"({"name": "x", "memory_budget": "6\nGiB"})";
    CHECK(error_of([&] { load_hardware_profile(path); }) ==
          path + ": field 'memory_budget': invalid size '6\\x0aGiB' (unknown unit '\\x0aGiB'; use B, KB, MB, GB, TB, KiB, "
                 "MiB, GiB or TiB)");
    CHECK(error_of([] { parse_size("1\r\n\tGB", "--memory-budget"); }) ==
          "--memory-budget: invalid size '1\\x0d\\x0a\\x09GB' (unknown unit '\\x0d\\x0a\\x09GB'; use B, KB, MB, GB, TB, KiB, MiB, "
          "GiB or TiB)");
}

TEST_CASE("Error: what() is one line whatever the message (fuzz contract)") {
    CHECK(std::string(Error("a\nb\x7f\x01 c").what()) == "a\\x0ab\\x7f\\x01 c");
    CHECK(std::string(Error("plain message: 'x' [1, 2]").what()) == "plain message: 'x' [1, 2]");
}

TEST_CASE("fuzz: a manifest entry whose name is too long is an Error, not a filesystem_error (manifest-crash-4b04f46d)") {
    const std::string dir = qftest::temp_dir("fuzz_manifest_long_name");
    const std::string name(300, 'a');
    std::ofstream(dir + "/jobs.json") << "{\"files\": [\"" + name + "\"]}";
    CHECK(error_of([&] { collect_batch_items({}, false, dir + "/jobs.json"); }) ==
          dir + "/jobs.json: entry 0: " + dir + "/" + name + ": File name too long");
}
