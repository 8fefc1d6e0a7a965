// fuzz/fuzz_support.hpp: what every libFuzzer target shares.
//
// A target feeds one input to a quantflow entry point. A bad input may only end in quantflow::Error with a
// one-line message; anything else (another exception, a sanitizer report, an abort) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/error.hpp"

namespace qffuzz {

// Limits oneTBB to one thread (inputs replay the same way) and creates this process's scratch directory
// under $TMPDIR (tools/fuzz.sh points it at /dev/shm, where an fsync costs nothing).
void init_process();
// "<scratch>/name"; the scratch directory is removed when the process exits normally.
std::string scratch_path(std::string_view name);
// Removes everything in the scratch directory.
void clear_scratch();
// Names in the scratch directory that start with '.' (a temp file left behind), joined by spaces.
std::string hidden_files();

void write_file(const std::string& path, std::string_view bytes);

// One tensor of a hand-made safetensors file.
struct Tensor {
    std::string name;
    std::string dtype;  // "BF16", "F8_E4M3", ...
    std::vector<std::int64_t> shape;
    std::string bytes;
};
// A valid safetensors image: tensors back to back in the order given, metadata values JSON-quoted.
std::string safetensors_image(const std::vector<Tensor>& tensors,
                              const std::vector<std::pair<std::string, std::string>>& metadata = {});

// Aborts with "fuzz finding in WHAT: DETAIL" (libFuzzer records the input as a crash).
[[noreturn]] void report_finding(const char* what, const std::string& detail);

// Runs `body`. Success, or quantflow::Error with a non-empty one-line message, is a clean outcome (returns
// true for success); any other exception is a finding.
template <class Body>
bool expect_clean(const char* what, Body&& body) {
    try {
        body();
        return true;
    } catch (const quantflow::Error& e) {
        const std::string_view message = e.what();
        if (message.empty() || message.find('\n') != std::string_view::npos)
            report_finding(what, "quantflow::Error message is not one line: '" + std::string(message) + "'");
        return false;
    } catch (const std::exception& e) {
        report_finding(what, std::string("exception other than quantflow::Error: ") + e.what());
    } catch (...) {
        report_finding(what, "a non-std exception");
    }
}

}  // namespace qffuzz
