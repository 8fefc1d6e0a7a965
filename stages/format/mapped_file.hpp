// stages/format/mapped_file.hpp: read-only memory map of an input file (RAII).
//
// view() hands out pointers into the mapping; release() drops the resident pages of a consumed byte range
// (madvise MADV_DONTNEED on the whole pages inside it), so resident memory stays bounded while a model far
// larger than RAM streams through.
//
// The file must not change while it is mapped, and nothing relies on it not changing: a read of a page the
// file no longer has (truncated) or cannot deliver (I/O error) is caught by a MappingGuard (it reads zeros
// instead of killing the process with SIGBUS), after which view() throws; check_unchanged() compares the
// file under the path with the one mapped at open, so a caller can refuse to publish a result made from an
// input that changed, was replaced or failed to read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace quantflow {

class MappingGuard;

// What identifies the contents of a file on disk: its size, modification time, and which file it is.
struct FileIdentity {
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
};

class MappedFile {
public:
    // Maps the whole file read-only (MAP_PRIVATE, MADV_SEQUENTIAL). Throws Error naming the path and errno.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::string& path() const { return path_; }
    std::uint64_t size() const { return opened_.size; }
    // The file as it was when it was mapped.
    const FileIdentity& identity() const { return opened_; }
    // Pointer to byte `offset` of the file; [offset, offset + length) must lie inside the file. Throws the
    // error of check_unchanged() once a read of the mapping has faulted.
    const std::byte* view(std::uint64_t offset, std::uint64_t length) const;
    // Asks the kernel to start reading [offset, offset + length) ahead (MADV_WILLNEED); never fails.
    void prefetch(std::uint64_t offset, std::uint64_t length) const;
    // Drops resident pages fully inside [offset, offset + length). Safe to call from any thread.
    void release(std::uint64_t offset, std::uint64_t length) const;

    // Throws Error "PATH: input ... while converting" when a read of the mapping faulted, or when the file
    // under the path is no longer the one mapped at open with `size` bytes and modification time `mtime_ns`
    // (the values a plan was made from): it shrank or grew, was modified, was replaced by another file or
    // removed. The message names the numbers, or the OS error of the failed read.
    void check_unchanged(std::uint64_t size, std::int64_t mtime_ns) const;
    // The same against the file as it was at open.
    void check_unchanged() const { check_unchanged(opened_.size, opened_.mtime_ns); }

private:
    void check_read_fault() const;

    std::string path_;
    int fd_ = -1;
    std::byte* base_ = nullptr;
    FileIdentity opened_;
    std::unique_ptr<MappingGuard> guard_;
};

}  // namespace quantflow
