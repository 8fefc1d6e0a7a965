// kernels/backend.hpp: what a compute backend can do. The CPU backend is the reference; a CUDA backend
// (issue 4) implements the same interface and is checked against it.
//
// Contract for every method:
//  - inputs are row-major 2-D weights in their file dtype (F32/F16/BF16);
//  - results are deterministic: the same inputs give the same bits whatever the thread count;
//  - failures (NaN/Inf in a weight, a CUDA error) throw quantflow::Error naming the tensor given in `name`.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/quant_types.hpp"
#include "kernels/rounding.hpp"
#include "kernels/rounding_work.hpp"

namespace quantflow {

// Keeps a weight resident on an accelerator while it lives (see Backend::hold).
class WeightHold {
public:
    virtual ~WeightHold() = default;
};

// One layer's memory while it is in flight, by where it lives: host RAM (counted by the memory budget) or
// accelerator memory (counted by the GPU memory budget).
struct LayerMemory {
    std::uint64_t host = 0, device = 0;
};

// What a layer asks of a backend: its shape and file dtype, and the basis width of learned rounding (0 for
// round-to-nearest).
struct LayerWork {
    std::int64_t rows = 0, cols = 0;
    DType dtype = DType::BF16;
    std::int64_t basis_k = 0;
    Optimizer optimizer = Optimizer::Original;
    QuantFormat format = QuantFormat::Fp8Tensor;
    bool thorough_finish = false;  // --rounding-effort thorough: the finish's pool is 8x larger
    bool exact_svd = false;        // --full_matrix or a small side (exact_svd_is_cheap): LAPACK gesdd on the host
};

class Backend {
public:
    virtual ~Backend() = default;
    // "cpu", "cuda:0".
    virtual std::string name() const = 0;
    // Bytes of accelerator memory (0 for the CPU backend): picks the default hardware profile.
    virtual std::uint64_t device_memory() const { return 0; }
    // Working memory of one layer beyond its input pages, codes, scales and biases (which the reader counts):
    // the CPU backend's learned rounding lives in host memory; an accelerator's in device memory.
    virtual LayerMemory layer_memory(const LayerWork& layer) const;
    // Host staging for copies to and from the accelerator: `slabs` page-locked buffers of `slab_bytes` (the
    // hardware profile's pinned buffers). Takes effect before the first copy; no-op for the CPU backend.
    virtual void set_staging(std::uint64_t slab_bytes, int slabs) {
        (void)slab_bytes;
        (void)slabs;
    }
    // Keeps w's bytes on the accelerator while the returned hold lives: the calls below on the same weight
    // (same data pointer) then copy it once instead of once per call. nullptr: nothing to keep (CPU).
    virtual std::unique_ptr<WeightHold> hold(std::string_view name, const TensorView& w) {
        (void)name;
        (void)w;
        return nullptr;
    }
    // ConvRot (kernels/convrot.hpp): w with every group of g input columns rotated by H_g, as float32 [rows, cols]
    // (cols a multiple of g, g a valid group size), bit-identical on every backend. With `keep`, an accelerator
    // also keeps its own copy of the result for the calls that follow on it, as hold() of the returned vector
    // would, without copying it back (*keep is replaced; nullptr on the CPU).
    virtual std::vector<float> rotate_groups(std::string_view name, const TensorView& w, std::int64_t g,
                                             std::unique_ptr<WeightHold>* keep = nullptr) = 0;
    // Round-to-nearest quantization (spec 5.1 / 5.2): per-scale-block amax, scale, clamp, round.
    // An all-zero weight gives zero codes and every scale 1.0 (the reference's rule). The ConvRot formats take
    // the rotated weight (rotate_groups) and keep comfy-kitchen's floors as the scales of zero rows.
    virtual QuantizedTensor quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) = 0;
    // Learned rounding's scale search (nvfp4): replaces each block's e4m3 scale of quantize()'s result by the
    // neighbouring e4m3 value whose round-to-nearest codes leave the smallest squared error in the block, and its
    // codes by those codes. Returns ||W_hat - W||^2 of quantize()'s result (the rounding budget's base), summed in
    // a fixed order: the same bits on every backend. Other formats: no change, returns 0.
    virtual double search_block_scales(std::string_view name, const TensorView& w, QuantizedTensor& q) = 0;
    // y = (W - dequant(q)) * x, y has w.rows entries, x has w.cols (the bias-correction product, spec 5.4).
    // Each row is summed in a fixed order, so y is bit-stable across thread counts.
    virtual void residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x,
                               std::span<float> y) = 0;
    // Top-k singular subspaces of w (spec 5.3): randomized (sketch seeded by settings.seed) or exact.
    virtual LowRank top_k_svd(std::string_view name, const TensorView& w, const SvdSettings& settings) = 0;
    // The learned-rounding primitives of one layer (kernels/rounding_work.hpp) over w, the basis and q's
    // round-to-nearest codes and scales. q must outlive the work, which may change q.codes at any time (the
    // result is complete after fetch_codes).
    virtual std::unique_ptr<RoundingWork> rounding_work(std::string_view name, const TensorView& w, const LowRank& basis,
                                                        QuantizedTensor& q) = 0;
    // Why this backend runs a layer's learned rounding on the host instead of its own device (empty: it does
    // not). The plan prints it and counts that layer's memory on the host (layer_memory).
    virtual std::string host_fallback(const LayerWork& layer) const {
        (void)layer;
        return {};
    }
    // Learned rounding (spec 5.3) through the one driver (kernels/learned_rounding.hpp) over rounding_work():
    // q enters as quantize()'s result for w and leaves with the optimized codes (scales unchanged).
    virtual RoundingStats learned_round(std::string_view name, const TensorView& w, const LowRank& basis,
                                        const RoundingSettings& settings, QuantizedTensor& q);
    // Error metrics of q against w (projected error only when a basis is given).
    virtual QualityMetrics measure(const TensorView& w, const QuantizedTensor& q, const LowRank* basis,
                                   const QualityInputs& inputs) = 0;
};

enum class DeviceKind { Auto, Cpu, Cuda };

struct DeviceChoice {
    DeviceKind kind = DeviceKind::Auto;
    int cuda_index = 0;
};

// Parses "auto", "cpu", "cuda", "cuda:N"; throws Error(kUsage) otherwise.
DeviceChoice parse_device(std::string_view text);

// Builds the backend the choice names. Auto takes CUDA when this build has it and a device is present,
// else the CPU. `why` receives one line saying which backend was picked and why. A GPU that is not present
// (or a build without CUDA asked for one) is Error(kUsage).
std::unique_ptr<Backend> make_backend(const DeviceChoice& device, std::string& why);

// `--devices`: "all" (every GPU present) or GPU indices "0,1,3" (no repeats).
struct DeviceList {
    bool all = false;
    std::vector<int> gpus;
};
// Throws Error(kUsage) on anything else.
DeviceList parse_device_list(std::string_view text);

// One backend per GPU of the list, in the list's order. "all" on a machine without a GPU gives the CPU
// backend (and says so in `why`); a named GPU that is not present is Error(kUsage).
std::vector<std::unique_ptr<Backend>> make_backends(const DeviceList& devices, std::string& why);

}  // namespace quantflow
