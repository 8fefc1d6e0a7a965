// kernels/error.hpp: the one exception type of quantflow.
//
// Contract: every failure a user can cause or meet (bad input file, bad flag, full disk, CUDA error)
// is thrown as quantflow::Error whose what() is ONE line naming the file, the tensor and the numbers.
// Library code never prints, exits or aborts; tools/main.cpp and the batch loop are the only catchers.
#pragma once

#include <stdexcept>
#include <string>

namespace quantflow {

// Process exit codes, documented in `quantflow --help`.
enum class ExitCode : int {
    kOk = 0,
    kFailed = 1,       // conversion failed (bad input, I/O error, numeric error)
    kUsage = 2,        // bad command line
    kSomeFailed = 3,   // batch: some files failed
    kInterrupted = 130 // SIGINT/SIGTERM
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, ExitCode code = ExitCode::kFailed)
        : std::runtime_error(message), code_(code) {}
    ExitCode code() const noexcept { return code_; }

private:
    ExitCode code_;
};

// Thrown by cooperative cancellation points after SIGINT/SIGTERM.
class Interrupted : public Error {
public:
    Interrupted() : Error("interrupted by signal; nothing was written under the output name", ExitCode::kInterrupted) {}
};

}  // namespace quantflow

// QF_EXPECT(cond, message-expression): throw Error(message) when cond is false. The message is only
// built on failure, so it may be expensive (string concatenation with numbers).
#define QF_EXPECT(cond, message)                                 \
    do {                                                         \
        if (!(cond)) throw ::quantflow::Error(message);          \
    } while (0)
// The same for a bad command-line value (exit code 2).
#define QF_EXPECT_USAGE(cond, message)                                                      \
    do {                                                                                    \
        if (!(cond)) throw ::quantflow::Error(message, ::quantflow::ExitCode::kUsage);      \
    } while (0)
