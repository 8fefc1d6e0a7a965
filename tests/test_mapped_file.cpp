// Finding 1 (issue 12): an input truncated, unreadable, modified, replaced or removed while it is mapped is one
// clean Error naming the file and what changed; a read of a vanished page is not a SIGBUS that kills the process.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/error.hpp"
#include "stages/format/mapped_file.hpp"
#include "tests/test_support.hpp"

using namespace quantflow;

namespace {

constexpr std::uint64_t kFileBytes = 64 * 1024;

std::string make_file(const std::string& dir, const std::string& name, char fill = 'x') {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary) << std::string(kFileBytes, fill);
    return path;
}

// A read the compiler cannot drop: the byte at `offset` of the mapping.
char read_byte(const MappedFile& f, std::uint64_t offset) {
    const volatile char* p = reinterpret_cast<const volatile char*>(f.view(0, f.size()));
    return p[offset];
}

void set_mtime_seconds_ago(const std::string& path, int seconds) {
    struct timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= seconds;
    times[1] = times[0];
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
}

}  // namespace

TEST_CASE("finding 1: input truncated during conversion: the read of a vanished page is zeros, not SIGBUS; one line names both sizes") {
    const std::string dir = qftest::temp_dir("mapped_truncated");
    const std::string path = make_file(dir, "in.safetensors");
    const MappedFile f(path);
    CHECK(read_byte(f, 40000) == 'x');
    f.check_unchanged();  // nothing changed yet
    REQUIRE(::truncate(path.c_str(), 8192) == 0);
    CHECK(read_byte(f, 100) == 'x');    // still inside the file
    CHECK(read_byte(f, 40000) == '\0');  // past the new end: SIGBUS without the guard
    const std::string expected = path + ": input shrank from 65536 to 8192 bytes while converting";
    CHECK_THROWS_WITH_AS(f.check_unchanged(), expected.c_str(), Error);
    CHECK_THROWS_WITH_AS(f.view(0, 16), expected.c_str(), Error);  // no more views once a read faulted
}

TEST_CASE("finding 1: input unreadable during conversion: a faulted read with the size restored still fails, naming the byte") {
    const std::string dir = qftest::temp_dir("mapped_fault_same_size");
    const std::string path = make_file(dir, "in.safetensors");
    const MappedFile f(path);
    REQUIRE(::truncate(path.c_str(), 4096) == 0);
    CHECK(read_byte(f, 50000) == '\0');
    REQUIRE(::truncate(path.c_str(), static_cast<off_t>(kFileBytes)) == 0);  // the same size again, a hole now
    set_mtime_seconds_ago(path, 0);
    CHECK_THROWS_WITH_AS(f.check_unchanged(kFileBytes, f.identity().mtime_ns),
                         (path + ": input could not be read at byte 50000 while converting: a read of the mapped page failed (SIGBUS)").c_str(),
                         Error);
}

TEST_CASE("finding 1: input modified during conversion (same size, new mtime) is refused") {
    const std::string dir = qftest::temp_dir("mapped_modified");
    const std::string path = make_file(dir, "in.safetensors");
    set_mtime_seconds_ago(path, 100);
    const MappedFile f(path);
    {
        std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(1000);
        io << "changed";
    }
    CHECK_THROWS_WITH_AS(f.check_unchanged(),
                         (path + ": input was modified while converting (its modification time changed)").c_str(), Error);
    // Against a plan made from an older header read (another size) the size is what is reported.
    CHECK_THROWS_WITH_AS(f.check_unchanged(kFileBytes - 8, 0),
                         (path + ": input grew from 65528 to 65536 bytes while converting").c_str(), Error);
}

TEST_CASE("finding 1: input replaced during conversion (another file renamed over its name) is refused") {
    const std::string dir = qftest::temp_dir("mapped_replaced");
    const std::string path = make_file(dir, "in.safetensors");
    const MappedFile f(path);
    const std::string other = make_file(dir, "other.safetensors", 'y');
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    struct timespec same[2] = {st.st_atim, st.st_mtim};  // same size and mtime: only the inode differs
    REQUIRE(::utimensat(AT_FDCWD, other.c_str(), same, 0) == 0);
    std::filesystem::rename(other, path);
    CHECK(read_byte(f, 10) == 'x');  // the mapping still shows the old file
    CHECK_THROWS_WITH_AS(f.check_unchanged(), (path + ": input was replaced by another file while converting").c_str(), Error);
}

TEST_CASE("finding 1: input removed during conversion is refused with the OS error") {
    const std::string dir = qftest::temp_dir("mapped_removed");
    const std::string path = make_file(dir, "in.safetensors");
    const MappedFile f(path);
    std::filesystem::remove(path);
    CHECK_THROWS_WITH_AS(f.check_unchanged(), (path + ": input was removed while converting: No such file or directory").c_str(), Error);
}

TEST_CASE("finding 1: a SIGBUS outside every mapped input still kills the process (the guard is not a blanket catch)") {
    const std::string dir = qftest::temp_dir("mapped_foreign_sigbus");
    const std::string path = make_file(dir, "in.safetensors");
    const std::string raw = make_file(dir, "raw.bin");
    const MappedFile guarded(path);  // installs the handler in this process (and so in the child)
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const int fd = ::open(raw.c_str(), O_RDONLY);
        void* p = ::mmap(nullptr, kFileBytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED || ::ftruncate(::open(raw.c_str(), O_RDWR), 0) != 0) ::_exit(2);
        const volatile char c = static_cast<const volatile char*>(p)[20000];
        ::_exit(c == 0 ? 3 : 4);  // reaching this line means the fault was swallowed
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    const bool killed_by_sigbus = WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizer's own SIGBUS handler (the one installed before ours) reports, then exits or aborts.
    const bool sanitizer_report = (WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT) ||
                                  (WIFEXITED(status) && WEXITSTATUS(status) != 2 && WEXITSTATUS(status) != 3 && WEXITSTATUS(status) != 4);
    CHECK((killed_by_sigbus || sanitizer_report));
#else
    CHECK(killed_by_sigbus);
#endif
}

TEST_CASE("finding 1: a 1 GiB input truncated to nothing and read on every other page faults once, not per page") {
    // Zeroing page by page would split the mapping into 131072 pieces, past vm.max_map_count (65530 by default).
    const std::string dir = qftest::temp_dir("mapped_large");
    const std::string path = dir + "/sparse.safetensors";
    constexpr std::uint64_t kLarge = 1ull << 30;
    std::ofstream(path).close();
    REQUIRE(::truncate(path.c_str(), static_cast<off_t>(kLarge)) == 0);  // sparse: no disk used
    const MappedFile f(path);
    REQUIRE(::truncate(path.c_str(), 0) == 0);
    const volatile char* p = reinterpret_cast<const volatile char*>(f.view(0, kLarge));
    unsigned sum = 0;
    for (std::uint64_t at = kLarge - 4096; at >= 8192; at -= 8192) sum += static_cast<unsigned char>(p[at]);
    CHECK(sum == 0);
    CHECK_THROWS_WITH_AS(f.check_unchanged(), (path + ": input shrank from 1073741824 to 0 bytes while converting").c_str(), Error);
    std::filesystem::remove(path);
}

TEST_CASE("finding 1: many inputs mapped at once are each guarded; a fault in one leaves the others clean") {
    const std::string dir = qftest::temp_dir("mapped_many");
    std::vector<std::unique_ptr<MappedFile>> files;
    for (int i = 0; i < 8; ++i) files.push_back(std::make_unique<MappedFile>(make_file(dir, "in" + std::to_string(i))));
    REQUIRE(::truncate((dir + "/in5").c_str(), 0) == 0);
    for (int i = 0; i < 8; ++i) CHECK(read_byte(*files[i], 30000) == (i == 5 ? '\0' : 'x'));
    for (int i = 0; i < 8; ++i) {
        if (i == 5) CHECK_THROWS_AS(files[i]->check_unchanged(), Error);
        else files[i]->check_unchanged();
    }
    files.clear();  // unregisters every range; a new mapping may reuse a slot and starts clean
    const MappedFile again(make_file(dir, "again"));
    CHECK(read_byte(again, 30000) == 'x');
    again.check_unchanged();
}
