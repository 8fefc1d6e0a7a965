#include "pipeline/byte_budget.hpp"

#include <algorithm>

namespace quantflow {

bool ByteBudget::acquire(std::uint64_t bytes) {
    std::unique_lock lock(mutex_);
    freed_.wait(lock, [&] { return cancelled_ || in_flight_ == 0 || in_flight_ + bytes <= capacity_; });
    if (cancelled_) return false;
    in_flight_ += bytes;
    peak_ = std::max(peak_, in_flight_);
    return true;
}

void ByteBudget::release(std::uint64_t bytes) {
    {
        std::lock_guard lock(mutex_);
        in_flight_ -= std::min(bytes, in_flight_);
    }
    freed_.notify_all();
}

void ByteBudget::cancel() {
    {
        std::lock_guard lock(mutex_);
        cancelled_ = true;
    }
    freed_.notify_all();
}

std::uint64_t ByteBudget::peak() const {
    std::lock_guard lock(mutex_);
    return peak_;
}

}  // namespace quantflow
