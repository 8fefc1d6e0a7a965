#include "pipeline/convert.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <fstream>
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
           (o.full_matrix ? ", exact SVD" : "") + (o.rounding_aware ? ", rounding-aware finish" : "");
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

}  // namespace

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

Prepared prepare_conversion(Options o, std::shared_ptr<Backend> backend) {
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

    std::string device_line;
    if (backend) {
        p.backend = std::move(backend);
        device_line = "device: " + p.backend->name();
    } else {
        p.backend = make_backend(parse_device(o.device), device_line);
    }
    // Without --profile: "cpu", or the GPU profile that fits the device's memory.
    std::string profile_name = o.profile, profile_source;
    if (profile_name.empty()) {
        const std::uint64_t gib = p.backend->device_memory() >> 30;
        profile_name = gib >= 70 ? "gpu-80gb" : gib >= 20 ? "gpu-24gb" : gib >= 7 ? "gpu-8gb" : "cpu";
        profile_source = gib > 0 ? "profile " + profile_name + " (picked for " + std::to_string(gib) + " GiB of GPU memory)"
                                 : "default profile cpu";
    }
    p.hardware = load_hardware_profile(profile_name);
    if (profile_source.empty()) profile_source = "profile " + p.hardware.name;
    p.run.memory_budget = o.memory_budget.value_or(p.hardware.memory_budget);
    const std::uint64_t gpu_memory = p.backend->device_memory();
    std::string staging_line;
    if (gpu_memory > 0) {
        p.run.gpu_memory_budget = p.hardware.gpu_memory_budget > 0 ? std::min(p.hardware.gpu_memory_budget, gpu_memory) : gpu_memory / 2;
        // The staging ring is pinned host memory: it comes out of the memory budget (a quarter of it at most).
        const int slabs = std::max(2, p.hardware.pinned_slabs);
        const std::uint64_t pinned = std::min(p.hardware.pinned_slab * static_cast<std::uint64_t>(slabs), p.run.memory_budget / 4);
        const std::uint64_t slab = pinned / static_cast<std::uint64_t>(slabs);
        p.backend->set_staging(slab, slabs);
        p.run.memory_budget -= pinned;
        staging_line = format_size(pinned) + " of it pinned staging (" + std::to_string(slabs) + " x " + format_size(slab) + ")";
    }
    p.run.concurrency = std::max(1, p.hardware.tensors_in_flight);
    p.run.reader_chunk = p.hardware.reader_chunk;
    p.run.seed = o.seed;
    p.run.calib_samples = o.calib_samples;
    p.run.optimizer.seed = o.seed;
    p.run.optimizer.full_matrix = o.full_matrix;
    p.run.optimizer.rounding.optimizer = parse_optimizer(o.optimizer);
    p.run.optimizer.rounding.num_iter = o.num_iter;
    p.run.optimizer.rounding.lr = o.lr;
    p.run.optimizer.rounding.rounding_aware = o.rounding_aware;
    p.run.optimizer.rounding.finish_budget = o.rounding_budget / 100;
    if (!o.report.empty()) p.run.quality_samples = kReportSamples;
    const int threads = o.threads > 0 ? o.threads : p.hardware.cpu_threads;

    p.plan = build_plan(std::move(header), o, filter_options(o));
    plan_memory(p.plan, *p.backend, o);
    p.context.output_path = output;
    p.context.device_line = device_line;
    p.context.memory_budget = p.run.memory_budget;
    p.context.model_line = model_line;
    p.context.gpu_memory_budget = p.run.gpu_memory_budget;
    for (const auto& job : make_jobs(p.plan.layers, p.plan.input, p.run.reader_chunk)) {
        p.context.largest_job_bytes = std::max(p.context.largest_job_bytes, job.budget_bytes);
        p.context.largest_device_job_bytes = std::max(p.context.largest_device_job_bytes, job.device_bytes);
    }
    p.context.settings = {
        {"memory_budget", format_size(o.memory_budget.value_or(p.hardware.memory_budget)) + (staging_line.empty() ? "" : ", " + staging_line),
         o.memory_budget ? "--memory-budget" : profile_source},
        {"tensors_in_flight", std::to_string(p.run.concurrency), profile_source},
        {"gpu_memory_budget", gpu_memory > 0 ? format_size(p.run.gpu_memory_budget) : "none (no GPU)",
         p.hardware.gpu_memory_budget > 0 || gpu_memory == 0 ? profile_source : "half the GPU's memory"},
        {"threads", threads > 0 ? std::to_string(threads) : "all cores", o.threads > 0 ? "--threads" : profile_source},
        {"reader_chunk", format_size(p.run.reader_chunk), profile_source},
        {"gpu_streams", std::to_string(p.hardware.gpu_streams), profile_source},
        {"concurrent_files", std::to_string(p.hardware.concurrent_files), profile_source},
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
        stats = run_conversion(p.plan, input, out, *p.backend, p.run, progress);
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
    std::string s = "{\"name\": " + json_quote(r.name) + ", \"format\": " + json_quote(format_label(r.spec.format)) +
                    ", \"shape\": [" + std::to_string(r.rows) + ", " + std::to_string(r.cols) + "], \"seconds\": " +
                    json_number(r.seconds) + ", \"k\": " + std::to_string(r.rounding.k);
    if (r.rounding.k > 0)
        s += ", \"iterations\": " + std::to_string(r.rounding.iterations) + ", \"best_iteration\": " +
             std::to_string(r.rounding.best_iteration) + ", \"initial_loss\": " + json_number(r.rounding.initial_loss) +
             ", \"best_loss\": " + json_number(r.rounding.best_loss) + ", \"rounded_loss\": " + json_number(r.rounding.rounded_loss) +
             ", \"final_loss\": " + json_number(r.rounding.final_loss) + ", \"moved_codes\": " + std::to_string(r.rounding.flips) +
             ", \"optimize_seconds\": " + json_number(r.rounding.optimize_seconds) + ", \"finish_pass_seconds\": " +
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
