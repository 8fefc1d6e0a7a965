// The one place that knows whether this build has a CUDA backend (STYLE.md convention 1).
#include "kernels/backend.hpp"

#include <charconv>
#include <string>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#if QF_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#endif

namespace quantflow {

DeviceChoice parse_device(std::string_view text) {
    if (text == "auto") return {DeviceKind::Auto, 0};
    if (text == "cpu") return {DeviceKind::Cpu, 0};
    if (text == "cuda") return {DeviceKind::Cuda, 0};
    if (text.substr(0, 5) == "cuda:") {
        int index = -1;
        const auto digits = text.substr(5);
        const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
        if (ec == std::errc() && ptr == digits.data() + digits.size() && index >= 0) return {DeviceKind::Cuda, index};
    }
    throw Error("--device '" + std::string(text) + "' is not one of auto, cpu, cuda, cuda:N", ExitCode::kUsage);
}

LayerMemory Backend::layer_memory(const LayerWork& layer) const {
    return {layer.basis_k > 0 ? learned_rounding_work_bytes(layer.rows, layer.cols, layer.basis_k, layer.optimizer) : 0, 0};
}

std::unique_ptr<Backend> make_backend(const DeviceChoice& device, std::string& why) {
#if QF_HAVE_CUDA
    const int gpus = cuda_device_count();
    switch (device.kind) {
        case DeviceKind::Cuda:
            why = "device: cuda:" + std::to_string(device.cuda_index) + " (" + cuda_device_description(device.cuda_index) +
                  ", requested with --device)";
            return make_cuda_backend(device.cuda_index, make_cpu_backend());
        case DeviceKind::Cpu: why = "device: cpu (requested with --device cpu)"; return make_cpu_backend();
        case DeviceKind::Auto:
            if (gpus > 0) {
                why = "device: cuda:0 (" + cuda_device_description(0) + "; --device auto found " + std::to_string(gpus) + " GPU(s))";
                return make_cuda_backend(0, make_cpu_backend());
            }
            why = "device: cpu (--device auto found no CUDA device or driver)";
            return make_cpu_backend();
    }
    return make_cpu_backend();
#else
    switch (device.kind) {
        case DeviceKind::Cuda:
            throw Error("--device cuda: this quantflow build has no CUDA backend (use --device cpu or auto)",
                        ExitCode::kUsage);
        case DeviceKind::Cpu: why = "device: cpu (requested with --device cpu)"; break;
        case DeviceKind::Auto: why = "device: cpu (this build has no CUDA backend)"; break;
    }
    return make_cpu_backend();
#endif
}

}  // namespace quantflow
