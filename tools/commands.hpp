// tools/commands.hpp: one function per subcommand; each prints to stdout/stderr and returns an exit code.
#pragma once

#include <string>
#include <vector>

#include "pipeline/options.hpp"

namespace quantflow {

int run_convert(Options options);
int run_plan(Options options);
int run_inspect(const std::vector<std::string>& files, bool json);
// files = {ORIGINAL, QUANTIZED}; uses options.device, compare_k, compare_samples, manual_seed (-1 = 0), json.
int run_compare(const std::vector<std::string>& files, const Options& options);

}  // namespace quantflow
