// stages/format/output_file.hpp: crash-safe output (notes: "Crash-safe output").
//
// The file is built as a hidden temp file in the destination directory
// (".NAME.qf-tmp.PID.RAND"), preallocated to its final size after a free-space check, written with pwrite
// at planned offsets from any thread, then fdatasync'ed, renamed over the final name and the directory
// fsync'ed. Until commit() succeeds nothing exists under the final name; the destructor of an uncommitted
// OutputFile removes the temp file, so errors and Ctrl-C (which unwind) leave nothing behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace quantflow {

class OutputFile {
public:
    // Throws Error (before creating anything) when the final name exists and !overwrite, when the
    // directory is missing or not writable, or when free space is below total_size + 16 MiB.
    OutputFile(std::string final_path, std::uint64_t total_size, bool overwrite);
    ~OutputFile();
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;

    // Thread-safe positional write; loops over short writes and EINTR. Throws Error with errno's text
    // (e.g. "No space left on device") naming the final path.
    void write_at(std::uint64_t offset, const void* data, std::size_t length);
    // Starts writing [offset, offset + length) back to disk now (sync_file_range, no wait), so the disk
    // works while later tensors compute and commit()'s fdatasync has little left to flush.
    void start_writeback(std::uint64_t offset, std::uint64_t length);
    // fdatasync, rename into place, fsync the directory. After this the destructor removes nothing.
    void commit();

    const std::string& temp_path() const { return temp_path_; }
    const std::string& final_path() const { return final_path_; }

private:
    std::string final_path_;
    std::string temp_path_;
    std::string dir_;
    std::uint64_t total_size_ = 0;
    int fd_ = -1;
    bool committed_ = false;
};

// Testing hook for fault injection: after `bytes` more bytes are written by any OutputFile, write_at
// fails as if the disk were full (ENOSPC). Negative disables. Also set by QF_FAULT_ENOSPC_AFTER.
void set_write_fault_after(long long bytes);

}  // namespace quantflow
