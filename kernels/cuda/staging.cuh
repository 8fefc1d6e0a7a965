// kernels/cuda/staging.cuh: the pinned staging ring between host memory (the input's mmap, the codes'
// vectors) and the device.
//
// Copies from pageable memory make the driver bounce every byte through its own small pinned buffer, one
// copy at a time. The ring holds `slabs` page-locked buffers of `slab_bytes` (the hardware profile's
// pinned_slab x pinned_slabs, so pinned memory is bounded and counted), shared by every job in flight: a
// copy splits into slabs; while the DMA engine moves one slab on the job's stream, the host thread fills
// the next one, and other jobs' kernels keep running. A slab is reused only after the event recorded
// behind its last copy has completed.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "kernels/cuda/handles.cuh"

namespace quantflow::cuda {

class StagingRing {
public:
    StagingRing(std::size_t slab_bytes, int slabs);
    // dst (device) <- src (host), enqueued on s; returns once src has been read (src may be freed then).
    void upload(void* dst, const void* src, std::size_t bytes, const Stream& s);
    // dst (host) <- src (device), after the work already enqueued on s; returns when dst holds the bytes.
    void download(void* dst, const void* src, std::size_t bytes, const Stream& s);
    std::size_t pinned_bytes() const { return slab_bytes_ * slabs_.size(); }

private:
    struct Slab {
        PinnedBuffer<unsigned char> bytes;
        Event done;  // recorded after the slab's last copy
    };
    int acquire();
    int try_acquire();  // -1 when none is free
    void release(int slab);

    std::size_t slab_bytes_;
    std::vector<Slab> slabs_;
    std::mutex mutex_;
    std::condition_variable freed_;
    std::deque<int> free_;
};

}  // namespace quantflow::cuda
