#include "pipeline/convert.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <sstream>

#include "kernels/error.hpp"
#include "kernels/units.hpp"
#include "pipeline/detect.hpp"
#include "pipeline/naming.hpp"
#include "stages/format/json_text.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/output_file.hpp"
#include "stages/reader.hpp"

namespace quantflow {
namespace {

constexpr int kReportSamples = 16;  // Gaussian test inputs per layer for the report's output error

std::string rounding_summary(const Options& o) {
    return o.optimizer + ", " + std::to_string(o.num_iter) + " iterations, lr " + python_float_str(o.lr) + ", k " +
           std::to_string(o.min_k) + ".." + std::to_string(o.max_k) + " (top_p " + python_float_str(o.top_p) + ")" +
           (o.full_matrix ? ", exact SVD" : "") + (o.rounding_aware ? o.rounding_thorough ? ", rounding-aware finish (thorough)" : ", rounding-aware finish" : "");
}

void check_values(const Options& o) {
    parse_optimizer(o.optimizer);
    QF_EXPECT_USAGE(o.num_iter >= 0, "--num_iter must be 0 or more, got " + std::to_string(o.num_iter));
    QF_EXPECT_USAGE(o.lr > 0, "--lr must be positive, got " + python_float_str(o.lr));
    QF_EXPECT_USAGE(o.top_p >= 0 && o.top_p <= 1, "--top_p must be in [0, 1], got " + python_float_str(o.top_p));
    QF_EXPECT_USAGE(o.min_k >= 1 && o.max_k >= o.min_k,
                    "--min_k/--max_k must satisfy 1 <= min_k <= max_k, got " + std::to_string(o.min_k) + "/" + std::to_string(o.max_k));
}

// --model auto (also the default when no model flag is given): detection adds the matching profiles;
// an explicit model flag or --model NAME always wins; --model none turns detection off.
std::string resolve_models(Options& o, const SafetensorsHeader& header) {
    const auto is = [&](const char* word) { return std::find(o.models.begin(), o.models.end(), word) != o.models.end(); };
    const bool asked_auto = is("auto"), asked_none = is("none");
    std::erase_if(o.models, [](const std::string& m) { return m == "auto" || m == "none"; });
    const bool explicit_models = !o.model_flags.empty() || !o.models.empty();
    if (asked_none) return "model: none (no detection, no model filter unless given)";
    if (explicit_models) return asked_auto ? "model: --model auto ignored, explicit model flags win" : "";
    const Detection d = detect_architecture(header.tensors);
    o.models = d.profiles;
    return "model: auto: " + d.summary;
}

// "16 (8 per device x 2 devices)" or "8".
std::string per_device(std::uint64_t effective, int per, std::uint64_t devices) {
    if (devices <= 1) return std::to_string(effective);
    return std::to_string(effective) + " (" + std::to_string(per) + " per device x " + std::to_string(devices) + " devices)";
}

}  // namespace

Hardware choose_hardware(const Options& o, std::shared_ptr<DevicePool> devices) {
    Hardware hw;
    std::optional<HardwareProfile> named;
    if (!o.profile.empty()) named = load_hardware_profile(o.profile);
    if (devices) {
        hw.devices = std::move(devices);
        hw.device_line = (hw.devices->size() > 1 ? "devices: " : "device: ") + hw.devices->names();
    } else {
        const bool from_profile = o.devices.empty() && o.device == "auto" && named && !named->devices.empty();
        hw.devices = make_device_pool(o.device, from_profile ? named->devices : o.devices, hw.device_line);
        if (from_profile) hw.device_line += " [devices \"" + named->devices + "\" from profile " + named->name + "]";
    }
    if (named) {
        hw.profile = *named;
        hw.profile_source = "profile " + named->name;
        return hw;
    }
    // Without --profile: "cpu", or the GPU profile that fits the (first) device's memory.
    const std::uint64_t gib = hw.devices->backend(0).device_memory() >> 30;
    const std::string name = default_hardware_profile(hw.devices->backend(0).device_memory());
    hw.profile = load_hardware_profile(name);
    hw.profile_source = gib > 0 ? "profile " + name + " (picked for " + std::to_string(gib) + " GiB of GPU memory)" : "default profile cpu";
    return hw;
}

int effective_concurrent_files(const HardwareProfile& hardware, std::size_t devices) {
    return std::max(1, hardware.concurrent_files) * static_cast<int>(std::max<std::size_t>(1, devices));
}

long peak_rss_bytes() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6)) * 1024;
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss * 1024;
}

void reset_peak_rss() {
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5";
}

Prepared prepare_conversion(Options o, std::shared_ptr<DevicePool> devices) {
    Prepared p;
    check_values(o);
    if (o.manual_seed == -1) {
        o.seed = (static_cast<std::uint64_t>(std::random_device{}()) << 32 | std::random_device{}()) & 0x7FFFFFFFFFFFFFFFull;
        p.messages.push_back("seed: " + std::to_string(o.seed) + " (pass --manual_seed " + std::to_string(o.seed) +
                             " to reproduce this run)");
    } else {
        o.seed = static_cast<std::uint64_t>(o.manual_seed);
    }
    SafetensorsHeader header = read_safetensors_header(o.input);
    const std::string output = o.output.empty() ? default_output_path(o) : o.output;
    check_distinct_paths(o.input, output);
    const std::string model_line = resolve_models(o, header);
    if (!model_line.empty()) p.messages.push_back(model_line);

    Hardware hw = choose_hardware(o, std::move(devices));
    p.devices = hw.devices;
    p.hardware = hw.profile;
    const std::string& device_line = hw.device_line;
    const std::string& profile_source = hw.profile_source;
    const Backend& first = p.devices->backend(0);
    const auto device_count = static_cast<std::uint64_t>(p.devices->size());
    p.run.memory_budget = o.memory_budget.value_or(p.hardware.memory_budget);
    std::uint64_t gpu_memory = first.device_memory();
    for (std::size_t d = 1; d < p.devices->size(); ++d) gpu_memory = std::min(gpu_memory, p.devices->backend(d).device_memory());
    std::string staging_line;
    if (gpu_memory > 0) {
        // A pool shared by a batch keeps the budget its first file set.
        if (!p.devices->budget_set())
            p.devices->set_budget(p.hardware.gpu_memory_budget > 0 ? std::min(p.hardware.gpu_memory_budget, gpu_memory) : gpu_memory / 2);
        p.run.gpu_memory_budget = p.devices->budget();
        // The staging rings are pinned host memory: they come out of the memory budget (a quarter of it at most).
        const int slabs = std::max(2, p.hardware.pinned_slabs);
        const std::uint64_t pinned = std::min(p.hardware.pinned_slab * static_cast<std::uint64_t>(slabs) * device_count, p.run.memory_budget / 4);
        const std::uint64_t slab = pinned / static_cast<std::uint64_t>(slabs) / device_count;
        for (std::size_t d = 0; d < p.devices->size(); ++d) p.devices->backend(d).set_staging(slab, slabs);
        p.run.memory_budget -= pinned;
        staging_line = format_size(pinned) + " of it pinned staging (" + (device_count > 1 ? std::to_string(device_count) + " x " : "") +
                       std::to_string(slabs) + " x " + format_size(slab) + ")";
    } else if (!p.devices->budget_set()) {
        p.devices->set_budget(0);
    }
    p.run.concurrency = std::max(1, p.hardware.tensors_in_flight) * static_cast<int>(device_count);
    p.run.reader_chunk = p.hardware.reader_chunk;
    p.run.seed = o.seed;
    p.run.calib_samples = o.calib_samples;
    p.run.optimizer.seed = o.seed;
    p.run.optimizer.full_matrix = o.full_matrix;
    p.run.optimizer.rounding.optimizer = parse_optimizer(o.optimizer);
    p.run.optimizer.rounding.num_iter = o.num_iter;
    p.run.optimizer.rounding.lr = o.lr;
    p.run.optimizer.rounding.rounding_aware = o.rounding_aware;
    p.run.optimizer.rounding.thorough_finish = o.rounding_thorough;
    // The finish's Frobenius budget is per layer (LayerPlan::finish_budget: 4-bit grids get more), set by the plan.
    if (!o.report.empty()) p.run.quality_samples = kReportSamples;
    const int threads = o.threads > 0 ? o.threads : p.hardware.cpu_threads;

    p.plan = build_plan(std::move(header), o, filter_options(o));
    plan_memory(p.plan, first, o);
    p.context.output_path = output;
    p.context.device_line = device_line;
    p.context.memory_budget = p.run.memory_budget;
    p.context.model_line = model_line;
    p.context.gpu_memory_budget = p.run.gpu_memory_budget;
    p.context.devices = p.devices->size();
    for (const auto& job : make_jobs(p.plan.layers, p.plan.input, p.run.reader_chunk)) {
        p.context.largest_job_bytes = std::max(p.context.largest_job_bytes, job.budget_bytes);
        p.context.largest_device_job_bytes = std::max(p.context.largest_device_job_bytes, job.device_bytes);
    }
    p.context.settings = {
        {"memory_budget", format_size(o.memory_budget.value_or(p.hardware.memory_budget)) + (staging_line.empty() ? "" : ", " + staging_line),
         o.memory_budget ? "--memory-budget" : profile_source},
        {"tensors_in_flight", per_device(p.run.concurrency, p.hardware.tensors_in_flight, device_count), profile_source},
        {"gpu_memory_budget", gpu_memory > 0 ? format_size(p.run.gpu_memory_budget) + (device_count > 1 ? " per device" : "") : "none (no GPU)",
         p.hardware.gpu_memory_budget > 0 || gpu_memory == 0 ? profile_source : "half the GPU's memory"},
        {"threads", threads > 0 ? std::to_string(threads) : "all cores", o.threads > 0 ? "--threads" : profile_source},
        {"reader_chunk", format_size(p.run.reader_chunk), profile_source},
        {"gpu_streams", std::to_string(p.hardware.gpu_streams), profile_source},
        {"concurrent_files", per_device(effective_concurrent_files(p.hardware, device_count), p.hardware.concurrent_files, device_count),
         profile_source},
        {"seed", std::to_string(o.seed), o.manual_seed == -1 ? "drawn" : "--manual_seed"},
        {"rounding", o.simple ? "round-to-nearest" : rounding_summary(o), o.simple ? "--simple" : "--optimizer"},
    };
    p.options = std::move(o);
    return p;
}

RunStats execute_conversion(const Prepared& p, Progress& progress) {
    OutputFile out(p.context.output_path, p.plan.layout.total_size, p.options.overwrite, p.options.output_fault);
    const MappedFile input(p.options.input);
    // The plan was made from the file as it was when its header was read; it must still be that file.
    const auto check_input = [&] { input.check_unchanged(p.plan.input.file_size, p.plan.input.mtime_ns); };
    check_input();
    RunStats stats;
    try {
        stats = run_conversion(p.plan, input, out, *p.devices, p.run, progress);
    } catch (const Interrupted&) {
        throw;
    } catch (const Error&) {
        check_input();  // an input that changed under the run is the cause of whatever failed after it
        throw;
    }
    out.sync();
    check_input();  // after the data is safe, before the rename: never publish the output of a changed input
    out.commit();
    return stats;
}

namespace {

std::string layer_json(const LayerRecord& r) {
    std::string s = "{\"name\": " + json_quote(r.name) + ", \"device\": " + json_quote(r.device) + ", \"format\": " + json_quote(format_label(r.spec.format)) +
                    ", \"shape\": [" + std::to_string(r.rows) + ", " + std::to_string(r.cols) + "], \"seconds\": " +
                    json_number(r.seconds) + ", \"k\": " + std::to_string(r.rounding.k);
    if (r.rounding.k > 0)
        s += ", \"iterations\": " + std::to_string(r.rounding.iterations) + ", \"best_iteration\": " +
             std::to_string(r.rounding.best_iteration) + ", \"initial_loss\": " + json_number(r.rounding.initial_loss) +
             ", \"best_loss\": " + json_number(r.rounding.best_loss) + ", \"rounded_loss\": " + json_number(r.rounding.rounded_loss) +
             ", \"final_loss\": " + json_number(r.rounding.final_loss) + ", \"moved_codes\": " + std::to_string(r.rounding.flips) +
             ", \"svd_seconds\": " + json_number(r.rounding.svd_seconds) + ", \"optimize_seconds\": " +
             json_number(r.rounding.optimize_seconds) + ", \"finish_pass_seconds\": " +
             json_number(r.rounding.finish_pass_seconds) + ", \"finish_rounds_seconds\": " + json_number(r.rounding.finish_rounds_seconds) +
             (r.rounding.optimizer_reverted ? ", \"optimizer_reverted\": true" : "");
    if (r.measured) {
        const auto& q = r.quality;
        const double w = q.weight_norm > 0 ? q.weight_norm : 1.0, y = q.output_norm > 0 ? q.output_norm : 1.0;
        s += ", \"relative_error\": " + json_number(q.error_norm / w) + ", \"output_error\": " + json_number(q.output_error / y);
        if (r.rounding.k > 0) s += ", \"projected_error\": " + json_number(q.projected_error / w);
    }
    return s + "}";
}

// "\"cuda:0\": 20, \"cuda:1\": 20": which devices computed this file's layers.
std::string layers_per_device(const RunStats& stats) {
    std::map<std::string, std::size_t> count;
    for (const auto& r : stats.layers) ++count[r.device];
    std::string s;
    for (const auto& [device, n] : count) s += (s.empty() ? "" : ", ") + json_quote(device) + ": " + std::to_string(n);
    return s;
}

}  // namespace

std::string conversion_report_json(const Prepared& p, const RunStats& stats, const std::string& status,
                                   const std::string& error, long peak_rss) {
    const auto& c = p.plan.counts;
    std::ostringstream out;
    out << "{\"status\": " << json_quote(status) << ", \"error\": " << json_quote(error)
        << ", \"input\": " << json_quote(p.options.input) << ", \"output\": " << json_quote(p.context.output_path)
        << ", \"seconds\": " << json_number(stats.seconds) << ", \"input_bytes\": " << p.plan.input.file_size
        << ", \"output_bytes\": " << (status == "ok" ? p.plan.layout.total_size : 0) << ", \"quantized\": " << c.quantized
        << ", \"kept\": " << c.kept << ", \"removed\": " << c.removed << ", \"biases_corrected\": " << c.biases_corrected
        << ", \"peak_rss_bytes\": " << peak_rss << ", \"device\": " << json_quote(p.context.device_line)
        << ", \"layers_per_device\": {" << layers_per_device(stats) << "}"
        << ", \"model\": " << json_quote(p.context.model_line) << ", \"options\": " << json_quote(canonical_options(p.options))
        << ", \"seed\": " << p.options.seed << ", \"settings\": {";
    for (std::size_t i = 0; i < p.context.settings.size(); ++i)
        out << (i ? ", " : "") << json_quote(p.context.settings[i].key) << ": {\"value\": " << json_quote(p.context.settings[i].value)
            << ", \"source\": " << json_quote(p.context.settings[i].source) << "}";
    out << "}, \"layers\": [";
    auto layers = stats.layers;
    std::sort(layers.begin(), layers.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    for (std::size_t i = 0; i < layers.size(); ++i) out << (i ? ",\n  " : "\n  ") << layer_json(layers[i]);
    out << "]}";
    return out.str();
}

}  // namespace quantflow
