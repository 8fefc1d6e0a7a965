#include "kernels/cuda/skinny.cuh"

#include <memory>
#include <string>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void error_kernel(DeviceWeight w, ScaleGrid g, const std::uint8_t* codes, const float* scales, CodeKind kind, double* e) {
    const std::int64_t total = w.rows * w.cols;
    for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const std::int64_t r = i / w.cols, c = i % w.cols;
        e[i] = static_cast<double>(code_value(kind, codes[i])) * scales[cell_of(g, r, c)] - load(w, i);
    }
}

template <typename T, cublasStatus_t (*Destroy)(T)>
struct LtObject {
    T p = nullptr;
    ~LtObject() {
        if (p) Destroy(p);
    }
};

}  // namespace

LtHandle::LtHandle() { QF_CUBLAS_CHECK(cublasLtCreate(&h_)); }
LtHandle::~LtHandle() {
    if (h_) cublasLtDestroy(h_);
}

void project_rows_lt(const LtHandle& lt, const DeviceWeight& w, const ScaleGrid& g, const std::uint8_t* codes, const float* scales,
                     CodeKind kind, const double* v, int k, double* e_work, double* t, cudaStream_t s) {
    const std::int64_t blocks = std::min<std::int64_t>((w.rows * w.cols + kThreads - 1) / kThreads, 65535LL * 32);
    error_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, s>>>(w, g, codes, scales, kind, e_work);
    QF_CUDA_CHECK(cudaGetLastError());
    rows_times_vt_lt(lt, w.rows, w.cols, e_work, v, k, t, s);
}

void rows_times_vt_lt(const LtHandle& lt, std::int64_t m, std::int64_t n, const double* e, const double* v, int k, double* t,
                      cudaStream_t s) {
    // Row-major matrices are their column-major transposes: T^T (k x m, ld k) = V' (n x k, ld n)^T * E' (n x m, ld n).
    LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy> desc;
    QF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.p, CUBLAS_COMPUTE_64F, CUDA_R_64F));
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.p, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t));
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.p, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n));
    LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy> a, b, c;
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a.p, CUDA_R_64F, static_cast<std::uint64_t>(n), static_cast<std::uint64_t>(k), n));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b.p, CUDA_R_64F, static_cast<std::uint64_t>(n), static_cast<std::uint64_t>(m), n));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c.p, CUDA_R_64F, static_cast<std::uint64_t>(k), static_cast<std::uint64_t>(m), k));
    LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy> pref;
    QF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    const std::uint64_t workspace = 0;
    QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    QF_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt.get(), desc.p, a.p, b.p, c.p, c.p, pref.p, 1, &result, &found));
    if (found == 0)
        throw Error("cuBLASLt: no double GEMM for a " + std::to_string(m) + "x" + std::to_string(n) + " projection on k " + std::to_string(k));
    const double one = 1.0, zero = 0.0;
    QF_CUBLAS_CHECK(cublasLtMatmul(lt.get(), desc.p, &one, v, a.p, e, b.p, &zero, t, c.p, t, c.p, &result.algo, nullptr, 0, s));
}

}  // namespace quantflow::cuda
