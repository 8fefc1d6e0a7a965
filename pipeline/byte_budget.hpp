// pipeline/byte_budget.hpp: bounds the bytes in flight between the reader and the writer.
//
// The reader thread acquire()s a job's bytes before handing it to the graph and the writer release()s
// them after the job is written. A job larger than the whole budget is admitted alone (when nothing else
// is in flight), so one huge tensor slows the run down instead of deadlocking it. cancel() wakes the
// reader when the graph fails, so it never waits for bytes that will not come back.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace quantflow {

class ByteBudget {
public:
    explicit ByteBudget(std::uint64_t capacity) : capacity_(capacity) {}
    // Blocks until `bytes` fit; false when cancelled.
    bool acquire(std::uint64_t bytes);
    void release(std::uint64_t bytes);
    void cancel();
    std::uint64_t peak() const;
    std::uint64_t capacity() const { return capacity_; }

private:
    const std::uint64_t capacity_;
    mutable std::mutex mutex_;
    std::condition_variable freed_;
    std::uint64_t in_flight_ = 0;
    std::uint64_t peak_ = 0;
    bool cancelled_ = false;
};

}  // namespace quantflow
