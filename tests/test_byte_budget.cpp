// The byte budget between the reader and the writer, from several threads (also run under ThreadSanitizer).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "pipeline/byte_budget.hpp"

using quantflow::ByteBudget;

TEST_CASE("byte budget: 4 threads acquiring and releasing never exceed the capacity") {
    constexpr std::uint64_t kCapacity = 100;
    ByteBudget budget(kCapacity);
    std::atomic<std::uint64_t> held{0};
    std::atomic<bool> over{false}, refused{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 2000; ++i) {
                const std::uint64_t bytes = 10 + static_cast<std::uint64_t>((i * 7 + t * 13) % 40);
                if (!budget.acquire(bytes)) {
                    refused = true;
                    return;
                }
                if (held.fetch_add(bytes) + bytes > kCapacity) over = true;
                held.fetch_sub(bytes);
                budget.release(bytes);
            }
        });
    for (auto& th : threads) th.join();
    CHECK_FALSE(refused.load());
    CHECK_FALSE(over.load());
    CHECK(budget.peak() <= kCapacity);
    CHECK(budget.peak() >= 10);
}

TEST_CASE("byte budget: a job larger than the capacity runs alone; cancel wakes a waiting reader") {
    ByteBudget budget(100);
    REQUIRE(budget.acquire(500));  // nothing in flight: admitted alone
    std::atomic<int> result{-1};
    std::thread reader([&] { result = budget.acquire(10) ? 1 : 0; });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(result.load() == -1);  // still waiting: 500 bytes in flight
    budget.cancel();
    reader.join();
    CHECK(result.load() == 0);
    CHECK(budget.peak() == 500);
}
