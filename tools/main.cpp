// quantflow: subcommand dispatch and the one place errors become a stderr line and an exit code.
#include <csignal>
#include <cstdio>
#include <exception>

#include "kernels/error.hpp"
#include "tools/cli.hpp"
#include "tools/commands.hpp"

namespace {

extern "C" void on_signal(int) { quantflow::signal_cancel_flag().store(true); }

void install_signal_handlers() {
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills at once
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
}

int dispatch(int argc, char** argv) {
    using quantflow::Command;
    auto parsed = quantflow::parse_command_line(argc, argv);
    switch (parsed.command) {
        case Command::Help: std::fputs(parsed.help_text.c_str(), stdout); return 0;
        case Command::Version: std::puts("quantflow " QF_VERSION); return 0;
        case Command::Inspect: return quantflow::run_inspect(parsed.files, parsed.options.json);
        case Command::Compare: return quantflow::run_compare(parsed.files, parsed.options);
        case Command::Decode: return quantflow::run_decode(parsed.files, parsed.options);
        case Command::Plan: return quantflow::run_plan(std::move(parsed.options));
        case Command::Convert: return quantflow::run_convert(std::move(parsed.options));
        case Command::Batch: return quantflow::run_batch(parsed);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    install_signal_handlers();
    try {
        return dispatch(argc, argv);
    } catch (const quantflow::Error& e) {
        std::fprintf(stderr, "quantflow: error: %s\n", e.what());
        return static_cast<int>(e.code());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "quantflow: internal error: %s\n", e.what());
        return static_cast<int>(quantflow::ExitCode::kFailed);
    }
}
