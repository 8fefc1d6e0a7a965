#include "pipeline/devices.hpp"

#include <algorithm>

#include "kernels/error.hpp"

namespace quantflow {

DevicePool::DevicePool(std::vector<std::shared_ptr<Backend>> backends) {
    QF_EXPECT(!backends.empty(), "a run needs at least one device");
    for (auto& b : backends) {
        QF_EXPECT(b != nullptr, "a device pool was given no backend");
        Device d;
        d.name = b->name();
        d.backend = std::move(b);
        devices_.push_back(std::move(d));
    }
}

std::string DevicePool::names() const {
    std::string s;
    for (const auto& d : devices_) s += (s.empty() ? "" : ", ") + d.name;
    return s;
}

void DevicePool::set_budget(std::uint64_t per_device) {
    std::lock_guard lock(mutex_);
    budget_ = per_device;
    budget_set_ = true;
}

std::optional<std::size_t> DevicePool::acquire(std::uint64_t bytes, const std::atomic<bool>& stop) {
    std::unique_lock lock(mutex_);
    std::optional<std::size_t> pick;
    const auto choose = [&] {
        pick.reset();
        for (std::size_t i = 0; i < devices_.size(); ++i) {
            const Device& d = devices_[i];
            const bool fits = budget_ == 0 || d.in_flight == 0 || d.in_flight + bytes <= budget_;
            if (!fits) continue;
            if (!pick) {
                pick = i;
                continue;
            }
            const Device& best = devices_[*pick];
            if (d.in_flight < best.in_flight || (d.in_flight == best.in_flight && d.running < best.running)) pick = i;
        }
        return pick.has_value();
    };
    freed_.wait(lock, [&] { return stop.load() || choose(); });
    if (stop.load()) return std::nullopt;
    Device& d = devices_[*pick];
    d.in_flight += bytes;
    ++d.running;
    ++d.usage.jobs;
    d.usage.peak_bytes = std::max(d.usage.peak_bytes, d.in_flight);
    return pick;
}

void DevicePool::release(std::size_t device, std::uint64_t bytes) {
    {
        std::lock_guard lock(mutex_);
        Device& d = devices_.at(device);
        d.in_flight -= std::min(bytes, d.in_flight);
        if (d.running > 0) --d.running;
    }
    freed_.notify_all();
}

void DevicePool::wake() {
    { std::lock_guard lock(mutex_); }  // a waiter between its stop check and its wait sees the notify
    freed_.notify_all();
}

DevicePool::Usage DevicePool::usage(std::size_t device) const {
    std::lock_guard lock(mutex_);
    Usage u = devices_.at(device).usage;
    u.in_flight = devices_.at(device).in_flight;
    return u;
}

std::shared_ptr<DevicePool> make_device_pool(const std::string& device, const std::string& devices, std::string& why) {
    std::vector<std::shared_ptr<Backend>> backends;
    if (devices.empty()) {
        backends.push_back(make_backend(parse_device(device), why));
    } else {
        QF_EXPECT_USAGE(device == "auto", "--device " + device + " and --devices " + devices + " both given; use one of them");
        for (auto& b : make_backends(parse_device_list(devices), why)) backends.push_back(std::move(b));
    }
    return std::make_shared<DevicePool>(std::move(backends));
}

}  // namespace quantflow
