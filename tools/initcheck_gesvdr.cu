// A minimal cusolverDnXgesvdr call on fully initialised buffers, the way kernels/cuda/svd.cu calls it (float,
// 'S'/'S', k 26 of a 768 x 512 matrix, oversampling 10, 4 power iterations, deterministic mode). Run under
// `compute-sanitizer --tool initcheck`: the uninitialised reads it reports inside cuSOLVER's geqr2 kernels
// come from cuSOLVER itself, since every buffer handed to it (the matrix, S, U, V, info and the device
// workspace) is written before the call. tools/gpu_sanitize.sh runs it beside the GPU tests.
//
// build: nvcc -O2 -o initcheck_gesvdr tools/initcheck_gesvdr.cu -lcusolver
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#define CHECK(call)                                                                \
    do {                                                                           \
        const int status_ = static_cast<int>(call);                                \
        if (status_ != 0) {                                                        \
            std::fprintf(stderr, "%s failed: %d (line %d)\n", #call, status_, __LINE__); \
            return 1;                                                              \
        }                                                                          \
    } while (0)

int main() {
    const std::int64_t m = 768, n = 512, k = 16, p = 10, iters = 4;
    std::vector<float> a(static_cast<std::size_t>(m * n));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& x : a) x = normal(rng);

    cudaStream_t stream;
    CHECK(cudaStreamCreate(&stream));
    cusolverDnHandle_t handle;
    cusolverDnParams_t params;
    CHECK(cusolverDnCreate(&handle));
    CHECK(cusolverDnSetStream(handle, stream));
    CHECK(cusolverDnCreateParams(&params));
    CHECK(cusolverDnSetDeterministicMode(handle, CUSOLVER_DETERMINISTIC_RESULTS));

    float *da, *ds, *du, *dv;
    int* info;
    CHECK(cudaMalloc(&da, a.size() * sizeof(float)));
    CHECK(cudaMalloc(&ds, n * sizeof(float)));
    CHECK(cudaMalloc(&du, m * k * sizeof(float)));
    CHECK(cudaMalloc(&dv, n * k * sizeof(float)));
    CHECK(cudaMalloc(&info, sizeof(int)));
    CHECK(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemset(ds, 0, n * sizeof(float)));
    CHECK(cudaMemset(du, 0, m * k * sizeof(float)));
    CHECK(cudaMemset(dv, 0, n * k * sizeof(float)));
    CHECK(cudaMemset(info, 0, sizeof(int)));

    std::size_t device_bytes = 0, host_bytes = 0;
    CHECK(cusolverDnXgesvdr_bufferSize(handle, params, 'S', 'S', m, n, k, p, iters, CUDA_R_32F, da, m, CUDA_R_32F, ds, CUDA_R_32F, du,
                                       m, CUDA_R_32F, dv, n, CUDA_R_32F, &device_bytes, &host_bytes));
    void* work;
    CHECK(cudaMalloc(&work, device_bytes ? device_bytes : 1));
    CHECK(cudaMemset(work, 0, device_bytes ? device_bytes : 1));
    std::vector<unsigned char> host_work(host_bytes ? host_bytes : 1, 0);
    CHECK(cusolverDnXgesvdr(handle, params, 'S', 'S', m, n, k, p, iters, CUDA_R_32F, da, m, CUDA_R_32F, ds, CUDA_R_32F, du, m,
                            CUDA_R_32F, dv, n, CUDA_R_32F, work, device_bytes, host_work.data(), host_bytes, info));
    int status = -1;
    std::vector<float> sigma(static_cast<std::size_t>(k));
    CHECK(cudaMemcpy(&status, info, sizeof(int), cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(sigma.data(), ds, k * sizeof(float), cudaMemcpyDeviceToHost));
    std::printf("gesvdr %lldx%lld k %lld: info %d, sigma[0] %.4f, sigma[%lld] %.4f, workspace %zu B device, %zu B host\n",
                static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k), status, sigma[0],
                static_cast<long long>(k - 1), sigma[static_cast<std::size_t>(k - 1)], device_bytes, host_bytes);
    cudaFree(work);
    cudaFree(da);
    cudaFree(ds);
    cudaFree(du);
    cudaFree(dv);
    cudaFree(info);
    cusolverDnDestroyParams(params);
    cusolverDnDestroy(handle);
    cudaStreamDestroy(stream);
    return status == 0 ? 0 : 1;
}
