// tools/commands.hpp: one function per subcommand; each prints to stdout/stderr and returns an exit code.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "pipeline/options.hpp"
#include "tools/cli.hpp"

namespace quantflow {

// Set by SIGINT/SIGTERM (tools/main.cpp): the conversion or batch in flight stops cleanly.
std::atomic<bool>& signal_cancel_flag();

int run_convert(Options options);
int run_plan(Options options);
// Many files into --out-dir (spec 8); returns 0, 1 (all failed), 3 (some failed) or 130 (interrupted).
int run_batch(const ParsedCommand& parsed);
int run_inspect(const std::vector<std::string>& files, bool json);
// files = {ORIGINAL, QUANTIZED}; uses options.device, compare_k, compare_samples, manual_seed (-1 = 0), json,
// and memory_budget / profile / threads as convert does.
int run_compare(const std::vector<std::string>& files, const Options& options);
int run_decode(const std::vector<std::string>& files, const Options& options);

}  // namespace quantflow
