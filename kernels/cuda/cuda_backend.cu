// The CUDA backend: round-to-nearest quantization, the bias-correction product, the top-k SVD and learned
// rounding's primitives on the GPU (rounding_work.cu). Quality metrics, the exact SVD of --full_matrix and
// the layers host_fallback() names run on the host backend the factory hands in.
// Every call has its own stream, so the jobs in flight overlap on the GPU; weights held by the pipeline
// (hold()) are copied once per layer, and every large copy goes through the pinned staging ring.
#include "kernels/cuda/cuda_backend.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

#include "kernels/cuda/cuda_backend_class.cuh"

namespace quantflow {
namespace cuda {

CudaHold::~CudaHold() { backend_.release(key_); }

void CudaBackend::set_staging(std::uint64_t slab_bytes, int slabs) {
    std::lock_guard lock(staging_mutex_);
    if (!ring_) {
        slab_bytes_ = static_cast<std::size_t>(slab_bytes);
        slabs_ = slabs;
    }
}

LayerMemory CudaBackend::layer_memory(const LayerWork& l) const {
    const auto n = static_cast<std::uint64_t>(l.rows) * static_cast<std::uint64_t>(l.cols);
    const std::uint64_t weight = n * static_cast<std::uint64_t>(dtype_bits(l.dtype) / 8) + n;
    if (l.basis_k == 0) return {0, weight + n / 2};  // + amax cells and scale factors (at most n / 2 bytes)
    const auto basis = static_cast<std::uint64_t>(l.rows + l.cols) * static_cast<std::uint64_t>(l.basis_k + 10) * 4;
    // The sketch's panels (kernels/cuda/svd.cu): Y, Z and a spare of max(rows, cols) x l floats, and the partial
    // sums of W^T Y (up to 32 slices of cols x l), l = k + the default oversampling.
    const auto l_cols = static_cast<std::uint64_t>(l.basis_k + SvdSettings{}.oversample);
    // The exact SVD of a large weight (--full_matrix) holds cuSOLVER's matrices instead (exact_svd.cuh).
    const bool device_exact = l.exact_svd && !exact_svd_is_cheap(l.rows, l.cols);
    const std::uint64_t svd = device_exact ? cuda::exact_svd_device_bytes(l.rows, l.cols)
                                           : 4 * l_cols * (3 * static_cast<std::uint64_t>(std::max(l.rows, l.cols)) + 32 * static_cast<std::uint64_t>(l.cols));
    if (!host_fallback(l).empty()) return {Backend::layer_memory(l).host, weight + svd + basis};
    const std::uint64_t adam = l.optimizer == Optimizer::Original ? 0 : 12 * n + static_cast<std::uint64_t>(l.rows) * 16 * 12;
    // nvfp4's learned rounding takes the wide finish (cost share 1: nearly every element has an admissible move,
    // and the device keeps them all before its selection: 15.9 GiB peak on 4 WAN-14B blocks, 8 layers in flight).
    const bool wide = l.format == QuantFormat::Nvfp4 && l.optimizer == Optimizer::Original;
    const std::uint64_t found = wide ? n : n / 16 + (1u << 20), pool = std::min(found, finish_pool_size(n, finish_tuning(l.thorough_finish).pool_divisor));
    const std::uint64_t finish = found * (sizeof(MidpointMove) + 16) + pool * 2 * sizeof(MidpointMove) +
                                 static_cast<std::uint64_t>(l.rows + l.cols) * 32;
    // The sketch's host side (its random columns, U and the last Z) comes before the pool; the exact SVD of a
    // small weight runs on the host with LAPACK, a large one's factors come back whole (V^T n x n, U m x k).
    const std::uint64_t exact = !l.exact_svd ? 0
                                : device_exact ? 4 * static_cast<std::uint64_t>(std::min(l.rows, l.cols)) *
                                                     static_cast<std::uint64_t>(std::min(l.rows, l.cols) + 2 * l.basis_k) +
                                                     4 * static_cast<std::uint64_t>(std::max(l.rows, l.cols) * l.basis_k)
                                               : svd_work_bytes(l.rows, l.cols, l.basis_k, true, 1);
    const std::uint64_t sketch = l.exact_svd ? 0 : svd_work_bytes(l.rows, l.cols, l.basis_k, false, 0);
    return {std::max(pool * 64, sketch) + exact, weight + 8 * n + n + std::max({svd, adam, finish}) + basis};
}

std::string CudaBackend::host_fallback(const LayerWork& l) const {
    if (l.basis_k > 0 && !cuda::gpu_rounding_grid(l.format))
        return std::string(format_label(l.format)) + " (the GPU's rounding kernels know the e4m3, e5m2, e2m1 and int8 grids)";
    if (l.basis_k > 0 && l.optimizer != Optimizer::Original && l.basis_k > cuda::kMaxAdamK)
        return std::string(optimizer_name(l.optimizer)) + " with k " + std::to_string(l.basis_k) + " > " +
               std::to_string(cuda::kMaxAdamK) + " (the GPU step keeps k components in registers)";
    return {};
}

std::unique_ptr<WeightHold> CudaBackend::hold(std::string_view name, const TensorView& w) {
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

LowRank CudaBackend::top_k_svd(std::string_view name, const TensorView& w, const SvdSettings& settings) {
    if (settings.exact && exact_svd_is_cheap(w.rows, w.cols)) return host_->top_k_svd(name, w, settings);  // LAPACK gesdd
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    // A stream of its own (from a pool): the jobs in flight run their SVDs side by side.
    SketchLease lease(*this);
    const auto& s = lease.slot->stream;
    const DeviceWeightRef uw = device_weight(w, s);
    if (settings.exact) return cuda::exact_svd(name, uw.view, settings.k, s);
    cuda::DevicePanels panels(uw.view, sketch_columns(w.rows, w.cols, settings), s);
    return sketch_svd(name, w.rows, w.cols, settings, panels);
}

std::unique_ptr<RoundingWork> CudaBackend::rounding_work(std::string_view name, const TensorView& w, const LowRank& basis,
                                            QuantizedTensor& q) {
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    return cuda::make_rounding_work(device_, name, basis, q, staging(), [&](const cuda::Stream& s) { return device_weight(w, s); });
}

RoundingStats CudaBackend::learned_round(std::string_view name, const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                            QuantizedTensor& q) {
    if (!host_fallback({w.rows, w.cols, w.dtype, basis.k, settings.optimizer, q.spec.format}).empty())
        return host_->learned_round(name, w, basis, settings, q);
    return Backend::learned_round(name, w, basis, settings, q);
}

}  // namespace cuda


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
    return std::make_unique<cuda::CudaBackend>(device, std::move(host));
}

}  // namespace quantflow
