// pipeline/devices.hpp: the devices of a run (issue 13): one backend per GPU, each with its own budget of
// accelerator memory, shared by every file a batch converts at the same time.
//
// The reader thread of each conversion acquire()s a layer's device bytes before the layer enters the graph;
// the pool charges them to the device with the most free budget, and that device's backend computes every
// stage of the layer. Results never depend on the device (each layer's numbers come from its name and the
// seed, and the kernels are deterministic), so the output bytes are the same on 1 or N devices.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "stages/messages.hpp"

namespace quantflow {

class DevicePool {
public:
    // At least one backend; all of one kind (the plan counts layer memory with the first).
    explicit DevicePool(std::vector<std::shared_ptr<Backend>> backends);
    DevicePool(const DevicePool&) = delete;
    DevicePool& operator=(const DevicePool&) = delete;

    std::size_t size() const { return devices_.size(); }
    Backend& backend(std::size_t device) const { return *devices_.at(device).backend; }
    const std::string& name(std::size_t device) const { return devices_.at(device).name; }
    // "cuda:0, cuda:1".
    std::string names() const;

    // Each device's budget of accelerator bytes in flight; 0 (no accelerator) only balances the job counts.
    // Set before the first acquire (prepare_conversion does it once per pool).
    void set_budget(std::uint64_t per_device);
    std::uint64_t budget() const { return budget_; }
    bool budget_set() const { return budget_set_; }

    // Blocks until a device has room for `bytes`, charges them to the device with the most free budget (the
    // fewest jobs in flight on a tie, then the lowest index) and returns it. A job larger than a whole
    // budget waits for an idle device. nullopt once `stop` is set (whoever sets it calls wake()).
    std::optional<std::size_t> acquire(std::uint64_t bytes, const std::atomic<bool>& stop);
    void release(std::size_t device, std::uint64_t bytes);
    void wake();

    struct Usage {
        std::uint64_t peak_bytes = 0;  // most bytes in flight at once
        std::size_t jobs = 0;          // layers handed to the device so far
        std::uint64_t in_flight = 0;   // bytes charged now
    };
    Usage usage(std::size_t device) const;

private:
    struct Device {
        std::shared_ptr<Backend> backend;
        std::string name;
        std::uint64_t in_flight = 0;
        std::size_t running = 0;
        Usage usage;
    };
    std::vector<Device> devices_;
    std::uint64_t budget_ = 0;
    bool budget_set_ = false;
    mutable std::mutex mutex_;
    std::condition_variable freed_;
};

// A job's charge on one device of a pool, released when it is dropped.
class DeviceLease final : public JobLease {
public:
    DeviceLease(DevicePool& pool, std::size_t device, std::uint64_t bytes) : pool_(pool), device_(device), bytes_(bytes) {}
    ~DeviceLease() override { pool_.release(device_, bytes_); }

private:
    DevicePool& pool_;
    std::size_t device_;
    std::uint64_t bytes_;
};

// The devices `--devices` names (or `--device`'s one when `devices` is empty): one backend each. `why`
// receives the line `plan` and `convert` print ("devices: cuda:0 (...), cuda:1 (...)").
std::shared_ptr<DevicePool> make_device_pool(const std::string& device, const std::string& devices, std::string& why);

}  // namespace quantflow
