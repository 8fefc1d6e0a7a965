#include "stages/format/output_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "kernels/error.hpp"
#include "kernels/units.hpp"

namespace quantflow {
namespace {

constexpr std::uint64_t kSpaceMargin = 16ull << 20;

std::string errno_text() { return std::strerror(errno); }

std::string directory_of(const std::string& path) {
    const auto parent = std::filesystem::path(path).parent_path();
    return parent.empty() ? "." : parent.string();
}

}  // namespace

OutputFile::OutputFile(std::string final_path, std::uint64_t total_size, bool overwrite, InjectedFault fault)
    : final_path_(std::move(final_path)), dir_(directory_of(final_path_)), total_size_(total_size), fault_(fault) {
    struct stat st {};
    QF_EXPECT(::stat(dir_.c_str(), &st) == 0 && S_ISDIR(st.st_mode),
              final_path_ + ": output directory '" + dir_ + "' does not exist");
    if (!overwrite && ::stat(final_path_.c_str(), &st) == 0)
        throw Error(final_path_ + ": output file exists; pass --overwrite to replace it", ExitCode::kUsage);
    struct statvfs fs {};
    if (::statvfs(dir_.c_str(), &fs) == 0) {
        const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
        QF_EXPECT(free_bytes >= total_size_ + kSpaceMargin,
                  final_path_ + ": not enough free space in '" + dir_ + "': need " + format_size(total_size_ + kSpaceMargin) +
                      " (output " + format_size(total_size_) + " + 16 MiB margin), " + format_size(free_bytes) + " free");
    }
    std::random_device rd;
    const auto name = std::filesystem::path(final_path_).filename().string();
    for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
        temp_path_ = dir_ + "/." + name + ".qf-tmp." + std::to_string(::getpid()) + "." + std::to_string(rd() % 1000000);
        fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd_ < 0 && errno != EEXIST) break;
    }
    QF_EXPECT(fd_ >= 0, final_path_ + ": cannot create temp file in '" + dir_ + "': " + errno_text());
    if (total_size_ > 0 && ::fallocate(fd_, 0, 0, static_cast<off_t>(total_size_)) != 0) {
        const int err = errno;
        // Filesystems without fallocate (some NFS/FUSE) get a sparse file; ENOSPC is a real answer.
        if ((err != EOPNOTSUPP && err != ENOSYS) || ::ftruncate(fd_, static_cast<off_t>(total_size_)) != 0) {
            ::close(fd_);
            ::unlink(temp_path_.c_str());
            fd_ = -1;
            throw Error(final_path_ + ": cannot reserve " + format_size(total_size_) + ": " + std::strerror(err));
        }
    }
}

OutputFile::~OutputFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void OutputFile::write_at(std::uint64_t offset, const void* data, std::size_t length) {
    QF_EXPECT(offset + length <= total_size_, final_path_ + ": internal: write of " + std::to_string(length) +
                                                  " bytes at " + std::to_string(offset) + " past the planned size " +
                                                  std::to_string(total_size_));
    const auto* p = static_cast<const char*>(data);
    while (length > 0) {
        ssize_t n = 0;
        if (fault_.step == InjectedFault::Step::Write && written_.fetch_add(length) + length > fault_.after_bytes) {
            n = -1;
            errno = fault_.error;
        } else {
            n = ::pwrite(fd_, p, length, static_cast<off_t>(offset));
        }
        if (n < 0 && errno == EINTR) continue;
        QF_EXPECT(n > 0, final_path_ + ": write of " + std::to_string(length) + " bytes at offset " + std::to_string(offset) +
                             " failed: " + (n < 0 ? errno_text() : std::string("no progress")));
        p += n;
        offset += static_cast<std::uint64_t>(n);
        length -= static_cast<std::size_t>(n);
    }
}

void OutputFile::start_writeback(std::uint64_t offset, std::uint64_t length) {
    ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);  // advice only
}

void OutputFile::sync() {
    if (synced_) return;
    int rc = ::fdatasync(fd_);
    if (fault_.step == InjectedFault::Step::Sync) {
        rc = -1;
        errno = fault_.error;
    }
    QF_EXPECT(rc == 0, final_path_ + ": fdatasync failed: " + errno_text());
    // A failed close after a successful fdatasync loses nothing, but NFS reports late write errors here.
    const int closed = ::close(fd_);
    fd_ = -1;
    QF_EXPECT(closed == 0, final_path_ + ": close failed: " + errno_text());
    synced_ = true;
}

void OutputFile::commit() {
    sync();
    QF_EXPECT(::rename(temp_path_.c_str(), final_path_.c_str()) == 0,
              final_path_ + ": cannot rename temp file into place: " + errno_text());
    committed_ = true;
    const int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        ::fsync(dir_fd);  // durability of the new name; the data itself is already synced
        ::close(dir_fd);
    }
}

}  // namespace quantflow
