// stages/format/output_file.hpp: crash-safe output (notes: "Crash-safe output").
//
// The file is built as a hidden temp file in the destination directory
// (".NAME.qf-tmp.PID.RAND"), preallocated to its final size after a free-space check, written with pwrite
// at planned offsets from any thread, then fdatasync'ed, renamed over the final name and the directory
// fsync'ed. Until commit() succeeds nothing exists under the final name; the destructor of an uncommitted
// OutputFile removes the temp file, so errors and Ctrl-C (which unwind) leave nothing behind.
//
// Every OS error (ENOSPC, EIO from write or fdatasync, EROFS or EACCES from a read-only directory) is thrown
// as one Error line naming the final path and the OS's text.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace quantflow {

// Fault injection for tests: one step of an OutputFile fails with an OS error, exactly as if the kernel had
// returned it. Only code that builds the OutputFile can set it (tests, through the constructor or
// Options::output_fault); there is no flag or environment variable.
struct InjectedFault {
    enum class Step { None, Write, Sync };
    Step step = Step::None;
    int error = 0;                  // the errno value to fail with: ENOSPC, EIO, ...
    std::uint64_t after_bytes = 0;  // Write: every write that would take the bytes written past this fails
};

class OutputFile {
public:
    // Throws Error (before creating anything) when the final name exists and !overwrite, when the
    // directory is missing or not writable, or when free space is below total_size + 16 MiB.
    OutputFile(std::string final_path, std::uint64_t total_size, bool overwrite, InjectedFault fault = {});
    ~OutputFile();
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;

    // Thread-safe positional write; loops over short writes and EINTR. Throws Error with errno's text
    // (e.g. "No space left on device") naming the final path.
    void write_at(std::uint64_t offset, const void* data, std::size_t length);
    // Starts writing [offset, offset + length) back to disk now (sync_file_range, no wait), so the disk
    // works while later tensors compute and commit()'s fdatasync has little left to flush.
    void start_writeback(std::uint64_t offset, std::uint64_t length);
    // fdatasync and close: the bytes are on disk, nothing is under the final name yet. Called by commit()
    // when not called before; a caller calls it first to check something (the input) after the data is safe
    // and right before the rename.
    void sync();
    // sync() if needed, rename into place, fsync the directory. After this the destructor removes nothing.
    void commit();

    const std::string& temp_path() const { return temp_path_; }
    const std::string& final_path() const { return final_path_; }

private:
    std::string final_path_;
    std::string temp_path_;
    std::string dir_;
    std::uint64_t total_size_ = 0;
    int fd_ = -1;
    bool synced_ = false;
    bool committed_ = false;
    InjectedFault fault_;
    std::atomic<std::uint64_t> written_{0};  // counted only while a write fault is injected
};

}  // namespace quantflow
