// The flow graph: identical bytes for 1-4 threads, bounded bytes in flight, cancellation on error.
#include <doctest/doctest.h>

#include <oneapi/tbb/global_control.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "pipeline/graph.hpp"
#include "pipeline/plan.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

// A small model with several layers, biases and a large pass-through tensor split into chunks.
std::string make_model(const std::string& dir, bool poison = false) {
    std::vector<qftest::RawTensor> tensors;
    for (int i = 0; i < 6; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        tensors.push_back({p + "attn.weight", "BF16", {256, 512}, qftest::random_bf16(256 * 512, 100 + i)});
        tensors.push_back({p + "attn.bias", "BF16", {256}, qftest::random_bf16(256, 200 + i)});
        tensors.push_back({p + "ffn.weight", "F32", {512, 256}, qftest::random_f32(512 * 256, 300 + i)});
    }
    tensors.push_back({"pos_embed", "BF16", {1, 1536, 1024}, qftest::random_bf16(1536 * 1024, 9)});  // 3 MiB
    if (poison) {
        const float nan = NAN;
        std::memcpy(tensors[8].data.data() + 4 * 1000, &nan, 4);  // blocks.2.ffn.weight, row 3
    }
    const std::string path = dir + "/model.safetensors";
    qftest::write_safetensors(path, tensors, {{"format", "pt"}});
    return path;
}

Options options_for(const std::string& input) {
    Options o;
    o.input = input;
    o.comfy_quant = true;
    o.simple = true;
    o.seed = 42;
    o.scaling_mode = "block";
    return o;
}

std::vector<std::byte> convert(const std::string& input, const std::string& output, const RunSettings& settings,
                               RunStats* stats = nullptr) {
    const Options o = options_for(input);
    const Plan plan = build_plan(read_safetensors_header(input), o, filter_options(o));
    auto backend = make_cpu_backend();
    {
        OutputFile out(output, plan.layout.total_size, true);
        const MappedFile file(input);
        Progress progress(ProgressStyle::None, 1);
        const RunStats s = run_conversion(plan, file, out, *backend, settings, progress);
        if (stats) *stats = s;
        out.commit();
    }
    return qftest::read_file(output);
}

}  // namespace

TEST_CASE("graph: identical output bytes for 1 to 4 threads and any concurrency") {
    const std::string dir = qftest::temp_dir("graph_threads");
    const std::string model = make_model(dir);
    RunSettings settings;
    settings.seed = 42;
    settings.reader_chunk = 1 << 20;
    std::vector<std::byte> first;
    for (int threads = 1; threads <= 4; ++threads) {
        oneapi::tbb::global_control limit(oneapi::tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
        settings.concurrency = threads;
        const auto bytes = convert(model, dir + "/out.safetensors", settings);
        if (threads == 1) first = bytes;
        INFO("threads " << threads);
        CHECK(bytes == first);
    }
}

TEST_CASE("graph: bytes in flight stay within the budget (a job larger than the budget runs alone)") {
    const std::string dir = qftest::temp_dir("graph_budget");
    const std::string model = make_model(dir);
    RunSettings settings;
    settings.concurrency = 4;
    settings.reader_chunk = 1 << 20;
    settings.memory_budget = 1 << 20;  // every layer job (~384 KiB-640 KiB) fits, two rarely do
    RunStats stats;
    convert(model, dir + "/out.safetensors", settings, &stats);
    CHECK(stats.peak_in_flight <= settings.memory_budget);
    CHECK(stats.peak_in_flight > 0);
    settings.memory_budget = 1;  // smaller than any job: each is admitted alone, the run still completes
    convert(model, dir + "/out2.safetensors", settings, &stats);
    CHECK(stats.peak_in_flight <= (1u << 20) + 512 * 256 * 4 * 2);
}

TEST_CASE("graph: a failing tensor cancels the run with its error and leaves no output or temp file") {
    const std::string dir = qftest::temp_dir("graph_cancel");
    const std::string model = make_model(dir, true);
    qftest::temp_dir("graph_cancel/out");
    RunSettings settings;
    settings.concurrency = 2;
    for (int threads = 1; threads <= 2; ++threads) {
        oneapi::tbb::global_control limit(oneapi::tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(threads));
        CHECK_THROWS_WITH_AS(convert(model, dir + "/out/out.safetensors", settings),
                             doctest::Contains("tensor 'blocks.2.ffn.weight' [512, 256] holds NaN or Inf in row 3"), Error);
        CHECK(qftest::list_dir(dir + "/out").empty());
    }
}
