// kernels/cuda/cuda_backend.hpp: the CUDA backend, seen from C++ (no CUDA types here, STYLE convention 2).
//
// Only kernels/backend.cpp includes this, and only in builds with the CUDA backend. The CUDA runtime is linked
// statically and finds the driver at run time, so a CUDA build still runs on a machine without a GPU or a
// driver: cuda_device_count() is then 0 and `--device auto` picks the CPU.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.hpp"

namespace quantflow {

// Usable CUDA devices; 0 when there is no driver or no device (never throws).
int cuda_device_count() noexcept;
// "NVIDIA H100 80GB HBM3, 79.1 GiB, sm_90" for messages; empty when the device does not exist.
std::string cuda_device_description(int device);
// The backend on device `device`; throws Error when it cannot be used. `host` (the CPU backend) runs what the
// GPU does not: quality metrics, the exact SVD, and the layers Backend::host_fallback names.
std::unique_ptr<Backend> make_cuda_backend(int device, std::unique_ptr<Backend> host);

}  // namespace quantflow
