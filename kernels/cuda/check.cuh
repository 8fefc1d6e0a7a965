// kernels/cuda/check.cuh: every CUDA, cuSOLVER and cuBLASLt call is checked; a failure becomes an Error
// that names the call, the place and the library's text.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <string>

#include "kernels/error.hpp"

namespace quantflow::cuda {

[[noreturn]] inline void fail(const char* what, const char* file, int line, const std::string& text) {
    throw Error(std::string("CUDA: ") + what + " failed at " + file + ":" + std::to_string(line) + ": " + text);
}

}  // namespace quantflow::cuda

#define QF_CUDA_CHECK(call)                                                                        \
    do {                                                                                           \
        const cudaError_t qf_status_ = (call);                                                     \
        if (qf_status_ != cudaSuccess)                                                             \
            ::quantflow::cuda::fail(#call, __FILE__, __LINE__, cudaGetErrorString(qf_status_));    \
    } while (0)

#define QF_CUSOLVER_CHECK(call)                                                                           \
    do {                                                                                                  \
        const cusolverStatus_t qf_status_ = (call);                                                       \
        if (qf_status_ != CUSOLVER_STATUS_SUCCESS)                                                        \
            ::quantflow::cuda::fail(#call, __FILE__, __LINE__, "cusolver status " + std::to_string(qf_status_)); \
    } while (0)

#define QF_CUBLAS_CHECK(call)                                                                              \
    do {                                                                                                   \
        const cublasStatus_t qf_status_ = (call);                                                          \
        if (qf_status_ != CUBLAS_STATUS_SUCCESS)                                                           \
            ::quantflow::cuda::fail(#call, __FILE__, __LINE__, cublasLtGetStatusString(qf_status_));       \
    } while (0)
