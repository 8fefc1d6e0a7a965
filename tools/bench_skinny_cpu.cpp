// The CPU SVD's skinny products (kernels/cpu/dense_cpu.cpp gemm_nn / gemm_tn) against one OpenBLAS sgemm call of
// the same product, same process, same data: W [M, N] (bf16, as checkpoints hold it, and its float copy) times
// Omega [N, 32] and W^T times Y [M, 32], for the WAN-14B shapes, best of 5 runs each, with the ratio OpenBLAS
// time / ours on bf16 (> 1: ours faster). Run it pinned to one core (taskset -c 0) to compare single-thread
// kernels, or as is for the band-parallel version.
//
// usage: cmake --build build --target qf_bench_skinny_cpu && taskset -c 0 build/qf_bench_skinny_cpu
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/numerics.hpp"

namespace {

template <typename F>
double best_of(int runs, F&& f) {
    double best = 1e30;
    for (int i = 0; i < runs; ++i) {
        const auto t = std::chrono::steady_clock::now();
        f();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
    }
    return best;
}

}  // namespace

int main() {
    quantflow::use_single_threaded_blas();
    const long p = 32;  // k 16 + oversampling 16
    std::printf("%-12s %-8s %12s %12s %10s %9s\n", "shape", "product", "ours bf16 ms", "ours f32 ms", "blas ms", "blas/bf16");
    for (const auto& [m, n] : {std::pair<long, long>{5120, 5120}, {13824, 5120}, {5120, 13824}}) {
        std::vector<float> w(static_cast<std::size_t>(m * n)), om(static_cast<std::size_t>(n * p)), y(static_cast<std::size_t>(m * p)),
            z(static_cast<std::size_t>(n * p));
        std::vector<std::uint16_t> w16(w.size());
        std::mt19937 g(1);
        std::normal_distribution<float> d;
        for (std::size_t i = 0; i < w.size(); ++i) {  // bf16 weights (what checkpoints hold), and their exact float copy
            w16[i] = quantflow::f32_to_bf16(d(g));
            w[i] = quantflow::bf16_to_f32(w16[i]);
        }
        for (float& x : om) x = d(g);
        for (float& x : y) x = d(g);
        const quantflow::TensorView f32{reinterpret_cast<const std::byte*>(w.data()), quantflow::DType::F32, m, n};
        const quantflow::TensorView bf16{reinterpret_cast<const std::byte*>(w16.data()), quantflow::DType::BF16, m, n};
        const double nn = best_of(5, [&] { quantflow::gemm_nn(bf16, om.data(), p, y.data()); });
        const double nn32 = best_of(5, [&] { quantflow::gemm_nn(f32, om.data(), p, y.data()); });
        const double nn_blas = best_of(5, [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(p), static_cast<int>(n), 1.0f,
                        w.data(), static_cast<int>(n), om.data(), static_cast<int>(p), 0.0f, y.data(), static_cast<int>(p));
        });
        const double tn = best_of(5, [&] { quantflow::gemm_tn(bf16, y.data(), p, z.data()); });
        const double tn32 = best_of(5, [&] { quantflow::gemm_tn(f32, y.data(), p, z.data()); });
        const double tn_blas = best_of(5, [&] {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(p), static_cast<int>(m), 1.0f,
                        w.data(), static_cast<int>(n), y.data(), static_cast<int>(p), 0.0f, z.data(), static_cast<int>(p));
        });
        const std::string shape = std::to_string(m) + "x" + std::to_string(n);
        std::printf("%-12s %-8s %12.1f %12.1f %10.1f %9.2f\n", shape.c_str(), "W*Om", nn * 1e3, nn32 * 1e3, nn_blas * 1e3, nn_blas / nn);
        std::printf("%-12s %-8s %12.1f %12.1f %10.1f %9.2f\n", shape.c_str(), "W^T*Y", tn * 1e3, tn32 * 1e3, tn_blas * 1e3, tn_blas / tn);
    }
    return 0;
}
