// tools/bench_skinny_gpu.cu: qf_bench_skinny, the measurement behind the CUDA issue's closing note. For the
// skinny products of learned rounding, T[M x k] = E[M x N] * V^T with k <= 16, is cuBLASLt or our own fused
// kernel (cuda::project_rows) faster?
//
// cuBLASLt needs E in memory, so its end-to-end cost includes materialising E = code_value * scale - w in fp32
// from the bf16 weight and the FP8 codes (read 3*M*N bytes, write 4*M*N) before the GEMM reads the 4*M*N bytes
// back. The fused kernel decodes E on the fly and reads only the 3*M*N input bytes. Each time is the median of
// 20 runs after 3 warm-ups (cudaEvents on one stream, L2 flushed before every run, outside the timed region).
// GB/s counts the matrix bytes each method must move through HBM (V and T are under 1 MB and left out).
//
// Correctness: every result is compared with the fp64 cuBLASLt product; that one with double sums on the host
// over sampled rows, which pins the row-major layout independently of cuBLASLt. Any failure (a CUDA or cuBLASLt
// status, a tolerance) is one line on stderr and exit status 1.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/elements.cuh"
#include "kernels/cuda/rounding.cuh"

namespace {

using quantflow::Error;
using std::int64_t;

constexpr int kWarmups = 3;
constexpr int kRuns = 20;
constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;
constexpr int kMaxK = 16;
constexpr int kThreads = 256;
// Tolerances on max|x - ref| / max|ref|; a wrong layout or operand gives O(1).
constexpr double kTolF64 = 1e-12;   // fp64 GEMM vs host double sums of the same fp32 E: only the summation order differs
constexpr double kTolF32 = 1e-4;    // fp32 products summed in fp32 over N <= 13824 terms: ~sqrt(N) * 6e-8 expected
constexpr double kTolTf32 = 2e-2;   // TF32 keeps 10 mantissa bits of each input (2^-11 relative per product)
constexpr double kTolFused = 1e-4;  // double sums of e computed exactly; the fp32 E of the reference rounds e by 6e-8

// ---- RAII ------------------------------------------------------------------------------------------------------
template <auto Destroy>
struct Destroyer {
    template <class P>
    void operator()(P p) const { Destroy(p); }
};
template <class Handle, auto Destroy>
using Owned = std::unique_ptr<std::remove_pointer_t<Handle>, Destroyer<Destroy>>;

using Stream = Owned<cudaStream_t, cudaStreamDestroy>;
using Event = Owned<cudaEvent_t, cudaEventDestroy>;
using LtHandle = Owned<cublasLtHandle_t, cublasLtDestroy>;
using MatmulDesc = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

template <class T>
class Buffer {
public:
    explicit Buffer(std::size_t count) : count_(count) {
        void* p = nullptr;
        QF_CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
        ptr_.reset(static_cast<T*>(p));
    }
    T* get() const { return ptr_.get(); }
    std::size_t size() const { return count_; }
    std::vector<T> download() const {
        std::vector<T> host(count_);
        QF_CUDA_CHECK(cudaMemcpy(host.data(), get(), count_ * sizeof(T), cudaMemcpyDeviceToHost));
        return host;
    }

private:
    Owned<T*, cudaFree> ptr_;
    std::size_t count_;
};

Event make_event() {
    cudaEvent_t e = nullptr;
    QF_CUDA_CHECK(cudaEventCreate(&e));
    return Event(e);
}

// ---- inputs and the materialising kernel ---------------------------------------------------------------------
__device__ std::uint64_t mix(std::uint64_t x) {  // splitmix64
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
__device__ float uniform(std::uint64_t seed, int64_t i) {  // [-1, 1)
    return static_cast<float>(mix(seed * 0x100000001B3ull + static_cast<std::uint64_t>(i)) >> 40) * 0x1p-23f - 1.0f;
}
#define QF_GRID_STRIDE(i, n) \
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void fill_inputs(std::uint16_t* w, std::uint8_t* codes, int64_t n, std::uint64_t seed) {
    QF_GRID_STRIDE(i, n) {
        w[i] = static_cast<std::uint16_t>(quantflow::f32_bits(uniform(seed, i)) >> 16);  // bf16 by truncation
        std::uint8_t c = static_cast<std::uint8_t>(mix(~seed + static_cast<std::uint64_t>(i)));
        if ((c & 0x7F) == 0x7F) c ^= 1;  // 0x7F / 0xFF are e4m3's NaNs
        codes[i] = c;
    }
}
__global__ void fill_uniform(float* v, int64_t n, std::uint64_t seed) {
    QF_GRID_STRIDE(i, n) v[i] = uniform(seed, i);
}
__global__ void widen(const float* in, double* out, int64_t n) {
    QF_GRID_STRIDE(i, n) out[i] = in[i];
}
// E = code_value * scale - w in fp32, 4 elements per thread (8-byte bf16, 4-byte code, 16-byte E accesses).
__device__ __forceinline__ float element(std::uint32_t code, std::uint32_t w, float s) {
    return quantflow::cuda::code_value(quantflow::cuda::CodeKind::E4m3, static_cast<std::uint8_t>(code)) * s - quantflow::bf16_to_f32(static_cast<std::uint16_t>(w));
}
__global__ void materialise_e(const std::uint16_t* w, const std::uint8_t* codes, const float* scale, float* e, int64_t n) {
    const float s = *scale;
    QF_GRID_STRIDE(q, n / 4) {
        const uint2 wq = reinterpret_cast<const uint2*>(w)[q];
        const std::uint32_t cq = reinterpret_cast<const std::uint32_t*>(codes)[q];
        reinterpret_cast<float4*>(e)[q] = make_float4(element(cq & 0xFF, wq.x & 0xFFFF, s), element((cq >> 8) & 0xFF, wq.x >> 16, s),
                                                      element((cq >> 16) & 0xFF, wq.y & 0xFFFF, s), element(cq >> 24, wq.y >> 16, s));
    }
    QF_GRID_STRIDE(t, n % 4) e[n / 4 * 4 + t] = element(codes[n / 4 * 4 + t], w[n / 4 * 4 + t], s);
}

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 1 << 20)); }

// ---- cuBLASLt --------------------------------------------------------------------------------------------------
enum class Precision { F32, Tf32, F64 };

// T = E * V^T with E row-major M x N, V row-major k x N, T row-major M x k. cuBLASLt is column-major by default,
// and a row-major matrix is its column-major transpose: T^T (k x M, ld k) = op(A) * B with A = V seen as
// N x k (ld N) and transposed, B = E seen as N x M (ld N). The "TN" case, the one every algorithm supports.
class LtProduct {
public:
    LtProduct(cublasLtHandle_t lt, Precision p, int64_t m, int64_t n, int k) : lt_(lt), f64_(p == Precision::F64) {
        const cudaDataType_t type = f64_ ? CUDA_R_64F : CUDA_R_32F;
        const cublasComputeType_t compute =
            p == Precision::F64 ? CUBLAS_COMPUTE_64F : p == Precision::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        cublasLtMatmulDesc_t desc = nullptr;
        QF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, type));
        desc_.reset(desc);
        const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
        QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t));
        QF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n));
        a_ = make_layout(type, n, k, n);
        b_ = make_layout(type, n, m, n);
        c_ = make_layout(type, k, m, k);
        cublasLtMatmulPreference_t pref = nullptr;
        QF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        const Preference owned_pref(pref);
        const std::uint64_t workspace = kWorkspaceBytes;
        QF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        QF_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, a_.get(), b_.get(), c_.get(), c_.get(), pref, 1, &result, &found));
        if (found == 0) throw Error("cublasLtMatmulAlgoGetHeuristic: no algorithm for M=" + std::to_string(m) + " N=" + std::to_string(n));
        algo_ = result.algo;
    }
    void run(const void* e, const void* v, void* t, void* workspace, cudaStream_t s) const {
        const float one_f = 1.0f, zero_f = 0.0f;
        const double one_d = 1.0, zero_d = 0.0;
        const void* alpha = f64_ ? static_cast<const void*>(&one_d) : &one_f;
        const void* beta = f64_ ? static_cast<const void*>(&zero_d) : &zero_f;
        QF_CUBLAS_CHECK(cublasLtMatmul(lt_, desc_.get(), alpha, v, a_.get(), e, b_.get(), beta, t, c_.get(), t, c_.get(), &algo_,
                                       workspace, kWorkspaceBytes, s));
    }

private:
    static Layout make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
        cublasLtMatrixLayout_t l = nullptr;
        QF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols), ld));
        return Layout(l);
    }
    cublasLtHandle_t lt_;
    bool f64_;
    MatmulDesc desc_;
    Layout a_, b_, c_;
    cublasLtMatmulAlgo_t algo_{};
};

// ---- timing and checks -----------------------------------------------------------------------------------------
struct Timer {
    cudaStream_t stream;
    Buffer<std::uint8_t>& flush;  // larger than L2: every run starts from HBM
    Event start = make_event(), stop = make_event();

    template <class Launch>
    double median_ms(Launch&& launch) {
        for (int i = 0; i < kWarmups; ++i) launch();
        std::vector<float> ms(kRuns);
        for (float& x : ms) {
            QF_CUDA_CHECK(cudaMemsetAsync(flush.get(), 0, flush.size(), stream));
            QF_CUDA_CHECK(cudaEventRecord(start.get(), stream));
            launch();
            QF_CUDA_CHECK(cudaEventRecord(stop.get(), stream));
            QF_CUDA_CHECK(cudaEventSynchronize(stop.get()));
            QF_CUDA_CHECK(cudaEventElapsedTime(&x, start.get(), stop.get()));
        }
        std::sort(ms.begin(), ms.end());
        return 0.5 * (ms[kRuns / 2 - 1] + ms[kRuns / 2]);
    }
};

template <class X>
double relative_error(const std::vector<X>& x, const std::vector<double>& ref) {
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        diff = std::max(diff, std::fabs(static_cast<double>(x[i]) - ref[i]));
        scale = std::max(scale, std::fabs(ref[i]));
    }
    return diff / scale;
}

void expect_close(double error, double tolerance, const char* what, int64_t m, int64_t n, int k) {
    if (!(error <= tolerance))
        throw Error(std::string("check failed: ") + what + " relative error " + std::to_string(error) + " > " + std::to_string(tolerance) +
                    " (M=" + std::to_string(m) + " N=" + std::to_string(n) + " k=" + std::to_string(k) + ")");
}

// The fp64 product's rows {0, M/3, 2M/3, M-1} against double sums on the host over the same fp32 E and V.
double host_check(const Buffer<float>& e, const Buffer<float>& v, const std::vector<double>& t64, int64_t m, int64_t n, int k) {
    const std::vector<float> vh = v.download();
    std::vector<float> row(static_cast<std::size_t>(n));
    std::vector<double> got, ref;
    for (const int64_t r : {int64_t{0}, m / 3, 2 * m / 3, m - 1}) {
        QF_CUDA_CHECK(cudaMemcpy(row.data(), e.get() + r * n, row.size() * sizeof(float), cudaMemcpyDeviceToHost));
        for (int j = 0; j < k; ++j) {
            double sum = 0;
            for (int64_t c = 0; c < n; ++c) sum += static_cast<double>(row[c]) * vh[j * n + c];
            ref.push_back(sum);
            got.push_back(t64[r * k + j]);
        }
    }
    return relative_error(got, ref);
}

struct Row {
    std::string method;
    double ms, bytes, rel_err;  // rel_err < 0: not applicable
    const char* note;
};

void print_row(int64_t m, int64_t n, int k, const Row& r) {
    char err[32] = "-";
    if (r.rel_err >= 0) std::snprintf(err, sizeof err, "%.2e", r.rel_err);
    std::printf("%-11s %3d  %-20s %8.3f %8.0f %9.1f  %-9s  %s\n", (std::to_string(m) + "x" + std::to_string(n)).c_str(), k,
                r.method.c_str(), r.ms, r.bytes / (r.ms * 1e-3) / 1e9, r.bytes / 1e6, err, r.note);
}

// ---- one shape -------------------------------------------------------------------------------------------------
std::string bench_shape(cublasLtHandle_t lt, Timer& timer, Buffer<std::uint8_t>& workspace, int64_t m, int64_t n) {
    namespace qc = quantflow::cuda;
    const cudaStream_t s = timer.stream;
    const int64_t mn = m * n;
    const auto count = static_cast<std::size_t>(mn);
    Buffer<std::uint16_t> w(count);
    Buffer<std::uint8_t> codes(count);
    Buffer<float> scale(1), e32(count), v32(static_cast<std::size_t>(kMaxK * n));
    Buffer<double> e64(count), v64(v32.size());
    Buffer<float> t32(static_cast<std::size_t>(m * kMaxK)), ttf32(t32.size());
    Buffer<double> t64(t32.size()), tfused(t32.size());

    fill_inputs<<<blocks_for(mn), kThreads, 0, s>>>(w.get(), codes.get(), mn, 0x5EED0000u + static_cast<std::uint64_t>(m ^ (n << 20)));
    QF_CUDA_CHECK(cudaGetLastError());
    fill_uniform<<<blocks_for(kMaxK * n), kThreads, 0, s>>>(v32.get(), kMaxK * n, 0xC0FFEE);
    QF_CUDA_CHECK(cudaGetLastError());
    const float one = 1.0f;
    QF_CUDA_CHECK(cudaMemcpyAsync(scale.get(), &one, sizeof one, cudaMemcpyHostToDevice, s));
    const auto materialise = [&] {
        materialise_e<<<blocks_for(mn / 4), kThreads, 0, s>>>(w.get(), codes.get(), scale.get(), e32.get(), mn);
        QF_CUDA_CHECK(cudaGetLastError());
    };
    materialise();
    widen<<<blocks_for(mn), kThreads, 0, s>>>(e32.get(), e64.get(), mn);
    QF_CUDA_CHECK(cudaGetLastError());
    widen<<<blocks_for(kMaxK * n), kThreads, 0, s>>>(v32.get(), v64.get(), kMaxK * n);
    QF_CUDA_CHECK(cudaGetLastError());
    QF_CUDA_CHECK(cudaStreamSynchronize(s));

    const qc::DeviceWeight weight{w.get(), quantflow::DType::BF16, m, n};
    const qc::ScaleGrid grid{m, n, 1, 1};  // per-tensor: one cell of M x N
    const double b = static_cast<double>(mn);
    std::string verdict;
    for (const int k : {16, 4}) {
        const LtProduct f32(lt, Precision::F32, m, n, k), tf32(lt, Precision::Tf32, m, n, k), f64(lt, Precision::F64, m, n, k);
        void* ws = workspace.get();
        const auto lt32 = [&] { f32.run(e32.get(), v32.get(), t32.get(), ws, s); };
        const auto lttf = [&] { tf32.run(e32.get(), v32.get(), ttf32.get(), ws, s); };
        const auto fused = [&] { qc::project_rows(weight, grid, codes.get(), scale.get(), qc::CodeKind::E4m3, v32.get(), k, tfused.get(), s); };
        std::vector<Row> rows = {
            {"materialise E fp32", timer.median_ms(materialise), 7 * b, -1, "bf16+codes in (3MN), E out (4MN): the price of E in memory"},
            {"lt fp32", timer.median_ms(lt32), 4 * b, -1, "needs E materialised: +4MN write +4MN read"},
            {"lt tf32", timer.median_ms(lttf), 4 * b, -1, "needs E materialised: +4MN write +4MN read"},
            {"lt fp64", timer.median_ms([&] { f64.run(e64.get(), v64.get(), t64.get(), ws, s); }), 8 * b, -1,
             "needs E in double (8MN); rel_err vs host double sums"},
            {"E fp32 + lt fp32", timer.median_ms([&] { materialise(); lt32(); }), 11 * b, -1, "end to end, one timed region"},
            {"E fp32 + lt tf32", timer.median_ms([&] { materialise(); lttf(); }), 11 * b, -1, "end to end, one timed region"},
            {"fused project_rows", timer.median_ms(fused), 3 * b, -1, "end to end: decodes E on the fly, sums in double"},
        };
        QF_CUDA_CHECK(cudaStreamSynchronize(s));

        const auto slice = [&](auto host) { host.resize(static_cast<std::size_t>(m * k)); return host; };  // T is M x k
        const std::vector<double> ref = slice(t64.download());
        rows[1].rel_err = relative_error(slice(t32.download()), ref);
        rows[2].rel_err = relative_error(slice(ttf32.download()), ref);
        rows[3].rel_err = host_check(e32, v32, ref, m, n, k);
        rows[4].rel_err = rows[1].rel_err;
        rows[5].rel_err = rows[2].rel_err;
        rows[6].rel_err = relative_error(slice(tfused.download()), ref);
        expect_close(rows[3].rel_err, kTolF64, "cuBLASLt fp64 vs host double", m, n, k);
        expect_close(rows[1].rel_err, kTolF32, "cuBLASLt fp32 vs fp64", m, n, k);
        expect_close(rows[2].rel_err, kTolTf32, "cuBLASLt tf32 vs fp64", m, n, k);
        expect_close(rows[6].rel_err, kTolFused, "project_rows vs cuBLASLt fp64", m, n, k);
        for (const Row& r : rows) print_row(m, n, k, r);

        const double lt_best = std::min(rows[4].ms, rows[5].ms), own = rows[6].ms;
        char line[200];
        std::snprintf(line, sizeof line, "%sk=%d %s, %.2fx (E fp32 + lt fp32 %.3f ms, E fp32 + lt tf32 %.3f ms, fused project_rows %.3f ms)",
                      verdict.empty() ? "" : "; ", k, own < lt_best ? "fused project_rows" : "materialise + cuBLASLt",
                      std::max(own, lt_best) / std::min(own, lt_best), rows[4].ms, rows[5].ms, own);
        verdict += line;
    }
    return verdict;
}

void run() {
    int device = 0;
    QF_CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    QF_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    int runtime = 0;
    QF_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    std::printf("qf_bench_skinny on %s (%d SMs, L2 %d MiB), CUDA runtime %d, cuBLASLt %zu\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize >> 20, runtime, cublasLtGetVersion());
    std::printf("T[M x k] = E[M x N] * V^T; median of %d runs after %d warm-ups, L2 flushed before each; GB/s over the matrix bytes\n"
                "in MB; rel_err = max|T - T_fp64| / max|T_fp64| (lt fp64: vs host double sums of 4 rows)\n\n",
                kRuns, kWarmups);

    cudaStream_t raw_stream = nullptr;
    QF_CUDA_CHECK(cudaStreamCreateWithFlags(&raw_stream, cudaStreamNonBlocking));
    const Stream stream(raw_stream);
    cublasLtHandle_t raw_lt = nullptr;
    QF_CUBLAS_CHECK(cublasLtCreate(&raw_lt));
    const LtHandle lt(raw_lt);
    Buffer<std::uint8_t> workspace(kWorkspaceBytes);
    Buffer<std::uint8_t> flush(static_cast<std::size_t>(std::max(prop.l2CacheSize, 1 << 20)) * 4);
    Timer timer{stream.get(), flush};

    std::printf("%-11s %3s  %-20s %8s %8s %9s  %-9s  %s\n", "shape", "k", "method", "ms", "GB/s", "MB", "rel_err", "note");
    std::vector<std::string> verdicts;
    for (const auto& [m, n] : {std::pair<int64_t, int64_t>{5120, 5120}, {13824, 5120}, {5120, 13824}}) {
        verdicts.push_back(std::to_string(m) + "x" + std::to_string(n) + ": " + bench_shape(lt.get(), timer, workspace, m, n));
        std::printf("\n");
    }
    for (const std::string& v : verdicts) std::printf("faster end to end, %s\n", v.c_str());
}

}  // namespace

namespace quantflow::cuda {
int bench_adam_rows();  // tools/bench_adam_rows.cu
}

int main(int argc, char** argv) {
    try {
        if (argc > 1 && std::string(argv[1]) == "--adam-rows") return quantflow::cuda::bench_adam_rows();
        run();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qf_bench_skinny: %s\n", e.what());
        return 1;
    }
}
