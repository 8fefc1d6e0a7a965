// Several devices (issue 13), without GPUs: CPU backends stand in for N accelerators (each claims device memory,
// so the pool's budgets are exercised). Every layer is computed once, the bytes match one device, budgets hold,
// and an error on one device names it and gives its budget back.
#include <doctest/doctest.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <fstream>
#include <set>
#include <mutex>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "pipeline/batch.hpp"
#include "pipeline/convert.hpp"
#include "pipeline/devices.hpp"
#include "pipeline/graph.hpp"
#include "pipeline/plan.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

// How deep stand-in calls nest on this thread, and how often one ran inside another: a GPU backend sets its
// device on entry, so a stage that a waiting thread ran nested inside another job's stage would be on the wrong GPU.
thread_local int t_depth = 0;
std::atomic<int> g_nested{0};
std::atomic<int> g_now{0}, g_max{0};  // stand-in calls running now, and the most at once
struct Entered {
    Entered() {
        if (++t_depth > 1) ++g_nested;
        const int now = ++g_now;
        int seen = g_max.load();
        while (now > seen && !g_max.compare_exchange_weak(seen, now)) {
        }
        // Host work split into chunks, as a GPU backend's host fallbacks do: the caller waits in parallel_for.
        oneapi::tbb::parallel_for(0, 32, [](int) { std::this_thread::sleep_for(std::chrono::microseconds(100)); });
    }
    ~Entered() { --t_depth; --g_now; }
    Entered(const Entered&) = delete;
    Entered& operator=(const Entered&) = delete;
};

// The CPU backend under another name, claiming 1 GiB of device memory and a layer's weight bytes x 4 of it
// per layer; counts the layers it quantizes and fails (like a GPU out of memory) on tensors named `fail_on`.
class StandIn final : public Backend {
public:
    StandIn(int index, std::string fail_on = {}) : index_(index), fail_on_(std::move(fail_on)), cpu_(make_cpu_backend()) {}

    std::string name() const override { return "standin:" + std::to_string(index_); }
    std::uint64_t device_memory() const override { return 1ull << 30; }
    LayerMemory layer_memory(const LayerWork& l) const override {
        return {cpu_->layer_memory(l).host, static_cast<std::uint64_t>(l.rows * l.cols) * 8};
    }
    std::vector<float> rotate_groups(std::string_view name, const TensorView& w, std::int64_t g, std::unique_ptr<WeightHold>* keep) override {
        const Entered on;
        return cpu_->rotate_groups(name, w, g, keep);
    }
    QuantizedTensor quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) override {
        const Entered on;
        if (!fail_on_.empty() && name.find(fail_on_) != std::string_view::npos)
            throw Error("out of memory allocating 12.0 MiB (simulated)");
        {
            std::lock_guard lock(mutex_);
            layers_.insert(std::string(name));
        }
        return cpu_->quantize(name, w, spec);
    }
    double search_block_scales(std::string_view name, const TensorView& w, QuantizedTensor& q) override {
        const Entered on;
        return cpu_->search_block_scales(name, w, q);
    }
    void residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y) override {
        const Entered on;
        cpu_->residual_gemv(w, q, x, y);
    }
    LowRank top_k_svd(std::string_view name, const TensorView& w, const SvdSettings& settings) override {
        const Entered on;
        return cpu_->top_k_svd(name, w, settings);
    }
    std::unique_ptr<RoundingWork> rounding_work(std::string_view name, const TensorView& w, const LowRank& basis,
                                                QuantizedTensor& q) override {
        return cpu_->rounding_work(name, w, basis, q);
    }
    RoundingStats learned_round(std::string_view name, const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                QuantizedTensor& q) override {
        const Entered on;
        return cpu_->learned_round(name, w, basis, settings, q);
    }
    QualityMetrics measure(const TensorView& w, const QuantizedTensor& q, const LowRank* basis, const QualityInputs& inputs) override {
        const Entered on;
        return cpu_->measure(w, q, basis, inputs);
    }

    std::set<std::string> layers() const {
        std::lock_guard lock(mutex_);
        return layers_;
    }

private:
    int index_;
    std::string fail_on_;
    std::unique_ptr<Backend> cpu_;
    mutable std::mutex mutex_;
    std::set<std::string> layers_;
};

struct StandIns {
    std::vector<std::shared_ptr<StandIn>> devices;
    std::shared_ptr<DevicePool> pool;
};

StandIns stand_ins(int n, const std::string& fail_on = {}) {
    StandIns s;
    std::vector<std::shared_ptr<Backend>> backends;
    for (int i = 0; i < n; ++i) {
        s.devices.push_back(std::make_shared<StandIn>(i, fail_on));
        backends.push_back(s.devices.back());
    }
    s.pool = std::make_shared<DevicePool>(std::move(backends));
    return s;
}

// 12 layers with biases (learned rounding, bias correction) and a pass-through tensor.
std::string make_model(const std::string& dir, const std::string& name, const std::string& prefix = "blocks") {
    std::vector<qftest::RawTensor> tensors;
    for (int i = 0; i < 6; ++i) {
        const std::string p = prefix + "." + std::to_string(i) + ".";
        tensors.push_back({p + "attn.weight", "BF16", {96, 128}, qftest::structured_bf16(96, 128, 10 + i)});
        tensors.push_back({p + "attn.bias", "BF16", {96}, qftest::random_bf16(96, 20 + i)});
        tensors.push_back({p + "ffn.weight", "BF16", {128, 64}, qftest::structured_bf16(128, 64, 30 + i)});
    }
    tensors.push_back({"pos_embed", "BF16", {4, 256}, qftest::random_bf16(4 * 256, 9)});
    const std::string path = dir + "/" + name;
    qftest::write_safetensors(path, tensors, {{"format", "pt"}});
    return path;
}

Options options_for(const std::string& input, const std::string& output) {
    Options o;
    o.input = input;
    o.output = output;
    o.comfy_quant = true;
    o.manual_seed = 7;
    o.num_iter = 20;
    o.progress = "none";
    o.overwrite = true;
    return o;
}

std::vector<std::byte> convert_on(const std::string& input, const std::string& output, std::shared_ptr<DevicePool> pool,
                                  RunStats* stats = nullptr) {
    Prepared p = prepare_conversion(options_for(input, output), std::move(pool));
    Progress quiet(ProgressStyle::None, 1);
    const RunStats s = execute_conversion(p, quiet);
    if (stats) *stats = s;
    return qftest::read_file(output);
}

}  // namespace

TEST_CASE("devices: every layer is computed once, on one device; the bytes are the same on 1, 2 and 3 devices") {
    const std::string dir = qftest::temp_dir("devices_spread");
    const std::string model = make_model(dir, "m.safetensors");
    Options cpu_options = options_for(model, dir + "/cpu.safetensors");
    cpu_options.device = "cpu";
    Prepared cpu = prepare_conversion(cpu_options);
    Progress quiet(ProgressStyle::None, 1);
    execute_conversion(cpu, quiet);
    const auto reference = qftest::read_file(dir + "/cpu.safetensors");
    for (int n = 1; n <= 3; ++n) {
        CAPTURE(n);
        StandIns s = stand_ins(n);
        s.pool->set_budget(128 * 96 * 8 * 2);  // two layers per device at most
        RunStats stats;
        CHECK(convert_on(model, dir + "/out.safetensors", s.pool, &stats) == reference);
        std::multiset<std::string> computed;
        for (int d = 0; d < n; ++d) {
            const auto layers = s.devices[static_cast<std::size_t>(d)]->layers();
            computed.insert(layers.begin(), layers.end());
            CHECK(!layers.empty());  // the work is spread
            const auto usage = s.pool->usage(static_cast<std::size_t>(d));
            CHECK(usage.jobs == layers.size());
            CHECK(usage.peak_bytes <= s.pool->budget());
            CHECK(usage.in_flight == 0);
        }
        CHECK(computed.size() == 12);
        CHECK(std::set<std::string>(computed.begin(), computed.end()).size() == 12);
        std::size_t recorded = 0;
        for (const auto& layer : stats.layers) recorded += layer.device.starts_with("standin:");
        CHECK(recorded == 12);
    }
}

TEST_CASE("devices: a stage never runs nested inside another job's stage on one thread (stages wait in isolation)") {
    const std::string dir = qftest::temp_dir("devices_isolated");
    const std::string model = make_model(dir, "m.safetensors");
    g_nested = 0;
    g_max = 0;
    // 8 threads whatever the machine: with one worker (a 2-core CI machine) nothing could steal. Without the
    // isolation this test saw 19-23 nested stage calls in every run here.
    const oneapi::tbb::global_control threads(oneapi::tbb::global_control::max_allowed_parallelism, 8);
    for (int round = 0; round < 4; ++round) {
        StandIns s = stand_ins(3);
        Options o = options_for(model, dir + "/out.safetensors");
        o.num_iter = 60;  // long enough learned rounding that the other jobs' stages queue up meanwhile
        Prepared p = prepare_conversion(o, s.pool);
        Progress quiet(ProgressStyle::None, 1);
        oneapi::tbb::task_arena(8).execute([&] { execute_conversion(p, quiet); });
    }
    CHECK(g_max.load() >= 4);  // stages did run side by side
    CHECK(g_nested.load() == 0);
}

TEST_CASE("devices: tensors_in_flight and concurrent_files scale with the devices; plan says so") {
    const std::string dir = qftest::temp_dir("devices_settings");
    const std::string model = make_model(dir, "m.safetensors");
    StandIns s = stand_ins(2);
    const Prepared p = prepare_conversion(options_for(model, dir + "/o.safetensors"), s.pool);
    const HardwareProfile cpu = load_hardware_profile("cpu");
    CHECK(p.run.concurrency == 2 * cpu.tensors_in_flight);
    CHECK(p.context.device_line == "devices: standin:0, standin:1");
    const auto setting = [&](const std::string& key) {
        for (const auto& st : p.context.settings)
            if (st.key == key) return st.value;
        return std::string("missing");
    };
    CHECK(setting("tensors_in_flight") == std::to_string(2 * cpu.tensors_in_flight) + " (" + std::to_string(cpu.tensors_in_flight) +
                                              " per device x 2 devices)");
    CHECK(setting("gpu_memory_budget") == "512 MiB per device");
    CHECK(effective_concurrent_files(load_hardware_profile("gpu-node"), 4) == 4);
    CHECK(load_hardware_profile("gpu-node").devices == "all");
}

TEST_CASE("devices: an error on one device names the device and the tensor, and every device's budget comes back") {
    const std::string dir = qftest::temp_dir("devices_fail");
    const std::string model = make_model(dir, "m.safetensors");
    qftest::temp_dir("devices_fail/out");
    StandIns s = stand_ins(2, "blocks.3.ffn");
    s.pool->set_budget(1ull << 20);
    std::string message;
    try {
        convert_on(model, dir + "/out/o.safetensors", s.pool);
    } catch (const Error& e) {
        message = e.what();
    }
    CHECK((message == "tensor 'blocks.3.ffn.weight' on standin:0: out of memory allocating 12.0 MiB (simulated)" ||
           message == "tensor 'blocks.3.ffn.weight' on standin:1: out of memory allocating 12.0 MiB (simulated)"));
    CHECK(qftest::list_dir(dir + "/out").empty());
    for (std::size_t d = 0; d < 2; ++d) CHECK(s.pool->usage(d).in_flight == 0);
    // The same pool serves the next file.
    StandIns healthy = stand_ins(2);
    healthy.pool->set_budget(1ull << 20);
    CHECK(!convert_on(model, dir + "/out/o.safetensors", healthy.pool).empty());
}

TEST_CASE("devices: a batch shares one pool; a file that fails on a device does not stop the others") {
    const std::string dir = qftest::temp_dir("devices_batch");
    std::vector<BatchItem> items;
    for (const std::string name : {"a", "b", "c"}) {
        const std::string file = name + ".safetensors";
        make_model(dir, file, name == "b" ? "doomed" : "blocks");
        items.push_back({dir + "/" + file, file, name + "_out.safetensors", {}});
    }
    StandIns s = stand_ins(2, "doomed.2.attn");
    BatchSettings settings;
    settings.out_dir = dir + "/out";
    settings.devices = s.pool;
    settings.concurrent_files = 2;
    settings.progress = "none";
    settings.report = dir + "/report.json";
    std::vector<std::string> log;
    const BatchOutcome outcome = run_batch(items, settings, [&](const BatchItem& item) { return options_for(item.input, ""); },
                                           [&](const std::string& line) { log.push_back(line); });
    CHECK(outcome.converted == 2);
    CHECK(outcome.failed == 1);
    CHECK(outcome.exit_code == static_cast<int>(ExitCode::kSomeFailed));
    CHECK(qftest::list_dir(dir + "/out") == std::vector<std::string>{"a_out.safetensors", "c_out.safetensors"});
    for (std::size_t d = 0; d < 2; ++d) CHECK(s.pool->usage(d).in_flight == 0);
    std::ifstream report(settings.report);
    const std::string text((std::istreambuf_iterator<char>(report)), std::istreambuf_iterator<char>());
    CHECK(text.find("tensor 'doomed.2.attn.weight' on standin:") != std::string::npos);
    CHECK(text.find("\"layers_per_device\": {\"standin:0\": ") != std::string::npos);
    // Same bytes as one device.
    StandIns one = stand_ins(1);
    settings.devices = one.pool;
    settings.out_dir = dir + "/one";
    items.erase(items.begin() + 1);
    run_batch(items, settings, [&](const BatchItem& item) { return options_for(item.input, ""); }, [](const std::string&) {});
    for (const std::string name : {"a_out.safetensors", "c_out.safetensors"})
        CHECK(qftest::read_file(dir + "/one/" + name) == qftest::read_file(dir + "/out/" + name));
}

TEST_CASE("devices: --devices parses all or distinct GPU indices; a GPU that is not there is a usage error") {
    CHECK(parse_device_list("all").all);
    CHECK(parse_device_list("0,1,3").gpus == std::vector<int>{0, 1, 3});
    for (const std::string bad : {"", "0,", ",1", "a", "-1", "0;1", "cuda:0"}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS(parse_device_list(bad), ("--devices '" + bad + "' is not \"all\" or a list of GPU indices such as 0,1").c_str(),
                             Error);
    }
    CHECK_THROWS_WITH(parse_device_list("1,1"), "--devices '1,1' names GPU 1 twice");
    std::string why;
    try {
        make_backends(parse_device_list("63"), why);
        FAIL("no machine here has 64 GPUs");
    } catch (const Error& e) {
        CHECK(e.code() == ExitCode::kUsage);
        CHECK(std::string(e.what()).starts_with("--devices 63: "));
    }
    std::string line;
    CHECK_THROWS_WITH_AS(make_device_pool("cpu", "all", line), "--device cpu and --devices all both given; use one of them", Error);
}
