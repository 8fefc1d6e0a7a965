#include "stages/format/mapping_guard.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>

#include "kernels/error.hpp"

namespace quantflow {
namespace {

// One guarded range. `end` == 0 marks a free slot; the handler reads begin/end with acquire loads, so a
// range is only visible once both are stored.
struct Slot {
    std::atomic<std::uintptr_t> begin{0};
    std::atomic<std::uintptr_t> end{0};
    std::atomic<std::int64_t> fault{-1};
    std::atomic<bool> taken{false};
};
static_assert(std::atomic<std::uintptr_t>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free,
              "the SIGBUS handler may only touch lock-free atomics");

constexpr std::size_t kSlots = 1024;  // a batch runs at most 64 files at once; compare maps two
std::array<Slot, kSlots> g_slots;
std::uintptr_t g_page = 0;
struct sigaction g_previous {};

void pass_on(int sig, siginfo_t* info, void* context) {
    if (g_previous.sa_flags & SA_SIGINFO) {
        if (g_previous.sa_sigaction != nullptr) g_previous.sa_sigaction(sig, info, context);
        return;
    }
    if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
        g_previous.sa_handler(sig);
        return;
    }
    // Default action (a fault cannot be ignored: returning would fault again forever): returning re-executes
    // the faulting read, which now kills the process as before.
    signal(sig, SIG_DFL);
}

extern "C" void on_bus_error(int sig, siginfo_t* info, void* context) {
    const int saved_errno = errno;
    const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
    for (Slot& s : g_slots) {
        const std::uintptr_t begin = s.begin.load(std::memory_order_acquire);
        const std::uintptr_t end = s.end.load(std::memory_order_acquire);
        if (end == 0 || address < begin || address >= end) continue;
        // Zeros from the faulting page to the end of the range, in one mapping: the rest of the file is suspect
        // anyway, and one page per fault could split the mapping past vm.max_map_count on a large input.
        const std::uintptr_t page = address & ~(g_page - 1);
        const std::uintptr_t stop = (end + g_page - 1) & ~(g_page - 1);
        if (::mmap(reinterpret_cast<void*>(page), stop - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
            MAP_FAILED)
            break;
        std::int64_t none = -1;
        s.fault.compare_exchange_strong(none, static_cast<std::int64_t>(address - begin));
        errno = saved_errno;
        return;
    }
    errno = saved_errno;
    pass_on(sig, info, context);
}

void install_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
        struct sigaction action {};
        action.sa_sigaction = on_bus_error;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_SIGINFO;
        QF_EXPECT(::sigaction(SIGBUS, &action, &g_previous) == 0, "cannot install the SIGBUS handler for mapped inputs");
    });
}

}  // namespace

MappingGuard::MappingGuard(const std::byte* base, std::uint64_t size) : slot_(kSlots) {
    install_handler();
    for (std::size_t i = 0; i < kSlots && slot_ == kSlots; ++i) {
        bool free = false;
        if (g_slots[i].taken.compare_exchange_strong(free, true)) slot_ = i;
    }
    QF_EXPECT(slot_ < kSlots, "too many memory-mapped inputs open at once (" + std::to_string(kSlots) + ")");
    Slot& s = g_slots[slot_];
    s.fault.store(-1);
    s.begin.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
    s.end.store(reinterpret_cast<std::uintptr_t>(base) + size, std::memory_order_release);
}

MappingGuard::~MappingGuard() {
    Slot& s = g_slots[slot_];
    s.end.store(0, std::memory_order_release);
    s.begin.store(0, std::memory_order_release);
    s.taken.store(false);
}

std::int64_t MappingGuard::first_fault() const { return g_slots[slot_].fault.load(); }

}  // namespace quantflow
