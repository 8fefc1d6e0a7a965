#include "stages/format/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kernels/error.hpp"

namespace quantflow {
namespace {

std::uint64_t page_size() {
    static const auto size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    return size;
}

std::string errno_text() { return std::strerror(errno); }

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
    size_ = static_cast<std::uint64_t>(st.st_size);
    // mmap of length 0 is EINVAL; an empty file simply has nothing to view.
    if (size_ == 0) return;
    void* base = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (base == MAP_FAILED) {
        const std::string why = errno_text();
        ::close(fd_);
        throw Error(path + ": cannot map " + std::to_string(size_) + " bytes: " + why);
    }
    base_ = static_cast<std::byte*>(base);
    // Advice only: a failure costs speed, never correctness.
    ::madvise(base_, size_, MADV_SEQUENTIAL);
}

MappedFile::~MappedFile() {
    if (base_ != nullptr) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
}

const std::byte* MappedFile::view(std::uint64_t offset, std::uint64_t length) const {
    // Written as two comparisons so that offset + length cannot wrap.
    if (offset > size_ || length > size_ - offset)
        throw Error(path_ + ": byte range at offset " + std::to_string(offset) + " of length " + std::to_string(length) +
                    " lies outside the " + std::to_string(size_) + "-byte file");
    return base_ == nullptr ? nullptr : base_ + offset;
}

void MappedFile::prefetch(std::uint64_t offset, std::uint64_t length) const {
    if (base_ == nullptr || offset >= size_) return;
    const std::uint64_t end = length > size_ - offset ? size_ : offset + length;
    const std::uint64_t begin = offset / page_size() * page_size();
    ::madvise(base_ + begin, end - begin, MADV_WILLNEED);
}

void MappedFile::release(std::uint64_t offset, std::uint64_t length) const {
    if (base_ == nullptr || offset >= size_) return;
    const std::uint64_t page = page_size();
    const std::uint64_t end = length > size_ - offset ? size_ : offset + length;
    // Only whole pages inside the range: a neighbouring tensor may still be reading the partial ones.
    const std::uint64_t first = (offset + page - 1) / page * page;
    const std::uint64_t last = end / page * page;
    if (first < last) ::madvise(base_ + first, last - first, MADV_DONTNEED);
}

}  // namespace quantflow
