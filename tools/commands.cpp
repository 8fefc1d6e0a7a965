#include "tools/commands.hpp"

#include <sys/resource.h>

#include <oneapi/tbb/global_control.h>

#include <cstdio>
#include <algorithm>
#include <fstream>
#include <iostream>
#include <random>

#include "kernels/backend.hpp"
#include "kernels/error.hpp"
#include "pipeline/compare.hpp"
#include "pipeline/graph.hpp"
#include "pipeline/inspect.hpp"
#include "pipeline/naming.hpp"
#include "pipeline/plan.hpp"
#include "pipeline/plan_print.hpp"
#include "pipeline/profiles.hpp"
#include "stages/format/json_text.hpp"
#include "stages/reader.hpp"

namespace quantflow {
namespace {

constexpr int kReportSamples = 16;  // Gaussian test inputs per layer for the report's output error

std::string rounding_summary(const Options& o) {
    return o.optimizer + ", " + std::to_string(o.num_iter) + " iterations, lr " + python_float_str(o.lr) + ", k " +
           std::to_string(o.min_k) + ".." + std::to_string(o.max_k) + " (top_p " + python_float_str(o.top_p) + ")" +
           (o.full_matrix ? ", exact SVD" : "") + (o.rounding_aware ? ", rounding-aware finish" : "");
}

// Everything convert and plan share: seed, output name, hardware settings, backend, plan.
struct Prepared {
    Options options;
    HardwareProfile hardware;
    PlanContext context;
    RunSettings run;
    std::unique_ptr<Backend> backend;
    Plan plan;
};

Prepared prepare(Options o) {
    Prepared p;
    const Optimizer optimizer = parse_optimizer(o.optimizer);
    QF_EXPECT_USAGE(o.num_iter >= 0, "--num_iter must be 0 or more, got " + std::to_string(o.num_iter));
    QF_EXPECT_USAGE(o.lr > 0, "--lr must be positive, got " + python_float_str(o.lr));
    QF_EXPECT_USAGE(o.top_p >= 0 && o.top_p <= 1, "--top_p must be in [0, 1], got " + python_float_str(o.top_p));
    QF_EXPECT_USAGE(o.min_k >= 1 && o.max_k >= o.min_k,
                    "--min_k/--max_k must satisfy 1 <= min_k <= max_k, got " + std::to_string(o.min_k) + "/" + std::to_string(o.max_k));
    if (o.manual_seed == -1) {
        o.seed = (static_cast<std::uint64_t>(std::random_device{}()) << 32 | std::random_device{}()) & 0x7FFFFFFFFFFFFFFFull;
        std::fprintf(stderr, "seed: %llu (pass --manual_seed %llu to reproduce this run)\n",
                     static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(o.seed));
    } else {
        o.seed = static_cast<std::uint64_t>(o.manual_seed);
    }
    SafetensorsHeader header = read_safetensors_header(o.input);
    const std::string output = o.output.empty() ? default_output_path(o) : o.output;
    check_distinct_paths(o.input, output);

    std::string device_line;
    p.backend = make_backend(parse_device(o.device), device_line);
    const std::string profile_name = o.profile.empty() ? "cpu" : o.profile;
    p.hardware = load_hardware_profile(profile_name);
    const std::string profile_source = o.profile.empty() ? "default profile cpu" : "profile " + p.hardware.name;
    p.run.memory_budget = o.memory_budget.value_or(p.hardware.memory_budget);
    p.run.concurrency = std::max(1, p.hardware.tensors_in_flight);
    p.run.reader_chunk = p.hardware.reader_chunk;
    p.run.seed = o.seed;
    p.run.calib_samples = o.calib_samples;
    p.run.optimizer.seed = o.seed;
    p.run.optimizer.full_matrix = o.full_matrix;
    p.run.optimizer.rounding.optimizer = optimizer;
    p.run.optimizer.rounding.num_iter = o.num_iter;
    p.run.optimizer.rounding.lr = o.lr;
    p.run.optimizer.rounding.rounding_aware = o.rounding_aware;
    if (!o.report.empty()) p.run.quality_samples = kReportSamples;
    const int threads = o.threads > 0 ? o.threads : p.hardware.cpu_threads;

    p.plan = build_plan(std::move(header), o, filter_options(o));
    p.context.output_path = output;
    p.context.device_line = device_line;
    p.context.memory_budget = p.run.memory_budget;
    for (const auto& job : make_jobs(p.plan.layers, p.plan.input, p.run.reader_chunk))
        p.context.largest_job_bytes = std::max(p.context.largest_job_bytes, job.budget_bytes);
    p.context.settings = {
        {"memory_budget", format_size(p.run.memory_budget), o.memory_budget ? "--memory-budget" : profile_source},
        {"tensors_in_flight", std::to_string(p.run.concurrency), profile_source},
        {"threads", threads > 0 ? std::to_string(threads) : "all cores", o.threads > 0 ? "--threads" : profile_source},
        {"reader_chunk", format_size(p.run.reader_chunk), profile_source},
        {"seed", std::to_string(o.seed), o.manual_seed == -1 ? "drawn" : "--manual_seed"},
        {"rounding", o.simple ? "round-to-nearest" : rounding_summary(o), o.simple ? "--simple" : "--optimizer"},
    };
    p.options = std::move(o);
    return p;
}

long peak_rss_kib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
}

std::string layer_json(const LayerRecord& r) {
    std::string s = "{\"name\": " + json_quote(r.name) + ", \"format\": " + json_quote(format_label(r.spec.format)) +
                    ", \"shape\": [" + std::to_string(r.rows) + ", " + std::to_string(r.cols) + "], \"seconds\": " +
                    json_number(r.seconds) + ", \"k\": " + std::to_string(r.rounding.k);
    if (r.rounding.k > 0)
        s += ", \"iterations\": " + std::to_string(r.rounding.iterations) + ", \"best_iteration\": " +
             std::to_string(r.rounding.best_iteration) + ", \"initial_loss\": " + json_number(r.rounding.initial_loss) +
             ", \"best_loss\": " + json_number(r.rounding.best_loss) + ", \"rounded_loss\": " + json_number(r.rounding.rounded_loss) +
             ", \"final_loss\": " + json_number(r.rounding.final_loss) + ", \"moved_codes\": " + std::to_string(r.rounding.flips);
    if (r.measured) {
        const auto& q = r.quality;
        const double w = q.weight_norm > 0 ? q.weight_norm : 1.0, y = q.output_norm > 0 ? q.output_norm : 1.0;
        s += ", \"relative_error\": " + json_number(q.error_norm / w) + ", \"output_error\": " + json_number(q.output_error / y);
        if (r.rounding.k > 0) s += ", \"projected_error\": " + json_number(q.projected_error / w);
    }
    return s + "}";
}

void write_report(const Prepared& p, const RunStats& stats, const std::string& status, const std::string& error) {
    if (p.options.report.empty()) return;
    const auto& c = p.plan.counts;
    std::ofstream out(p.options.report, std::ios::trunc);
    out << "{\"status\": " << json_quote(status) << ", \"error\": " << json_quote(error)
        << ", \"input\": " << json_quote(p.options.input) << ", \"output\": " << json_quote(p.context.output_path)
        << ", \"seconds\": " << stats.seconds << ", \"input_bytes\": " << p.plan.input.file_size
        << ", \"output_bytes\": " << p.plan.layout.total_size << ", \"quantized\": " << c.quantized
        << ", \"kept\": " << c.kept << ", \"removed\": " << c.removed << ", \"biases_corrected\": " << c.biases_corrected
        << ", \"peak_rss_bytes\": " << peak_rss_kib() * 1024L << ", \"device\": " << json_quote(p.context.device_line)
        << ", \"options\": " << json_quote(canonical_options(p.options)) << ", \"seed\": " << p.options.seed
        << ", \"layers\": [";
    auto layers = stats.layers;
    std::sort(layers.begin(), layers.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    for (std::size_t i = 0; i < layers.size(); ++i) out << (i ? ",\n  " : "\n  ") << layer_json(layers[i]);
    out << "]}\n";
    if (!out) throw Error(p.options.report + ": cannot write the report");
}

}  // namespace

int run_plan(Options options) {
    const Prepared p = prepare(std::move(options));
    std::cout << (p.options.json ? plan_json(p.plan, p.context) : plan_text(p.plan, p.context));
    return 0;
}

int run_convert(Options options) {
    Prepared p = prepare(std::move(options));
    std::fprintf(stderr, "%s\n", p.context.device_line.c_str());
    for (const auto& note : p.plan.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
    const int threads = p.options.threads > 0 ? p.options.threads : p.hardware.cpu_threads;
    std::unique_ptr<oneapi::tbb::global_control> limit;
    if (threads > 0)
        limit = std::make_unique<oneapi::tbb::global_control>(oneapi::tbb::global_control::max_allowed_parallelism,
                                                              static_cast<std::size_t>(threads));
    RunStats stats;
    try {
        OutputFile out(p.context.output_path, p.plan.layout.total_size, p.options.overwrite);
        const MappedFile input(p.options.input);
        Progress progress(resolve_progress_style(p.options.progress), p.plan.input.file_size - p.plan.input.data_start);
        stats = run_conversion(p.plan, input, out, *p.backend, p.run, progress);
        out.commit();
    } catch (const Error& e) {
        write_report(p, stats, "failed", e.what());
        throw;
    }
    write_report(p, stats, "ok", "");
    const auto& c = p.plan.counts;
    const double gb = static_cast<double>(p.plan.input.file_size) / 1e9;
    std::printf("wrote %s: %zu quantized, %zu kept, %zu removed, %zu biases corrected; %.2f GB in %.2f s (%.2f GB/s), "
                "peak memory %s\n",
                p.context.output_path.c_str(), c.quantized, c.kept, c.removed, c.biases_corrected, gb, stats.seconds,
                stats.seconds > 0 ? gb / stats.seconds : 0.0, format_size(static_cast<std::uint64_t>(peak_rss_kib()) * 1024).c_str());
    return 0;
}

int run_inspect(const std::vector<std::string>& files, bool json) {
    for (const auto& f : files) std::cout << inspect_file(f, json);
    return 0;
}

int run_compare(const std::vector<std::string>& files, const Options& options) {
    CompareOptions c;
    c.original = files.at(0);
    c.quantized = files.at(1);
    c.k = options.compare_k;
    c.samples = options.compare_samples;
    c.seed = options.manual_seed == -1 ? 0 : static_cast<std::uint64_t>(options.manual_seed);
    check_distinct_paths(c.original, c.quantized);
    std::string device_line;
    const auto backend = make_backend(parse_device(options.device), device_line);
    const Comparison result = compare_files(c, *backend);
    std::cout << (options.json ? comparison_json(result, c) : comparison_text(result, c));
    return 0;
}

}  // namespace quantflow
