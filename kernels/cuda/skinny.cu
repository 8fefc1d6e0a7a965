#include "kernels/cuda/skinny.cuh"

#include <memory>
#include <string>
#include <utility>

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

void lt_matmul(const LtHandle& lt, const LtProduct& p, const void* a, const void* b, void* c, cudaStream_t s) {
    const bool f64 = p.type == CUDA_R_64F;
    LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy> desc;
    QF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.p, f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, p.type));
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.p, CUBLASLT_MATMUL_DESC_TRANSA, &p.op_a, sizeof p.op_a));
    QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.p, CUBLASLT_MATMUL_DESC_TRANSB, &p.op_b, sizeof p.op_b));
    const auto stored = [](cublasOperation_t op, std::int64_t rows, std::int64_t cols) {
        return op == CUBLAS_OP_N ? std::pair{rows, cols} : std::pair{cols, rows};
    };
    const auto [a_rows, a_cols] = stored(p.op_a, p.m, p.k);
    const auto [b_rows, b_cols] = stored(p.op_b, p.k, p.n);
    LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy> la, lb, lc;
    const auto u = [](std::int64_t x) { return static_cast<std::uint64_t>(x); };
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la.p, p.type, u(a_rows), u(a_cols), a_rows));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb.p, p.type, u(b_rows), u(b_cols), b_rows));
    QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc.p, p.type, u(p.m), u(p.n), p.m));
    LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy> pref;
    QF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    const std::uint64_t workspace = 0;
    QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    QF_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt.get(), desc.p, la.p, lb.p, lc.p, lc.p, pref.p, 1, &result, &found));
    if (found == 0)
        throw Error(std::string("cuBLASLt: no ") + (f64 ? "double" : "float") + " GEMM for " + std::to_string(p.m) + "x" +
                    std::to_string(p.k) + " times " + std::to_string(p.k) + "x" + std::to_string(p.n));
    const double one64 = 1.0, zero64 = 0.0;
    const float one32 = 1.0f, zero32 = 0.0f;
    const void* one = f64 ? static_cast<const void*>(&one64) : &one32;
    const void* zero = f64 ? static_cast<const void*>(&zero64) : &zero32;
    QF_CUBLAS_CHECK(cublasLtMatmul(lt.get(), desc.p, one, a, la.p, b, lb.p, zero, c, lc.p, c, lc.p, &result.algo, nullptr, 0, s));
}

void rows_times_vt_lt(const LtHandle& lt, std::int64_t m, std::int64_t n, const double* e, const double* v, int k, double* t,
                      cudaStream_t s) {
    // Row-major matrices are their column-major transposes: T^T (k x m, ld k) = V' (n x k, ld n)^T * E' (n x m, ld n).
    lt_matmul(lt, {CUDA_R_64F, CUBLAS_OP_T, CUBLAS_OP_N, k, m, n}, v, e, t, s);
}

}  // namespace quantflow::cuda
