#include "stages/format/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kernels/error.hpp"
#include "stages/format/mapping_guard.hpp"

namespace quantflow {
namespace {

std::uint64_t page_size() {
    static const auto size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

std::string errno_text() { return std::strerror(errno); }

FileIdentity identity_of(const struct stat& st) {
    return {static_cast<std::uint64_t>(st.st_size), static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
            static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw Error(path + ": cannot open: " + errno_text());
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
        const std::string why = errno_text();
        ::close(fd_);
        throw Error(path + ": cannot stat: " + why);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd_);
        throw Error(path + ": not a regular file");
    }
    opened_ = identity_of(st);
    // mmap of length 0 is EINVAL; an empty file simply has nothing to view.
    if (opened_.size == 0) return;
    void* base = ::mmap(nullptr, opened_.size, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (base == MAP_FAILED) {
        const std::string why = errno_text();
        ::close(fd_);
        throw Error(path + ": cannot map " + std::to_string(opened_.size) + " bytes: " + why);
    }
    base_ = static_cast<std::byte*>(base);
    try {
        guard_ = std::make_unique<MappingGuard>(base_, opened_.size);
    } catch (...) {
        ::munmap(base_, opened_.size);
        ::close(fd_);
        throw;
    }
    // Advice only: a failure costs speed, never correctness.
    ::madvise(base_, opened_.size, MADV_SEQUENTIAL);
}

MappedFile::~MappedFile() {
    guard_.reset();  // before the range can be reused by another mapping
    if (base_ != nullptr) ::munmap(base_, opened_.size);
    if (fd_ >= 0) ::close(fd_);
}

const std::byte* MappedFile::view(std::uint64_t offset, std::uint64_t length) const {
    const std::uint64_t size = opened_.size;
    // Written as two comparisons so that offset + length cannot wrap.
    if (offset > size || length > size - offset)
        throw Error(path_ + ": byte range at offset " + std::to_string(offset) + " of length " + std::to_string(length) +
                    " lies outside the " + std::to_string(size) + "-byte file");
    if (guard_ && guard_->first_fault() >= 0) check_unchanged();  // throws: the data read so far may be zeros
    return base_ == nullptr ? nullptr : base_ + offset;
}

void MappedFile::prefetch(std::uint64_t offset, std::uint64_t length) const {
    if (base_ == nullptr || offset >= opened_.size) return;
    const std::uint64_t end = length > opened_.size - offset ? opened_.size : offset + length;
    const std::uint64_t begin = offset / page_size() * page_size();
    ::madvise(base_ + begin, end - begin, MADV_WILLNEED);
}

void MappedFile::release(std::uint64_t offset, std::uint64_t length) const {
    if (base_ == nullptr || offset >= opened_.size) return;
    const std::uint64_t page = page_size();
    const std::uint64_t end = length > opened_.size - offset ? opened_.size : offset + length;
    // Only whole pages inside the range: a neighbouring tensor may still be reading the partial ones.
    const std::uint64_t first = (offset + page - 1) / page * page;
    const std::uint64_t last = end / page * page;
    if (first < last) ::madvise(base_ + first, last - first, MADV_DONTNEED);
}

void MappedFile::check_read_fault() const {
    const std::int64_t at = guard_ ? guard_->first_fault() : -1;
    if (at < 0) return;
    // The mapping only said "SIGBUS"; a read(2) of the same byte gets the OS's own error.
    char byte = 0;
    const ssize_t n = ::pread(fd_, &byte, 1, static_cast<off_t>(at));
    const std::string why = n < 0 ? errno_text() : n == 0 ? "the byte lies past the end of the file" : "a read of the mapped page failed (SIGBUS)";
    throw Error(path_ + ": input could not be read at byte " + std::to_string(at) + " while converting: " + why);
}

void MappedFile::check_unchanged(std::uint64_t size, std::int64_t mtime_ns) const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw Error(path_ + ": cannot stat the input while converting: " + errno_text());
    const FileIdentity now = identity_of(st);
    if (now.size != size)
        throw Error(path_ + ": input " + (now.size < size ? "shrank" : "grew") + " from " + std::to_string(size) + " to " +
                    std::to_string(now.size) + " bytes while converting");
    check_read_fault();
    if (now.mtime_ns != mtime_ns) throw Error(path_ + ": input was modified while converting (its modification time changed)");
    if (::stat(path_.c_str(), &st) != 0) throw Error(path_ + ": input was removed while converting: " + errno_text());
    if (static_cast<std::uint64_t>(st.st_dev) != now.device || static_cast<std::uint64_t>(st.st_ino) != now.inode)
        throw Error(path_ + ": input was replaced by another file while converting");
}

}  // namespace quantflow
