// tools/cli.hpp: the command line (Boost.Program_options) -> Options. Both spellings of every flag work
// (--block_size and --block-size): underscores in a flag's name are read as dashes.
#pragma once

#include <string>
#include <vector>

#include "pipeline/options.hpp"

namespace quantflow {

enum class Command { Convert, Batch, Plan, Inspect, Compare, Decode, Help, Version };

struct ParsedCommand {
    Command command = Command::Convert;
    Options options;
    std::vector<std::string> files;  // inspect's, compare's and batch's positional arguments
    std::string help_text;
    // Every option as given (key, original tokens): batch applies per-file overrides to these.
    std::vector<std::pair<std::string, std::vector<std::string>>> option_groups;
};

// Throws Error(kUsage) with a one-line message on a bad command line.
ParsedCommand parse_command_line(int argc, char** argv);

// The options of `base` with overrides applied: "--block-size=128" replaces any --block_size given, "--int8"
// adds a switch, "!--simple" removes one. Throws Error(kUsage) like the command line.
Options options_with_overrides(const ParsedCommand& base, const std::vector<std::string>& overrides);

}  // namespace quantflow
