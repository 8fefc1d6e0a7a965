#include "pipeline/progress.hpp"

#include <unistd.h>

#include <string>

#include "kernels/error.hpp"

namespace quantflow {

ProgressStyle resolve_progress_style(std::string_view option) {
    if (option == "none") return ProgressStyle::None;
    if (option == "plain") return ProgressStyle::Plain;
    if (option == "bar") return ProgressStyle::Bar;
    if (option == "auto") return ::isatty(STDERR_FILENO) ? ProgressStyle::Bar : ProgressStyle::Plain;
    throw Error("--progress '" + std::string(option) + "' is not one of auto, bar, plain, none", ExitCode::kUsage);
}

Progress::Progress(ProgressStyle style, std::uint64_t total_bytes, std::FILE* out)
    : style_(style), total_(total_bytes == 0 ? 1 : total_bytes), out_(out),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

void Progress::advance(std::uint64_t bytes, std::string_view tensor) {
    if (style_ == ProgressStyle::None) return;
    std::lock_guard lock(mutex_);
    done_ += bytes;
    last_tensor_ = tensor;
    activity_.clear();
    draw(false);
}

void Progress::activity(std::string_view tensor, std::string_view phase, int step, int steps) {
    if (style_ != ProgressStyle::Bar) return;
    std::lock_guard lock(mutex_);
    activity_ = std::string(tensor) + "  " + std::string(phase);
    if (steps > 1) activity_ += " " + std::to_string(step) + "/" + std::to_string(steps);
    draw(false);
}

void Progress::finish() {
    if (style_ == ProgressStyle::None) return;
    std::lock_guard lock(mutex_);
    done_ = total_;
    draw(true);
}

void Progress::draw(bool final) {
    const auto now = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double fraction = static_cast<double>(done_) / static_cast<double>(total_);
    const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - std::min(done_, total_)) / rate : 0.0;
    if (style_ == ProgressStyle::Plain) {
        const int decile = static_cast<int>(fraction * 10);
        if (decile == last_decile_ && !final) return;
        last_decile_ = decile;
        std::fprintf(out_, "progress: %3d%%  %.2f/%.2f GB  %.0f MB/s  %s\n", static_cast<int>(fraction * 100), done_ / 1e9,
                     total_ / 1e9, rate / 1e6, final ? "done" : last_tensor_.c_str());
        std::fflush(out_);
        return;
    }
    if (!final && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 28;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.append(static_cast<std::size_t>(kWidth - filled), '.');
    const int eta_s = static_cast<int>(eta + 0.5);
    const std::string& what = activity_.empty() ? last_tensor_ : activity_;
    std::fprintf(out_, "\r[%s] %3d%%  %.2f/%.2f GB  %4.0f MB/s  ETA %d:%02d  %-56.56s%s", bar.c_str(),
                 static_cast<int>(fraction * 100), done_ / 1e9, total_ / 1e9, rate / 1e6, eta_s / 60, eta_s % 60,
                 final ? "done" : what.c_str(), final ? "\n" : "");
    std::fflush(out_);
}

}  // namespace quantflow
