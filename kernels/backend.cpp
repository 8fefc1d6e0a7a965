// The one place that knows whether this build has a CUDA backend (STYLE.md convention 1).
#include "kernels/backend.hpp"

#include <algorithm>
#include <charconv>
#include <string>
#include <thread>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "kernels/learned_rounding.hpp"
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
    const auto elements = static_cast<std::uint64_t>(layer.rows) * static_cast<std::uint64_t>(layer.cols);
    const std::uint64_t pool = finish_pool_size(elements, finish_tuning(layer.thorough_finish).pool_divisor);
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    return {layer.basis_k > 0 ? learned_rounding_work_bytes(layer.rows, layer.cols, layer.basis_k, layer.optimizer, pool,
                                                            layer.exact_svd, threads)
                              : 0,
            0};
}

namespace {

int gpu_count() {
#if QF_HAVE_CUDA
    return cuda_device_count();
#else
    return 0;
#endif
}

void expect_gpu(int index, const std::string& flag) {
#if QF_HAVE_CUDA
    const int gpus = cuda_device_count();
    QF_EXPECT_USAGE(index < gpus, flag + ": no GPU " + std::to_string(index) + " on this machine (" +
                                      (gpus == 0 ? std::string("no CUDA device or driver found") : std::to_string(gpus) + " GPU(s): 0.." +
                                                                                                        std::to_string(gpus - 1)) + ")");
#else
    (void)index;
    throw Error(flag + ": this quantflow build has no CUDA backend (use --device cpu or auto)", ExitCode::kUsage);
#endif
}

}  // namespace

DeviceList parse_device_list(std::string_view text) {
    if (text == "all") return {true, {}};
    DeviceList list;
    std::string_view rest = text;
    while (true) {
        const auto comma = rest.find(',');
        const auto digits = rest.substr(0, comma);
        int index = -1;
        const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
        QF_EXPECT_USAGE(!digits.empty() && ec == std::errc() && ptr == digits.data() + digits.size() && index >= 0,
                        "--devices '" + std::string(text) + "' is not \"all\" or a list of GPU indices such as 0,1");
        QF_EXPECT_USAGE(std::find(list.gpus.begin(), list.gpus.end(), index) == list.gpus.end(),
                        "--devices '" + std::string(text) + "' names GPU " + std::to_string(index) + " twice");
        list.gpus.push_back(index);
        if (comma == std::string_view::npos) break;
        rest = rest.substr(comma + 1);
    }
    return list;
}

std::vector<std::unique_ptr<Backend>> make_backends(const DeviceList& devices, std::string& why) {
    std::vector<std::unique_ptr<Backend>> backends;
    std::vector<int> gpus = devices.gpus;
    if (devices.all) {
        for (int i = 0; i < gpu_count(); ++i) gpus.push_back(i);
        if (gpus.empty()) {
            why = "device: cpu (--devices all found no CUDA device or driver)";
            backends.push_back(make_cpu_backend());
            return backends;
        }
    }
    for (const int gpu : gpus) expect_gpu(gpu, "--devices " + (devices.all ? std::string("all") : std::to_string(gpu)));
    why = "devices:";
    for (std::size_t i = 0; i < gpus.size(); ++i) {
        std::string line;
        backends.push_back(make_backend({DeviceKind::Cuda, gpus[i]}, line));
        why += std::string(i ? "," : "") + " " + backends.back()->name();
#if QF_HAVE_CUDA
        why += " (" + cuda_device_description(gpus[i]) + ")";
#endif
    }
    why += devices.all ? " (--devices all)" : " (--devices)";
    return backends;
}

std::unique_ptr<Backend> make_backend(const DeviceChoice& device, std::string& why) {
#if QF_HAVE_CUDA
    const int gpus = cuda_device_count();
    switch (device.kind) {
        case DeviceKind::Cuda:
            expect_gpu(device.cuda_index, "--device cuda:" + std::to_string(device.cuda_index));
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
        case DeviceKind::Cuda: expect_gpu(device.cuda_index, "--device cuda:" + std::to_string(device.cuda_index)); break;
        case DeviceKind::Cpu: why = "device: cpu (requested with --device cpu)"; break;
        case DeviceKind::Auto: why = "device: cpu (this build has no CUDA backend)"; break;
    }
    return make_cpu_backend();
#endif
}

}  // namespace quantflow
