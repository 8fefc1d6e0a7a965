// The CUDA backend: round-to-nearest quantization, the bias-correction product, the top-k SVD and learned
// rounding's primitives on the GPU (rounding_work.cu). Quality metrics, the exact SVD of --full_matrix and
// the layers host_fallback() names run on the host backend the factory hands in.
// Every call has its own stream, so the jobs in flight overlap on the GPU; weights held by the pipeline
// (hold()) are copied once per layer, and every large copy goes through the pinned staging ring.
#include "kernels/cuda/cuda_backend.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/convrot.hpp"
#include "kernels/cuda/adam.cuh"
#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/cuda/rounding_work.cuh"
#include "kernels/cuda/staging.cuh"
#include "kernels/cuda/svd.cuh"
#include "kernels/dtype.hpp"
#include "kernels/learned_rounding.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

using cuda::DeviceBuffer;

using cuda::DeviceWeightRef;
using cuda::grid_of;

std::size_t weight_bytes(const TensorView& w) { return static_cast<std::size_t>(w.rows * w.cols) * static_cast<std::size_t>(dtype_bits(w.dtype) / 8); }

// The formats the kernels in quantize.cu and the residual GEMV decode (e4m3, int8 and int4 codes, float32 scales);
// the others (e5m2, mxfp8, nvfp4) quantize through quantize_blocks.cu.
bool has_cuda_kernels(QuantFormat format) { return is_fp8(format) || is_integer_grid(format); }


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

    void set_staging(std::uint64_t slab_bytes, int slabs) override {
        std::lock_guard lock(staging_mutex_);
        if (!ring_) {
            slab_bytes_ = static_cast<std::size_t>(slab_bytes);
            slabs_ = slabs;
        }
    }

    // Device memory of one layer in flight: the weight and its codes, plus the largest phase of learned
    // rounding (the SVD's float32 copy and cuSOLVER's workspace; AdamW/RAdam's two offset buffers and second
    // moment; the rounding-aware finish's first candidate buffer of n/16 + 1M moves with its selection: a value,
    // an index and the sort's copy of it per candidate, the kept pool twice and the leverage), the error in
    // double for the projections and the round-to-nearest codes kept for reset_codes. The finish's rounds
    // (move_rounds.cu, ~84 bytes per pool move) come after the candidate buffer is freed and are smaller. The host
    // keeps only the pool (finish_pool_size: max(64 Ki, n/128) moves, n/16 when thorough) and the driver's two runs over it
    // (at most ~144 bytes per move). A layer that runs on the host (host_fallback) has the host backend's learned-rounding memory,
    // and only its SVD on the device.
    LayerMemory layer_memory(const LayerWork& l) const override {
        const auto n = static_cast<std::uint64_t>(l.rows) * static_cast<std::uint64_t>(l.cols);
        const std::uint64_t weight = n * static_cast<std::uint64_t>(dtype_bits(l.dtype) / 8) + n;
        if (l.basis_k == 0) return {0, weight + n / 2};  // + amax cells and scale factors (at most n / 2 bytes)
        const auto basis = static_cast<std::uint64_t>(l.rows + l.cols) * static_cast<std::uint64_t>(l.basis_k + 10) * 4;
        const std::uint64_t svd = 8 * n + 4 * basis;
        if (!host_fallback(l).empty()) return {Backend::layer_memory(l).host, weight + svd + basis};
        const std::uint64_t adam = l.optimizer == Optimizer::Original ? 0 : 12 * n + static_cast<std::uint64_t>(l.rows) * 16 * 12;
        // nvfp4's learned rounding takes the wide finish (cost share 1: nearly every element has an admissible move,
        // and the device keeps them all before its selection: 15.9 GiB peak on 4 WAN-14B blocks, 8 layers in flight).
        const bool wide = l.format == QuantFormat::Nvfp4 && l.optimizer == Optimizer::Original;
        const std::uint64_t found = wide ? n : n / 16 + (1u << 20), pool = std::min(found, finish_pool_size(n, (l.thorough_finish ? kThoroughFinish : kNarrowFinish).pool_divisor));
        const std::uint64_t finish = found * (sizeof(MidpointMove) + 16) + pool * 2 * sizeof(MidpointMove) +
                                     static_cast<std::uint64_t>(l.rows + l.cols) * 32;
        return {pool * 144, weight + 8 * n + n + std::max({svd, adam, finish}) + basis};
    }

    std::string host_fallback(const LayerWork& l) const override {
        if (l.basis_k > 0 && !cuda::gpu_rounding_grid(l.format))
            return std::string(format_label(l.format)) + " (the GPU's rounding kernels know the e4m3, e5m2, e2m1 and int8 grids)";
        if (l.basis_k > 0 && l.optimizer != Optimizer::Original && l.basis_k > cuda::kMaxAdamK)
            return std::string(optimizer_name(l.optimizer)) + " with k " + std::to_string(l.basis_k) + " > " +
                   std::to_string(cuda::kMaxAdamK) + " (the GPU step keeps k components in registers)";
        return {};
    }

    std::unique_ptr<WeightHold> hold(std::string_view name, const TensorView& w) override {
        (void)name;
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        const cuda::Stream s;
        auto held = std::make_unique<Held>();
        held->bytes = DeviceBuffer<unsigned char>(weight_bytes(w));
        staging().upload(held->bytes.get(), w.data, held->bytes.size(), s);
        held->view = {held->bytes.get(), w.dtype, w.rows, w.cols};
        s.sync();  // other streams read it from now on
        std::lock_guard lock(held_mutex_);
        held_[w.data] = std::move(held);
        return std::make_unique<CudaHold>(*this, w.data);
    }

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

    std::vector<float> rotate_groups(std::string_view name, const TensorView& w, std::int64_t g, std::unique_ptr<WeightHold>* keep) override {
        QF_EXPECT(convrot_group_valid(g) && g <= kMaxConvrotGroup && w.cols % g == 0,
                  "tensor '" + std::string(name) + "': group size " + std::to_string(g) + " does not divide " + std::to_string(w.cols) + " columns");
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        const cuda::Stream s;
        const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
        auto held = std::make_unique<Held>();
        held->bytes = DeviceBuffer<unsigned char>(n * sizeof(float));
        auto* rotated = reinterpret_cast<float*>(held->bytes.get());
        {
            const DeviceWeightRef uw = device_weight(w, s);
            cuda::rotate_groups(uw.view, g, rotated, s.get());
        }
        std::vector<float> out(n);
        staging().download(out.data(), rotated, n * sizeof(float), s);
        s.sync();
        if (keep) {  // the stages read the rotation from the device copy from now on: no upload of it
            held->view = {held->bytes.get(), DType::F32, w.rows, w.cols};
            {
                std::lock_guard lock(held_mutex_);
                held_[out.data()] = std::move(held);
            }
            *keep = std::make_unique<CudaHold>(*this, out.data());
        }
        return out;
    }

    QuantizedTensor quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) override {
        if (!has_cuda_kernels(spec.format)) return quantize_new_format(name, w, spec);
        QF_EXPECT(format_fits(spec, w.rows, w.cols),
                  "tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                      "] does not fit " + std::string(format_label(spec.format)) + " with block size " + std::to_string(spec.block_size));
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        const cuda::Stream s;  // each job its own stream: concurrent jobs overlap on the GPU
        const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
        const DeviceWeightRef uw = device_weight(w, s);
        const cuda::DeviceWeight& dw = uw.view;
        const cuda::ScaleGrid g = grid_of(spec, w.rows, w.cols);
        const auto cells = static_cast<std::size_t>(g.cells());

        DeviceBuffer<unsigned int> amax(cells, s.get());
        DeviceBuffer<unsigned long long> bad(1, s.get());
        QF_CUDA_CHECK(cudaMemsetAsync(amax.get(), 0, cells * sizeof(unsigned int), s.get()));
        QF_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0xFF, sizeof(unsigned long long), s.get()));
        cuda::cell_amax(dw, g, amax.get(), bad.get(), s.get());
        std::vector<unsigned int> amax_bits(cells);
        unsigned long long bad_row = 0;
        cuda::download(amax_bits.data(), amax, cells, s);
        cuda::download(&bad_row, bad, 1, s);
        s.sync();
        if (bad_row != std::numeric_limits<unsigned long long>::max())
            throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                        "] holds NaN or Inf in row " + std::to_string(bad_row) + "; refusing to quantize it");

        // Scales on the host with the CPU's own formulas (numerics.hpp): bit-identical by construction.
        const bool fp8 = is_fp8(spec.format);
        QuantizedTensor q;
        q.spec = spec;
        q.rows = w.rows;
        q.cols = w.cols;
        q.scales.resize(cells);
        std::vector<float> factor(cells);
        unsigned int tensor_amax = 0;
        for (std::size_t c = 0; c < cells; ++c) {
            const float a = bits_f32(amax_bits[c]);
            tensor_amax = std::max(tensor_amax, amax_bits[c]);
            factor[c] = encode_factor(spec.format, a);
            q.scales[c] = stored_scale(spec.format, a);
        }
        DeviceBuffer<float> dfactor(cells, s.get());
        DeviceBuffer<std::uint8_t> codes(n, s.get());
        cuda::upload(dfactor, factor.data(), cells, s);
        cuda::encode(dw, g, dfactor.get(), fp8 ? 0 : int_code_max(spec.format), codes.get(), s.get());
        q.codes.resize(n);
        staging().download(q.codes.data(), codes.get(), n, s);
        // The reference stores scale 1.0 everywhere for an all-zero weight (its codes are all zero); ConvRot keeps
        // comfy-kitchen's floors.
        if (tensor_amax == 0 && !is_convrot(spec.format)) std::fill(q.scales.begin(), q.scales.end(), 1.0f);
        return q;
    }

    // float8_e5m2, mxfp8 and nvfp4 (quantize_blocks.cu): the tensor's amax (and NaN check) through cell_amax,
    // then one kernel; scales and codes as the CPU's quantize_cpu gives them.
    QuantizedTensor quantize_new_format(std::string_view name, const TensorView& w, const QuantSpec& spec) {
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        const cuda::Stream s;
        const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
        const DeviceWeightRef uw = device_weight(w, s);
        DeviceBuffer<unsigned int> amax(1, s.get());
        DeviceBuffer<unsigned long long> bad(1, s.get());
        QF_CUDA_CHECK(cudaMemsetAsync(amax.get(), 0, sizeof(unsigned int), s.get()));
        QF_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0xFF, sizeof(unsigned long long), s.get()));
        cuda::cell_amax(uw.view, cuda::ScaleGrid{w.rows, w.cols, 1, 1}, amax.get(), bad.get(), s.get());
        unsigned int amax_bits = 0;
        unsigned long long bad_row = 0;
        cuda::download(&amax_bits, amax, 1, s);
        cuda::download(&bad_row, bad, 1, s);
        s.sync();
        if (bad_row != std::numeric_limits<unsigned long long>::max())
            throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                        "] holds NaN or Inf in row " + std::to_string(bad_row) + "; refusing to quantize it");
        const float tensor_amax = bits_f32(amax_bits);
        QuantizedTensor q;
        q.spec = spec;
        q.rows = w.rows;
        q.cols = w.cols;
        q.codes.resize(n);
        DeviceBuffer<std::uint8_t> codes(n, s.get());
        if (spec.format == QuantFormat::Fp8E5m2Tensor) {
            q.scales = {tensor_amax == 0.0f ? 1.0f : stored_scale(spec.format, tensor_amax)};
            cuda::encode_e5m2(uw.view, encode_factor(spec.format, tensor_amax), codes.get(), s.get());
        } else {
            const bool nvfp4 = spec.format == QuantFormat::Nvfp4;
            if (nvfp4) q.global_scale = tensor_amax > 0.0f ? tensor_amax / (kFp8Max * kE2m1Max) : 1.0f;
            q.scales.resize(static_cast<std::size_t>(w.rows * scale_cols(spec, w.cols)));
            DeviceBuffer<float> scales(q.scales.size(), s.get());
            cuda::encode_block_scaled(uw.view, nvfp4, q.global_scale, scales.get(), codes.get(), bad.get(), s.get());
            cuda::download(q.scales.data(), scales, q.scales.size(), s);
        }
        staging().download(q.codes.data(), codes.get(), n, s);
        s.sync();
        return q;
    }

    void residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y) override {
        QF_EXPECT(static_cast<std::int64_t>(x.size()) == w.cols && static_cast<std::int64_t>(y.size()) == w.rows,
                  "residual_gemv: vector sizes do not match the weight");
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        const cuda::Stream s;  // each job its own stream: concurrent jobs overlap on the GPU
        const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
        const DeviceWeightRef uw = device_weight(w, s);
        DeviceBuffer<std::uint8_t> codes(n, s.get());
        DeviceBuffer<float> scales(q.scales.size(), s.get()), dx(x.size(), s.get()), dy(y.size(), s.get());
        staging().upload(codes.get(), q.codes.data(), n, s);
        const std::vector<float> scaled = cuda::cell_scales(q);
        cuda::upload(scales, scaled.data(), scaled.size(), s);
        cuda::upload(dx, x.data(), x.size(), s);
        cuda::residual_gemv(uw.view, grid_of(q.spec, q.rows, q.cols), codes.get(), scales.get(), cuda::code_kind(q.spec.format),
                            dx.get(), dy.get(), s.get());
        cuda::download(y.data(), dy, y.size(), s);
        s.sync();
    }

    LowRank top_k_svd(std::string_view name, const TensorView& w, const SvdSettings& settings) override {
        if (settings.exact) return host_->top_k_svd(name, w, settings);  // LAPACK gesdd: cuSOLVER's gesvd needs m >= n
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        // A solver of its own (from a pool): the jobs in flight run their SVDs side by side (one shared handle
        // serialised them: 40 layers of a WAN-14B block model waited ~2 s in line on an H200).
        SolverLease lease(*this);
        const auto& s = lease.slot->stream;
        const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
        const DeviceWeightRef uw = device_weight(w, s);
        DeviceBuffer<float> f32(n, s.get());
        cuda::decode(uw.view, f32.get(), s.get());
        return cuda::randomized_svd(lease.slot->solver, s, f32.get(), w.rows, w.cols, settings);
    }

    std::unique_ptr<RoundingWork> rounding_work(std::string_view name, const TensorView& w, const LowRank& basis,
                                                QuantizedTensor& q) override {
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        return cuda::make_rounding_work(device_, name, basis, q, staging(), [&](const cuda::Stream& s) { return device_weight(w, s); });
    }

    // The driver over rounding_work(), or the host backend's learned rounding for the layers host_fallback
    // names (the plan prints them; the basis width is what the plan knows, as in layer_memory).
    RoundingStats learned_round(std::string_view name, const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                QuantizedTensor& q) override {
        if (!host_fallback({w.rows, w.cols, w.dtype, basis.k, settings.optimizer, q.spec.format}).empty())
            return host_->learned_round(name, w, basis, settings, q);
        return Backend::learned_round(name, w, basis, settings, q);
    }

    // nvfp4's scale search on the device (quantize_blocks.cu), the CPU's bits: per-block errors summed per row
    // in block order, then the rows in order, on the host.
    double search_block_scales(std::string_view, const TensorView& w, QuantizedTensor& q) override {
        if (q.spec.format != QuantFormat::Nvfp4) return 0;
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        const cuda::Stream s;
        const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
        const std::int64_t blocks = (w.cols + 15) / 16;
        const DeviceWeightRef uw = device_weight(w, s);
        DeviceBuffer<std::uint8_t> codes(n, s.get());
        DeviceBuffer<float> scales(q.scales.size(), s.get());
        DeviceBuffer<double> errors(static_cast<std::size_t>(w.rows * blocks), s.get());
        staging().upload(codes.get(), q.codes.data(), n, s);
        cuda::upload(scales, q.scales.data(), q.scales.size(), s);
        cuda::search_nvfp4_scales(uw.view, q.global_scale, scales.get(), codes.get(), errors.get(), s.get());
        std::vector<double> e(static_cast<std::size_t>(w.rows * blocks));
        cuda::download(e.data(), errors, e.size(), s);
        cuda::download(q.scales.data(), scales, q.scales.size(), s);
        staging().download(q.codes.data(), codes.get(), n, s);
        s.sync();
        double total = 0;
        for (std::int64_t r = 0; r < w.rows; ++r) {
            double row = 0;
            for (std::int64_t b = 0; b < blocks; ++b) row += e[static_cast<std::size_t>(r * blocks + b)];
            total += row;
        }
        return total;
    }

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
    // cuSOLVER handles with their streams, reused across calls (one per SVD in flight).
    struct SolverSlot {
        cuda::Stream stream;
        cuda::Solver solver{stream.get()};
    };
    struct SolverLease {
        explicit SolverLease(CudaBackend& b) : backend(b) {
            std::lock_guard lock(b.solvers_mutex_);
            if (!b.solvers_.empty()) {
                slot = std::move(b.solvers_.back());
                b.solvers_.pop_back();
            }
            if (!slot) slot = std::make_unique<SolverSlot>();
        }
        ~SolverLease() {
            std::lock_guard lock(backend.solvers_mutex_);
            backend.solvers_.push_back(std::move(slot));
        }
        CudaBackend& backend;
        std::unique_ptr<SolverSlot> slot;
    };
    std::mutex solvers_mutex_;
    std::vector<std::unique_ptr<SolverSlot>> solvers_;
};

CudaHold::~CudaHold() { backend_.release(key_); }

}  // namespace

int cuda_device_count() noexcept {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

std::string cuda_device_description(int device) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
    char text[256];
    std::snprintf(text, sizeof text, "%s, %.1f GiB, sm_%d%d", prop.name, static_cast<double>(prop.totalGlobalMem) / (1 << 30), prop.major,
                  prop.minor);
    return text;
}

std::unique_ptr<Backend> make_cuda_backend(int device, std::unique_ptr<Backend> host) {
    const int count = cuda_device_count();
    QF_EXPECT(device >= 0 && device < count,
              "--device cuda:" + std::to_string(device) + ": " + (count == 0 ? std::string("no CUDA device (or no driver) on this machine")
                                                                                : std::to_string(count) + " CUDA device(s) present"));
    QF_EXPECT(host != nullptr, "make_cuda_backend: no host backend given");
    return std::make_unique<CudaBackend>(device, std::move(host));
}

}  // namespace quantflow
