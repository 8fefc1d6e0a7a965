// kernels/cuda/cuda_backend_class.cuh: the CUDA backend's class, shared by its two sources (private to
// kernels/cuda): cuda_backend.cu (memory, holds, the SVD, learned rounding, the factory) and
// cuda_backend_quantize.cu (round-to-nearest in every format, ConvRot's rotation, nvfp4's scale search and the
// bias-correction product). kernels/cuda/cuda_backend.cu's head comment describes the backend.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/backend.hpp"
#include "kernels/cuda/adam.cuh"
#include "kernels/cuda/exact_svd.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/cuda/rounding_work.cuh"
#include "kernels/cuda/staging.cuh"
#include "kernels/cuda/svd.cuh"
#include "kernels/dtype.hpp"
#include "kernels/learned_rounding.hpp"

namespace quantflow::cuda {

inline std::size_t weight_bytes(const TensorView& w) { return static_cast<std::size_t>(w.rows * w.cols) * static_cast<std::size_t>(dtype_bits(w.dtype) / 8); }

class CudaBackend;

// A weight kept on the device between the pipeline's stages (Backend::hold).
class CudaHold final : public WeightHold {
public:
    CudaHold(CudaBackend& backend, const void* key) : backend_(backend), key_(key) {}
    ~CudaHold() override;

private:
    CudaBackend& backend_;
    const void* key_;
};

class CudaBackend final : public Backend {
public:
    CudaBackend(int device, std::unique_ptr<Backend> host) : device_(device), host_(std::move(host)) {
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);  // fails here if the GPU cannot be used
    }

    std::string name() const override { return "cuda:" + std::to_string(device_); }

    void set_staging(std::uint64_t slab_bytes, int slabs) override;

    // Device memory of one layer in flight: the weight and its codes, plus the largest phase of learned
    // rounding (the SVD's float32 copy; AdamW/RAdam's two offset buffers and second
    // moment; the rounding-aware finish's first candidate buffer of n/16 + 1M moves with its selection: a value,
    // an index and the sort's copy of it per candidate, the kept pool twice and the leverage), the error in
    // double for the projections and the round-to-nearest codes kept for reset_codes. The finish's rounds
    // (move_rounds.cu, ~84 bytes per pool move) come after the candidate buffer is freed and are smaller. The host
    // keeps only the pool (finish_pool_size: max(64 Ki, n/128) moves, n/16 when thorough), its leverage, the
    // driver's two runs over it and at most as many chosen moves: 24 + 8 + 2 + 24 bytes per move, counted as 64 (it
    // was 144, which held thorough runs to fewer layers in flight than the memory allowed). A layer that runs on the host (host_fallback) has the host
    // backend's learned-rounding memory, and only its SVD on the device.
    LayerMemory layer_memory(const LayerWork& l) const override;

    std::string host_fallback(const LayerWork& l) const override;

    std::unique_ptr<WeightHold> hold(std::string_view name, const TensorView& w) override;

    void release(const void* key) noexcept {
        std::unique_ptr<Held> gone;
        std::lock_guard lock(held_mutex_);
        const auto it = held_.find(key);
        if (it == held_.end()) return;
        gone = std::move(it->second);
        held_.erase(it);
    }
    std::uint64_t device_memory() const override {
        cudaDeviceProp prop{};
        return cudaGetDeviceProperties(&prop, device_) == cudaSuccess ? prop.totalGlobalMem : 0;
    }

    std::vector<float> rotate_groups(std::string_view name, const TensorView& w, std::int64_t g, std::unique_ptr<WeightHold>* keep) override;

    QuantizedTensor quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) override;

    // float8_e5m2, mxfp8 and nvfp4 (quantize_blocks.cu): the tensor's amax (and NaN check) through cell_amax,
    // then one kernel; scales and codes as the CPU's quantize_cpu gives them.
    QuantizedTensor quantize_new_format(std::string_view name, const TensorView& w, const QuantSpec& spec);

    void residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y) override;

    LowRank top_k_svd(std::string_view name, const TensorView& w, const SvdSettings& settings) override;

    std::unique_ptr<RoundingWork> rounding_work(std::string_view name, const TensorView& w, const LowRank& basis,
                                                QuantizedTensor& q) override;

    // The driver over rounding_work(), or the host backend's learned rounding for the layers host_fallback
    // names (the plan prints them; the basis width is what the plan knows, as in layer_memory).
    RoundingStats learned_round(std::string_view name, const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                QuantizedTensor& q) override;

    // nvfp4's scale search on the device (quantize_blocks.cu), the CPU's bits: per-block errors summed per row
    // in block order, then the rows in order, on the host.
    double search_block_scales(std::string_view, const TensorView& w, QuantizedTensor& q) override;

    QualityMetrics measure(const TensorView& w, const QuantizedTensor& q, const LowRank* basis, const QualityInputs& inputs) override {
        return host_->measure(w, q, basis, inputs);
    }

private:
    struct Held {
        DeviceBuffer<unsigned char> bytes;
        cuda::DeviceWeight view;
    };

    cuda::StagingRing& staging() {
        std::lock_guard lock(staging_mutex_);
        if (!ring_) ring_ = std::make_unique<cuda::StagingRing>(slab_bytes_, slabs_);
        return *ring_;
    }

    // The held copy of w, or an upload for this call (through the staging ring, on s).
    DeviceWeightRef device_weight(const TensorView& w, const cuda::Stream& s) {
        {
            std::lock_guard lock(held_mutex_);
            const auto it = held_.find(w.data);
            if (it != held_.end() && it->second->view.rows == w.rows && it->second->view.cols == w.cols) return {{}, it->second->view};
        }
        DeviceWeightRef ref{DeviceBuffer<unsigned char>(weight_bytes(w), s.get()), {}};  // used on s only
        staging().upload(ref.owned.get(), w.data, ref.owned.size(), s);
        ref.view = {ref.owned.get(), w.dtype, w.rows, w.cols};
        return ref;
    }

    int device_;
    std::unique_ptr<Backend> host_;  // the reference backend: exact SVD, metrics, host_fallback layers
    std::mutex staging_mutex_;
    std::size_t slab_bytes_ = 64u << 20;
    int slabs_ = 4;
    std::unique_ptr<cuda::StagingRing> ring_;
    std::mutex held_mutex_;
    std::unordered_map<const void*, std::unique_ptr<Held>> held_;
    // Streams reused across SVDs (one per SVD in flight).
    struct SketchSlot {
        cuda::Stream stream;
    };
    struct SketchLease {
        explicit SketchLease(CudaBackend& b) : backend(b) {
            std::lock_guard lock(b.sketch_mutex_);
            if (!b.sketch_slots_.empty()) {
                slot = std::move(b.sketch_slots_.back());
                b.sketch_slots_.pop_back();
            }
            if (!slot) slot = std::make_unique<SketchSlot>();
        }
        ~SketchLease() {
            std::lock_guard lock(backend.sketch_mutex_);
            backend.sketch_slots_.push_back(std::move(slot));
        }
        CudaBackend& backend;
        std::unique_ptr<SketchSlot> slot;
    };
    std::mutex sketch_mutex_;
    std::vector<std::unique_ptr<SketchSlot>> sketch_slots_;
};

}  // namespace quantflow::cuda
