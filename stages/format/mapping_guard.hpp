// stages/format/mapping_guard.hpp: a read fault inside a file mapping becomes a recorded fault, not a crash.
//
// Reading a page of a mapping whose file was truncated below it, or whose storage returns an I/O error
// (a network or FUSE filesystem), raises SIGBUS in whatever thread touched it: a TBB worker, BLAS, the
// CUDA driver copying to the GPU. While a MappingGuard is alive for [base, base + size), a SIGBUS at an
// address inside that range is handled by mapping zero pages over the range from the faulting page to its end
// and recording the offset; the read resumes and sees zeros. The owner (MappedFile) then refuses to hand out more views and
// turns the recorded fault into an Error, and the conversion unwinds like any other failure: its temp file
// is removed, and in a batch only that file fails.
//
// Why not sigsetjmp/siglongjmp around the reads: the mapped pages are read deep inside TBB tasks, BLAS
// and the CUDA driver; jumping out of those frames skips destructors and leaves their locks held.
//
// The handler is installed once, on the first guard, for the whole process (SA_SIGINFO). A SIGBUS outside
// every guarded range goes to the handler that was installed before (or the default action: the process
// dies with SIGBUS as before). What the handler does is async-signal-safe: it reads and writes lock-free
// atomics in a fixed table (no allocation, no lock) and calls mmap(2), a plain system call on Linux.
#pragma once

#include <cstddef>
#include <cstdint>

namespace quantflow {

class MappingGuard {
public:
    // Registers [base, base + size). Throws Error when 1024 mappings are already guarded.
    MappingGuard(const std::byte* base, std::uint64_t size);
    // Unregisters; must run before the range is unmapped.
    ~MappingGuard();
    MappingGuard(const MappingGuard&) = delete;
    MappingGuard& operator=(const MappingGuard&) = delete;

    // Offset (from base) of the first byte whose read faulted, or -1 when no read has faulted.
    std::int64_t first_fault() const;

private:
    std::size_t slot_;
};

}  // namespace quantflow
