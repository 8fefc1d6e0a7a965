// The GPU tests' main: exits 77 (ctest's SKIP) with a clear message when no CUDA device or driver is present.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "kernels/cuda/cuda_backend.hpp"

int main(int argc, char** argv) {
    const int gpus = quantflow::cuda_device_count();
    if (gpus == 0) {
        std::puts("SKIP: no CUDA device or driver on this machine; the GPU tests run on the H100 machine (tools/gpu_run.sh)");
        return 77;
    }
    std::printf("GPU tests on %s\n", quantflow::cuda_device_description(0).c_str());
    doctest::Context context(argc, argv);
    return context.run();
}
