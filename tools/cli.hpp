// tools/cli.hpp: the command line (Boost.Program_options) -> Options. Both spellings of every flag work
// (--block_size and --block-size): underscores in a flag's name are read as dashes.
#pragma once

#include <string>
#include <vector>

#include "pipeline/options.hpp"

namespace quantflow {

enum class Command { Convert, Plan, Inspect, Compare, Help, Version };

struct ParsedCommand {
    Command command = Command::Convert;
    Options options;
    std::vector<std::string> files;  // inspect's and compare's positional arguments
    std::string help_text;
};

// Throws Error(kUsage) with a one-line message on a bad command line.
ParsedCommand parse_command_line(int argc, char** argv);

}  // namespace quantflow
