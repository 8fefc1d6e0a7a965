// Fuzz target: batch manifests (pipeline/batch_inputs.cpp) and the per-file overrides they carry, applied to
// a batch command line as tools/commands.cpp applies them (tools/cli.cpp), then sharded and named.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_support.hpp"
#include "pipeline/batch.hpp"
#include "pipeline/naming.hpp"
#include "tools/cli.hpp"

namespace {

quantflow::ParsedCommand& base_command() {
    static quantflow::ParsedCommand parsed = [] {
        std::vector<std::string> args = {"quantflow",     "batch",        "--out-dir", qffuzz::scratch_path("out"),
                                         "--comfy_quant", "--simple", qffuzz::scratch_path("a.safetensors")};
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        return quantflow::parse_command_line(static_cast<int>(argv.size()), argv.data());
    }();
    return parsed;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    qffuzz::init_process();
    // Manifest entries name files relative to the manifest; these exist (contents do not matter here).
    qffuzz::write_file(qffuzz::scratch_path("a.safetensors"), "");
    qffuzz::write_file(qffuzz::scratch_path("b.safetensors"), "");
    (void)base_command();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string manifest = qffuzz::scratch_path("jobs.json");
    qffuzz::write_file(manifest, std::string_view(reinterpret_cast<const char*>(data), size));
    std::vector<quantflow::BatchItem> items;
    qffuzz::expect_clean("collect_batch_items", [&] { items = quantflow::collect_batch_items({}, false, manifest); });
    const quantflow::Shard shard{1, 3};
    for (const auto& item : items) {
        (void)quantflow::in_shard(item.key, shard);
        qffuzz::expect_clean("options_with_overrides", [&] {
            quantflow::Options options = quantflow::options_with_overrides(base_command(), item.args);
            options.input = item.input;
            (void)quantflow::default_output_path(options);
        });
    }
    return 0;
}
