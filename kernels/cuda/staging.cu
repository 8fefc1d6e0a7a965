#include "kernels/cuda/staging.cuh"

#include <algorithm>
#include <cstring>

namespace quantflow::cuda {

StagingRing::StagingRing(std::size_t slab_bytes, int slabs) : slab_bytes_(std::max<std::size_t>(slab_bytes, 1 << 20)) {
    const int count = std::max(slabs, 2);
    slabs_.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
        slabs_.push_back({PinnedBuffer<unsigned char>(slab_bytes_), Event()});
        free_.push_back(i);
    }
}

int StagingRing::acquire() {
    std::unique_lock lock(mutex_);
    freed_.wait(lock, [&] { return !free_.empty(); });
    const int slab = free_.front();
    free_.pop_front();
    return slab;
}

int StagingRing::try_acquire() {
    std::lock_guard lock(mutex_);
    if (free_.empty()) return -1;
    const int slab = free_.front();
    free_.pop_front();
    return slab;
}

void StagingRing::release(int slab) {
    {
        std::lock_guard lock(mutex_);
        free_.push_back(slab);
    }
    freed_.notify_one();
}

void StagingRing::upload(void* dst, const void* src, std::size_t bytes, const Stream& s) {
    auto* out = static_cast<unsigned char*>(dst);
    const auto* in = static_cast<const unsigned char*>(src);
    for (std::size_t at = 0; at < bytes; at += slab_bytes_) {
        const std::size_t n = std::min(slab_bytes_, bytes - at);
        const int i = acquire();
        Slab& slab = slabs_[static_cast<std::size_t>(i)];
        try {
            slab.done.sync();  // its previous copy (any job's) has left the slab
            std::memcpy(slab.bytes.get(), in + at, n);
            QF_CUDA_CHECK(cudaMemcpyAsync(out + at, slab.bytes.get(), n, cudaMemcpyHostToDevice, s.get()));
            slab.done.record(s.get());
        } catch (...) {
            release(i);
            throw;
        }
        release(i);  // the next user waits for `done` before touching it
    }
}

void StagingRing::download(void* dst, const void* src, std::size_t bytes, const Stream& s) {
    auto* out = static_cast<unsigned char*>(dst);
    const auto* in = static_cast<const unsigned char*>(src);
    // Two slabs in flight: the device copies slab b while the host empties slab a.
    struct InFlight {
        int slab;
        std::size_t at, n;
    };
    std::deque<InFlight> flight;
    const auto drain = [&] {
        const InFlight f = flight.front();
        flight.pop_front();
        Slab& slab = slabs_[static_cast<std::size_t>(f.slab)];
        try {
            slab.done.sync();
            std::memcpy(out + f.at, slab.bytes.get(), f.n);
        } catch (...) {
            release(f.slab);
            throw;
        }
        release(f.slab);
    };
    try {
        for (std::size_t at = 0; at < bytes; at += slab_bytes_) {
            const std::size_t n = std::min(slab_bytes_, bytes - at);
            if (flight.size() == 2) drain();
            // Never wait for a slab while holding one (jobs holding one each would wait for each other).
            int i = flight.empty() ? acquire() : try_acquire();
            if (i < 0) {
                drain();
                i = acquire();
            }
            flight.push_back({i, at, n});
            Slab& slab = slabs_[static_cast<std::size_t>(i)];
            slab.done.sync();
            QF_CUDA_CHECK(cudaMemcpyAsync(slab.bytes.get(), in + at, n, cudaMemcpyDeviceToHost, s.get()));
            slab.done.record(s.get());
        }
        while (!flight.empty()) drain();
    } catch (...) {
        for (const InFlight& f : flight) {
            cudaEventSynchronize(slabs_[static_cast<std::size_t>(f.slab)].done.get());
            release(f.slab);
        }
        throw;
    }
}

}  // namespace quantflow::cuda
