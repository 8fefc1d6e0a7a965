// pipeline/progress.hpp: what the user sees while a conversion runs (no logic, only display).
//
// Bar on a terminal: "[#####.....]  42%  1.2/2.9 GB  812 MB/s  ETA 0:02  blocks.3.ffn.0.weight", redrawn
// at most 10 times a second; while learned rounding runs, the tensor is followed by its phase and step. Plain: one line per 10% (logs, CI). None: silent. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

namespace quantflow {

enum class ProgressStyle { None, Plain, Bar };

// "auto" -> Bar when stderr is a terminal, else Plain; throws Error(kUsage) on an unknown style.
ProgressStyle resolve_progress_style(std::string_view option);

class Progress {
public:
    Progress(ProgressStyle style, std::uint64_t total_bytes, std::FILE* out = stderr);
    // Called by the writer after each job: `bytes` of input consumed, `tensor` just finished.
    void advance(std::uint64_t bytes, std::string_view tensor);
    // Called from the optimizer while a layer computes: "blocks.3.ffn.0.weight  optimize 120/500" (bar only).
    void activity(std::string_view tensor, std::string_view phase, int step, int steps);
    void finish();

private:
    void draw(bool final);

    ProgressStyle style_;
    std::uint64_t total_;
    std::FILE* out_;
    std::mutex mutex_;
    std::uint64_t done_ = 0;
    int last_decile_ = -1;
    std::string last_tensor_;
    std::string activity_;
    std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace quantflow
