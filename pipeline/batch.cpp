#include "pipeline/batch.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <simdjson.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "kernels/error.hpp"
#include "pipeline/convert.hpp"
#include "pipeline/graph.hpp"
#include "pipeline/naming.hpp"
#include "stages/format/json_text.hpp"
#include "stages/format/safetensors_header.hpp"

namespace fs = std::filesystem;

namespace quantflow {
namespace {

std::string errno_text() { return std::strerror(errno); }

bool cancel_requested(const BatchSettings& settings) { return settings.cancel && settings.cancel->load(); }

}  // namespace

BatchLock::BatchLock(const std::string& dir, const Shard& shard) {
    path_ = dir + "/.quantflow-batch" +
            (shard.count > 1 ? ".shard-" + std::to_string(shard.index) + "-of-" + std::to_string(shard.count) : std::string()) + ".lock";
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    QF_EXPECT(fd_ >= 0, path_ + ": cannot create the batch lock file: " + errno_text());
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        ::close(fd_);
        fd_ = -1;
        if (err == EWOULDBLOCK)
            throw Error(path_ + ": another quantflow batch is writing to " + dir + " (this shard); wait for it to finish");
        throw Error(path_ + ": cannot lock: " + std::string(std::strerror(err)));
    }
    const std::string who = "pid " + std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, who.data(), who.size(), 0) < 0) {
        // informational only
    }
}

BatchLock::~BatchLock() {
    if (fd_ < 0) return;
    ::unlink(path_.c_str());  // while still holding it: a waiting run finds the name free or the lock held
    ::close(fd_);             // closing drops the flock (the kernel does the same for a killed process)
}

std::size_t remove_stale_temps(const std::vector<std::string>& outputs) {
    std::size_t removed = 0;
    for (const auto& out : outputs) {
        const fs::path p(out);
        const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
        const std::string prefix = "." + p.filename().string() + ".qf-tmp.";
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(dir, ec))
            if (e.path().filename().string().rfind(prefix, 0) == 0 && fs::remove(e.path(), ec)) ++removed;
    }
    return removed;
}

std::string resume_verdict(const std::string& output, const std::string& input_name, std::uint64_t input_size,
                           std::int64_t input_mtime_ns, std::uint64_t input_header_hash, const std::string& canonical) {
    if (!fs::exists(output)) return "no output yet";
    SafetensorsHeader h;
    try {
        h = read_safetensors_header(output);
    } catch (const Error& e) {
        return std::string("the existing output is not valid (") + e.what() + ")";
    }
    const std::string* record = h.metadata_value("quantflow");
    if (!record) return "the existing output has no quantflow record";
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(*record).get(doc) != simdjson::SUCCESS) return "the existing output's quantflow record is not JSON";
    std::string_view name, options, hash;
    std::uint64_t size = 0;
    std::int64_t mtime = 0;
    if (doc["input"].get_string().get(name) || doc["options"].get_string().get(options) ||
        doc["input_header_hash"].get_string().get(hash) || doc["input_size"].get_uint64().get(size) ||
        doc["input_mtime_ns"].get_int64().get(mtime))
        return "the existing output's quantflow record predates resume support";
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(input_header_hash));
    if (name != input_name) return "the existing output was made from " + std::string(name);
    if (size != input_size) return "the input changed size (" + std::to_string(size) + " -> " + std::to_string(input_size) + " bytes)";
    if (mtime != input_mtime_ns) return "the input was modified since the output was made";
    if (hash != hex) return "the input's header changed since the output was made";
    if (options != canonical) return "the options differ (" + std::string(options) + " vs " + canonical + ")";
    return "";
}

namespace {

struct FileRecord {
    std::string input, output, status = "not_started", error, detail;
    double seconds = 0;
    std::string report;  // the per-file report object, when a conversion was attempted
};

std::string status_json(const FileRecord& r) {
    if (!r.report.empty()) return r.report;
    return "{\"status\": " + json_quote(r.status) + ", \"error\": " + json_quote(r.error) + ", \"input\": " + json_quote(r.input) +
           ", \"output\": " + json_quote(r.output) + ", \"seconds\": " + json_number(r.seconds) + ", \"detail\": " +
           json_quote(r.detail) + "}";
}

std::string summary_table(const std::vector<FileRecord>& records, double seconds, std::size_t stale) {
    std::string s = "\nstatus        seconds  input -> output\n";
    char line[1024];
    std::map<std::string, std::size_t> count;
    for (const auto& r : records) {
        ++count[r.status];
        std::snprintf(line, sizeof line, "%-12s %8.1f  %s -> %s%s%s\n", r.status.c_str(), r.seconds, r.input.c_str(),
                      r.output.empty() ? "-" : r.output.c_str(), r.error.empty() && r.detail.empty() ? "" : ": ",
                      (r.error.empty() ? r.detail : r.error).c_str());
        s += line;
    }
    std::snprintf(line, sizeof line, "%zu files: %zu converted, %zu skipped (complete), %zu failed, %zu interrupted, %zu not started; "
                  "%.1f s%s\n", records.size(), count["ok"], count["skipped"], count["failed"], count["interrupted"],
                  count["not_started"], seconds, stale ? (", " + std::to_string(stale) + " stale temp file(s) removed").c_str() : "");
    return s + line;
}

}  // namespace

BatchOutcome run_batch(const std::vector<BatchItem>& all_items, const BatchSettings& settings, const OptionsForItem& options_for,
                       const BatchLog& log) {
    const auto start = std::chrono::steady_clock::now();
    std::error_code ec;
    fs::create_directories(settings.out_dir, ec);
    QF_EXPECT(fs::is_directory(settings.out_dir), settings.out_dir + ": cannot create the output directory");
    const BatchLock lock(settings.out_dir, settings.shard);

    std::vector<BatchItem> items;
    for (const auto& item : all_items)
        if (in_shard(item.key, settings.shard)) items.push_back(item);

    // Options and output paths first: a bad override is that file's failure, not the batch's.
    std::vector<FileRecord> records(items.size());
    std::vector<Options> options(items.size());
    std::vector<bool> ready(items.size(), false);
    int concurrent = settings.concurrent_files;
    for (std::size_t i = 0; i < items.size(); ++i) {
        records[i].input = items[i].input;
        try {
            options[i] = options_for(items[i]);
            options[i].input = items[i].input;
            const std::string name = items[i].output.empty() ? fs::path(default_output_path(options[i])).filename().string() : items[i].output;
            options[i].output = fs::path(name).is_absolute() ? name : (fs::path(settings.out_dir) / name).string();
            records[i].output = options[i].output;
            ready[i] = true;
        } catch (const Error& e) {
            records[i].status = "failed";
            records[i].error = e.what();
        }
    }
    // One set of devices for the whole batch: the files in flight share each device's budget.
    std::shared_ptr<DevicePool> devices = settings.devices;
    std::string device_line;
    for (std::size_t i = 0; i < items.size() && !devices; ++i) {
        if (!ready[i]) continue;
        const Hardware hw = choose_hardware(options[i]);
        devices = hw.devices;
        device_line = hw.device_line;
        if (concurrent <= 0) concurrent = effective_concurrent_files(hw.profile, devices->size());
    }
    if (devices && device_line.empty()) device_line = "devices: " + devices->names();
    if (concurrent <= 0) concurrent = devices ? static_cast<int>(devices->size()) : 1;
    concurrent = std::clamp(concurrent, 1, 64);
    std::vector<std::string> outputs;
    for (const auto& r : records)
        if (!r.output.empty()) outputs.push_back(r.output);
    const std::size_t stale = remove_stale_temps(outputs);
    log("batch: " + std::to_string(items.size()) + " of " + std::to_string(all_items.size()) + " inputs in shard " +
        std::to_string(settings.shard.index) + "/" + std::to_string(settings.shard.count) + ", " + std::to_string(concurrent) +
        " at a time, into " + settings.out_dir + (device_line.empty() ? "" : "; " + device_line) + (stale ? "; removed " + std::to_string(stale) + " stale temp file(s)" : ""));

    std::atomic<std::size_t> next{0};
    std::atomic<bool> stop{false};
    std::mutex mutex;
    std::size_t done = 0;
    const auto work = [&] {
        for (;;) {
            const std::size_t i = next.fetch_add(1);
            if (i >= items.size() || stop.load()) return;
            if (!ready[i]) {
                if (!settings.keep_going) stop = true;
                continue;
            }
            FileRecord& r = records[i];
            Options o = options[i];
            if (concurrent > 1 && o.memory_budget) o.memory_budget = *o.memory_budget / static_cast<std::uint64_t>(concurrent);
            const auto t0 = std::chrono::steady_clock::now();
            std::unique_ptr<Prepared> p;
            RunStats stats;
            try {
                if (cancel_requested(settings)) throw Interrupted();
                if (concurrent == 1) reset_peak_rss();
                p = std::make_unique<Prepared>(prepare_conversion(o, devices));
                if (concurrent > 1 && !o.memory_budget) p->run.memory_budget /= static_cast<std::uint64_t>(concurrent);
                p->run.cancel = settings.cancel;
                const SafetensorsHeader& in = p->plan.input;
                const std::string why = settings.resume ? resume_verdict(p->context.output_path, fs::path(o.input).filename().string(),
                                                                         in.file_size, in.mtime_ns, in.header_hash,
                                                                         canonical_options(p->options))
                                                        : "resume off";
                if (why.empty()) {
                    r.status = "skipped";
                    r.detail = "complete output with the same input and options";
                } else {
                    if (settings.resume) p->options.overwrite = true;  // an incomplete or stale output is redone
                    Progress progress(concurrent == 1 ? resolve_progress_style(settings.progress) : ProgressStyle::None,
                                      in.file_size - in.data_start);
                    stats = execute_conversion(*p, progress);
                    r.status = "ok";
                }
            } catch (const Interrupted& e) {
                r.status = "interrupted";
                r.error = e.what();
                stop = true;
            } catch (const Error& e) {
                r.status = "failed";
                r.error = e.what();
                if (!settings.keep_going) stop = true;
            }
            r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (p && r.status != "skipped") r.report = conversion_report_json(*p, stats, r.status, r.error, peak_rss_bytes());
            std::lock_guard guard(mutex);
            ++done;
            char line[256];
            std::snprintf(line, sizeof line, "[%zu/%zu] %-11s %7.1f s  ", done, items.size(), r.status.c_str(), r.seconds);
            log(line + r.input + (r.error.empty() ? " -> " + r.output : ": " + r.error));
        }
    };
    std::vector<std::thread> workers;
    for (int t = 1; t < concurrent; ++t) workers.emplace_back(work);
    work();
    for (auto& t : workers) t.join();

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    BatchOutcome out;
    bool interrupted = false;
    for (const auto& r : records) {
        if (r.status == "ok") ++out.converted;
        else if (r.status == "skipped") ++out.skipped;
        else if (r.status == "failed") ++out.failed;
        else if (r.status == "interrupted") interrupted = true;
        else ++out.not_started;
    }
    interrupted = interrupted || cancel_requested(settings);
    if (interrupted) out.exit_code = static_cast<int>(ExitCode::kInterrupted);
    else if (out.failed > 0 && out.failed == records.size()) out.exit_code = static_cast<int>(ExitCode::kFailed);
    else if (out.failed > 0 || out.not_started > 0) out.exit_code = static_cast<int>(ExitCode::kSomeFailed);
    log(summary_table(records, seconds, stale));
    if (!settings.report.empty()) {
        const std::string status = interrupted ? "interrupted" : out.failed == 0 && out.not_started == 0 ? "ok" : "some_failed";
        std::ofstream f(settings.report, std::ios::trunc);
        f << "{\"status\": " << json_quote(status) << ", \"out_dir\": " << json_quote(settings.out_dir) << ", \"shard\": \""
          << settings.shard.index << "/" << settings.shard.count << "\", \"seconds\": " << json_number(seconds)
          << ", \"converted\": " << out.converted << ", \"skipped\": " << out.skipped << ", \"failed\": " << out.failed
          << ", \"not_started\": " << out.not_started << ", \"stale_temps_removed\": " << stale << ", \"files\": [";
        for (std::size_t i = 0; i < records.size(); ++i) f << (i ? ",\n  " : "\n  ") << status_json(records[i]);
        f << "]}\n";
        if (!f) throw Error(settings.report + ": cannot write the report");
    }
    return out;
}

}  // namespace quantflow
