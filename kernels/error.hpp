// kernels/error.hpp: the one exception type of quantflow.
//
// Contract: every failure a user can cause or meet (bad input file, bad flag, full disk, CUDA error)
// is thrown as quantflow::Error whose what() is ONE line naming the file, the tensor and the numbers.
// Library code never prints, exits or aborts; tools/main.cpp and the batch loop are the only catchers.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace quantflow {

// Process exit codes, documented in `quantflow --help`.
enum class ExitCode : int {
    kOk = 0,
    kFailed = 1,       // conversion failed (bad input, I/O error, numeric error)
    kUsage = 2,        // bad command line
    kSomeFailed = 3,   // batch: some files failed
    kInterrupted = 130 // SIGINT/SIGTERM
};

// Messages quote user data (JSON keys and strings, sizes, paths) that may hold control characters; each one
// becomes \xNN so that what() stays one line whatever the input (found by fuzz/fuzz_profiles).
inline std::string one_line(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (const char c : text) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u != 0x7f) {
            out += c;
        } else {
            out += "\\x";
            out += kHex[u >> 4];
            out += kHex[u & 15];
        }
    }
    return out;
}

class Error : public std::runtime_error {
public:
    // `message` is stored through one_line().
    explicit Error(const std::string& message, ExitCode code = ExitCode::kFailed)
        : std::runtime_error(one_line(message)), code_(code) {}
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
