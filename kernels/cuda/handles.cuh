// kernels/cuda/handles.cuh: RAII for device memory, pinned host memory, streams and events.
// Move-only; nothing CUDA lives in a static (STYLE convention 4).
#pragma once

#include <cstddef>
#include <memory>
#include <utility>

#include "kernels/cuda/check.cuh"

namespace quantflow::cuda {

// The device current in this thread (0 when the runtime cannot say).
inline int current_device() noexcept {
    int d = 0;
    if (cudaGetDevice(&d) != cudaSuccess) d = 0;
    return d;
}

// Makes `device` current while it lives and restores the previous one. With several GPUs, a TBB worker may
// have served another GPU last: memory and handles are released with their own GPU current, and every backend
// entry point enters its GPU with one of these, so a job that a waiting thread runs in between (a host
// parallel_for lets it take other work) cannot leave the outer job on the wrong GPU. `Checked` throws when the
// device cannot be made current; the destructors' scopes are quiet.
class DeviceScope {
public:
    enum class Mode { Quiet, Checked };
    explicit DeviceScope(int device, Mode mode = Mode::Quiet) : previous_(current_device()) {
        if (device == previous_) return;
        const cudaError_t e = cudaSetDevice(device);
        changed_ = e == cudaSuccess;
        if (mode == Mode::Checked) QF_CUDA_CHECK(e);
    }
    ~DeviceScope() {
        if (changed_) cudaSetDevice(previous_);
    }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

private:
    int previous_;
    bool changed_ = false;
};

template <typename T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(std::size_t count) : count_(count), device_(current_device()) {
        if (count) QF_CUDA_CHECK(cudaMalloc(&ptr_, count * sizeof(T)));
    }
    // Stream-ordered (cudaMallocAsync / cudaFreeAsync on `stream`, the device's default pool): for a buffer used
    // only on that stream, which must outlive it. cudaFree waits for the whole device: with a layer per stream,
    // every buffer a layer freed stalled the other layers' work.
    DeviceBuffer(std::size_t count, cudaStream_t stream) : count_(count), device_(current_device()), stream_(stream) {
        if (count) QF_CUDA_CHECK(cudaMallocAsync(&ptr_, count * sizeof(T), stream));
    }
    ~DeviceBuffer() {
        if (!ptr_) return;
        const DeviceScope on(device_);
        if (stream_) cudaFreeAsync(ptr_, stream_);
        else cudaFree(ptr_);
    }
    DeviceBuffer(DeviceBuffer&& o) noexcept
        : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)), device_(o.device_), stream_(o.stream_) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(count_, o.count_);
        std::swap(device_, o.device_);
        std::swap(stream_, o.stream_);
        return *this;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    T* get() const { return ptr_; }
    std::size_t size() const { return count_; }

private:
    T* ptr_ = nullptr;
    std::size_t count_ = 0;
    int device_ = 0;
    cudaStream_t stream_ = nullptr;  // null: cudaMalloc / cudaFree
};

class Stream {
public:
    Stream() : device_(current_device()) { QF_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
    ~Stream() {
        if (!s_) return;
        const DeviceScope on(device_);
        cudaStreamDestroy(s_);
    }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return s_; }
    void sync() const { QF_CUDA_CHECK(cudaStreamSynchronize(s_)); }

private:
    cudaStream_t s_ = nullptr;
    int device_ = 0;
};

// Page-locked host memory: the staging ring and the loop-state mirrors (DMA without the driver's bounce copy).
template <typename T>
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    explicit PinnedBuffer(std::size_t count) : count_(count) {
        if (count) QF_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T), cudaHostAllocPortable));
    }
    ~PinnedBuffer() {
        if (ptr_) cudaFreeHost(ptr_);
    }
    PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
    PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(count_, o.count_);
        return *this;
    }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    T* get() const { return ptr_; }
    T& operator[](std::size_t i) const { return ptr_[i]; }
    std::size_t size() const { return count_; }

private:
    T* ptr_ = nullptr;
    std::size_t count_ = 0;
};

class Event {
public:
    Event() : device_(current_device()) { QF_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
    ~Event() {
        if (!e_) return;
        const DeviceScope on(device_);
        cudaEventDestroy(e_);
    }
    Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)), device_(o.device_) {}
    Event& operator=(Event&& o) noexcept {
        std::swap(e_, o.e_);
        std::swap(device_, o.device_);
        return *this;
    }
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    void record(cudaStream_t s) const { QF_CUDA_CHECK(cudaEventRecord(e_, s)); }
    void sync() const { QF_CUDA_CHECK(cudaEventSynchronize(e_)); }
    cudaEvent_t get() const { return e_; }

private:
    cudaEvent_t e_ = nullptr;
    int device_ = 0;
};

// Copies host -> device / device -> host on a stream and waits.
template <typename T>
void upload(DeviceBuffer<T>& dst, const T* src, std::size_t count, const Stream& s) {
    QF_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src, count * sizeof(T), cudaMemcpyHostToDevice, s.get()));
}
template <typename T>
void download(T* dst, const DeviceBuffer<T>& src, std::size_t count, const Stream& s) {
    QF_CUDA_CHECK(cudaMemcpyAsync(dst, src.get(), count * sizeof(T), cudaMemcpyDeviceToHost, s.get()));
}

}  // namespace quantflow::cuda
