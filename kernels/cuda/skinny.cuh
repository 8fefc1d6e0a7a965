// kernels/cuda/skinny.cuh: the skinny product of learned rounding, T = E V^T (E the codes' error, rows x cols;
// V the k x cols basis), with cuBLASLt in double.
//
// Measured on an H100 (build/qf_bench_skinny, tools/gpu_run.sh): for 13824 x 5120 and k = 16, materialising E
// and one cuBLASLt GEMM take 0.35 ms (fp32) where a fused kernel that decodes E on the fly took 1.8-2.1 ms;
// in double the GEMM itself takes 0.22 ms. AdamW/RAdam keep their own fused step (the projection is one part
// of a pass that also updates the moments, adam.cu).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/quantize.cuh"

namespace quantflow::cuda {

class LtHandle {
public:
    LtHandle();
    ~LtHandle();
    LtHandle(const LtHandle&) = delete;
    LtHandle& operator=(const LtHandle&) = delete;
    cublasLtHandle_t get() const { return h_; }

private:
    cublasLtHandle_t h_ = nullptr;
};

// t[r, j] = sum_c e[r, c] * v[j, c] in double, e = code_value * scale - w (as project_rows); e_work holds
// rows x cols doubles, v is k x cols doubles. No GEMM workspace: the algorithms chosen never split the sums
// across blocks, so results are deterministic.
void project_rows_lt(const LtHandle& lt, const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales,
                     CodeKind kind, const double* v, int k, double* e_work, double* t, cudaStream_t s);

// The GEMM alone on a given e (m x n doubles): t[r, j] = sum_c e[r, c] * v[j, c].
void rows_times_vt_lt(const LtHandle& lt, std::int64_t m, std::int64_t n, const double* e, const double* v, int k, double* t,
                      cudaStream_t s);

}  // namespace quantflow::cuda
