// stages/format/mapped_file.hpp: read-only memory map of an input file (RAII).
//
// view() hands out pointers into the mapping; release() drops the resident pages of a consumed byte range
// (madvise MADV_DONTNEED on the whole pages inside it), so resident memory stays bounded while a model far
// larger than RAM streams through. The file is treated as immutable: its size is checked at open.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace quantflow {

class MappedFile {
public:
    // Maps the whole file read-only (MAP_PRIVATE, MADV_SEQUENTIAL). Throws Error naming the path and errno.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::string& path() const { return path_; }
    std::uint64_t size() const { return size_; }
    // Pointer to byte `offset` of the file; [offset, offset + length) must lie inside the file.
    const std::byte* view(std::uint64_t offset, std::uint64_t length) const;
    // Asks the kernel to start reading [offset, offset + length) ahead (MADV_WILLNEED); never fails.
    void prefetch(std::uint64_t offset, std::uint64_t length) const;
    // Drops resident pages fully inside [offset, offset + length). Safe to call from any thread.
    void release(std::uint64_t offset, std::uint64_t length) const;

private:
    std::string path_;
    int fd_ = -1;
    std::byte* base_ = nullptr;
    std::uint64_t size_ = 0;
};

}  // namespace quantflow
