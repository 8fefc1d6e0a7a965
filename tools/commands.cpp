#include "tools/commands.hpp"

#include <oneapi/tbb/global_control.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "kernels/backend.hpp"
#include "kernels/error.hpp"
#include "kernels/units.hpp"
#include "pipeline/batch.hpp"
#include "pipeline/compare.hpp"
#include "pipeline/decode.hpp"
#include "pipeline/convert.hpp"
#include "pipeline/inspect.hpp"
#include "pipeline/naming.hpp"
#include "pipeline/plan_print.hpp"
#include "pipeline/profiles.hpp"

namespace quantflow {
namespace {

std::unique_ptr<oneapi::tbb::global_control> limit_threads(int threads) {
    if (threads <= 0) return nullptr;
    return std::make_unique<oneapi::tbb::global_control>(oneapi::tbb::global_control::max_allowed_parallelism,
                                                         static_cast<std::size_t>(threads));
}

void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text << "\n";
    if (!out) throw Error(path + ": cannot write the report");
}

}  // namespace

std::atomic<bool>& signal_cancel_flag() {
    static std::atomic<bool> flag{false};  // the one process-wide flag: a signal handler can reach nothing else
    return flag;
}

int run_plan(Options options) {
    const Prepared p = prepare_conversion(std::move(options));
    for (const auto& m : p.messages) std::fprintf(stderr, "%s\n", m.c_str());
    std::cout << (p.options.json ? plan_json(p.plan, p.context) : plan_text(p.plan, p.context));
    return 0;
}

int run_convert(Options options) {
    Prepared p = prepare_conversion(std::move(options));
    p.run.cancel = &signal_cancel_flag();
    for (const auto& m : p.messages) std::fprintf(stderr, "%s\n", m.c_str());
    std::fprintf(stderr, "%s\n", p.context.device_line.c_str());
    for (const auto& note : p.plan.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
    const auto limit = limit_threads(p.options.threads > 0 ? p.options.threads : p.hardware.cpu_threads);
    RunStats stats;
    try {
        Progress progress(resolve_progress_style(p.options.progress), p.plan.input.file_size - p.plan.input.data_start);
        stats = execute_conversion(p, progress);
    } catch (const Error& e) {
        if (!p.options.report.empty()) write_text(p.options.report, conversion_report_json(p, stats, "failed", e.what(), peak_rss_bytes()));
        throw;
    }
    if (!p.options.report.empty()) write_text(p.options.report, conversion_report_json(p, stats, "ok", "", peak_rss_bytes()));
    const auto& c = p.plan.counts;
    const double gb = static_cast<double>(p.plan.input.file_size) / 1e9;
    std::printf("wrote %s: %zu quantized, %zu kept, %zu removed, %zu biases corrected; %.2f GB in %.2f s (%.2f GB/s), "
                "peak memory %s\n",
                p.context.output_path.c_str(), c.quantized, c.kept, c.removed, c.biases_corrected, gb, stats.seconds,
                stats.seconds > 0 ? gb / stats.seconds : 0.0, format_size(static_cast<std::uint64_t>(peak_rss_bytes())).c_str());
    return 0;
}

int run_batch(const ParsedCommand& parsed) {
    const Options& o = parsed.options;
    BatchSettings settings;
    settings.out_dir = o.out_dir;
    settings.resume = o.resume;
    settings.keep_going = o.keep_going;
    settings.report = o.report;
    settings.progress = o.progress;
    settings.concurrent_files = o.concurrent_files;
    settings.cancel = &signal_cancel_flag();
    if (!o.shard.empty()) settings.shard = parse_shard(o.shard);
    const auto items = collect_batch_items(parsed.files, o.recursive, o.manifest);
    const auto limit = limit_threads(o.threads);
    const auto options_for = [&](const BatchItem& item) {
        Options per_file = options_with_overrides(parsed, item.args);
        per_file.report.clear();  // the batch writes one report for all files
        return per_file;
    };
    const BatchOutcome outcome = run_batch(items, settings, options_for, [](const std::string& line) {
        std::fprintf(stderr, "%s\n", line.c_str());
    });
    return outcome.exit_code;
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
    // The same budget as convert: --memory-budget, else the hardware profile's (picked as convert picks it).
    const HardwareProfile hw = load_hardware_profile(options.profile.empty() ? default_hardware_profile(backend->device_memory())
                                                                             : options.profile);
    c.memory_budget = options.memory_budget.value_or(hw.memory_budget);
    const auto limit = limit_threads(options.threads > 0 ? options.threads : hw.cpu_threads);
    const Comparison result = compare_files(c, *backend);
    std::cout << (options.json ? comparison_json(result, c) : comparison_text(result, c));
    return 0;
}

int run_decode(const std::vector<std::string>& files, const Options& options) {
    check_distinct_paths(files.at(0), options.output);
    const std::size_t n = decode_file(files.at(0), options.output, options.overwrite);
    std::cout << "wrote " << options.output << ": " << n << " decoded layer(s), F32 at their stored shapes\n";
    return 0;
}

}  // namespace quantflow
