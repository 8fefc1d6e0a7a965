// pipeline/batch.hpp: `quantflow batch`: many inputs to one output directory, overnight and on clusters
// (spec section 8).
//
//  - inputs: files, globs, directories (recursive with --recursive) and a JSON manifest with per-file
//    overrides; sorted and de-duplicated by path;
//  - --shard I/N keeps the inputs whose key (the path as listed) hashes to I modulo N: stable across runs and
//    machines, and the N shards together cover every input exactly once;
//  - a lock file per output directory and shard stops two runs from interleaving; temp files left by a dead
//    run of the same shard are removed once the lock is held;
//  - --resume skips an output only if it passes the reader's full validation and its `quantflow` metadata
//    records this input (name, size, mtime, header hash) and these options; anything else is redone;
//  - a file that fails is recorded with its error and the batch goes on (--keep-going, on by default);
//    SIGINT/SIGTERM abandon the file in flight (its temp file is removed) and still write the report;
//  - one set of devices for the whole batch (--devices): the profile's concurrent_files per device run at
//    once, their layers spread over every device's budget; the report names each file's devices.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/devices.hpp"
#include "pipeline/graph.hpp"
#include "pipeline/options.hpp"
#include "pipeline/progress.hpp"

namespace quantflow {

struct BatchItem {
    std::string input;               // path to read
    std::string key;                 // shard key: the path as listed (manifest entry, argument, or dir-relative)
    std::string output;              // manifest "output" (a name goes into --out-dir); empty = auto name
    std::vector<std::string> args;   // manifest overrides as arguments: "--int8", "--block-size=128", "!--simple" (unset)
};

// Expands paths (files, globs, directories) and a manifest (may be empty) into items sorted by key.
// Throws Error naming the path for a missing input, an empty directory or a malformed manifest.
std::vector<BatchItem> collect_batch_items(const std::vector<std::string>& paths, bool recursive, const std::string& manifest);

struct Shard {
    int index = 0;  // 0-based
    int count = 1;
};
// "I/N" with 0 <= I < N; throws Error(kUsage) otherwise.
Shard parse_shard(std::string_view text);
bool in_shard(const std::string& key, const Shard& shard);

// Holds an exclusive flock on DIR/.quantflow-batch[.shard-I-of-N].lock for its lifetime and removes the file
// at the end; throws Error when another live process holds it (the kernel drops the lock of a killed
// process, so a file left by a crash does not block the next run).
class BatchLock {
public:
    BatchLock(const std::string& dir, const Shard& shard);
    ~BatchLock();
    BatchLock(const BatchLock&) = delete;
    BatchLock& operator=(const BatchLock&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
    int fd_ = -1;
};

// Removes ".NAME.qf-tmp.*" files next to each output (left by a run that died); returns how many.
std::size_t remove_stale_temps(const std::vector<std::string>& outputs);

// Empty when `output` is a complete conversion of the input described by (name, size, mtime, header hash)
// with these canonical options; otherwise why it must be redone.
std::string resume_verdict(const std::string& output, const std::string& input_name, std::uint64_t input_size,
                           std::int64_t input_mtime_ns, std::uint64_t input_header_hash, const std::string& canonical);

struct BatchSettings {
    std::string out_dir;
    bool resume = false;
    bool keep_going = true;
    Shard shard;
    std::string report;          // JSON report path; empty = none
    int concurrent_files = 0;    // 0 = the hardware profile's, per device
    std::string progress = "auto";
    std::shared_ptr<DevicePool> devices;   // null: from the first file's options (--devices, --device, profile)
    const CancelFlag* cancel = nullptr;    // set: the file in flight is abandoned, the rest not started
};

struct BatchOutcome {
    int exit_code = 0;           // 0 all done, 3 some failed, 1 all failed, 130 interrupted
    std::size_t converted = 0, skipped = 0, failed = 0, not_started = 0;
};

// Builds the Options of one item (the command line with the item's overrides applied).
using OptionsForItem = std::function<Options(const BatchItem&)>;
// Receives every line meant for the user (progress lines, the final summary table).
using BatchLog = std::function<void(const std::string&)>;

BatchOutcome run_batch(const std::vector<BatchItem>& items, const BatchSettings& settings, const OptionsForItem& options_for,
                       const BatchLog& log);

}  // namespace quantflow
