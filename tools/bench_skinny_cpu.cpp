// The CPU SVD's skinny products (kernels/cpu/dense_cpu.cpp gemm_nn / gemm_tn) against one OpenBLAS sgemm call of
// the same product, same process, same data: W [M, N] times Omega [N, 32] and W^T times Y [M, 32], for the WAN-14B
// shapes, best of 5 runs each, with the ratio OpenBLAS time / ours (> 1: ours faster). Run it pinned to one core
// (taskset -c 0) to compare single-thread kernels, or as is for the band-parallel version.
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
    std::printf("%-12s %-8s %10s %10s %8s\n", "shape", "product", "ours ms", "blas ms", "blas/ours");
    for (const auto& [m, n] : {std::pair<long, long>{5120, 5120}, {13824, 5120}, {5120, 13824}}) {
        std::vector<float> w(static_cast<std::size_t>(m * n)), om(static_cast<std::size_t>(n * p)), y(static_cast<std::size_t>(m * p)),
            z(static_cast<std::size_t>(n * p));
        std::mt19937 g(1);
        std::normal_distribution<float> d;
        for (float& x : w) x = d(g);
        for (float& x : om) x = d(g);
        for (float& x : y) x = d(g);
        const double nn = best_of(5, [&] { quantflow::gemm_nn(w.data(), m, n, om.data(), p, y.data()); });
        const double nn_blas = best_of(5, [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(p), static_cast<int>(n), 1.0f,
                        w.data(), static_cast<int>(n), om.data(), static_cast<int>(p), 0.0f, y.data(), static_cast<int>(p));
        });
        const double tn = best_of(5, [&] { quantflow::gemm_tn(w.data(), m, n, y.data(), p, z.data()); });
        const double tn_blas = best_of(5, [&] {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(p), static_cast<int>(m), 1.0f,
                        w.data(), static_cast<int>(n), y.data(), static_cast<int>(p), 0.0f, z.data(), static_cast<int>(p));
        });
        const std::string shape = std::to_string(m) + "x" + std::to_string(n);
        std::printf("%-12s %-8s %10.1f %10.1f %8.2f\n", shape.c_str(), "W*Om", nn * 1e3, nn_blas * 1e3, nn_blas / nn);
        std::printf("%-12s %-8s %10.1f %10.1f %8.2f\n", shape.c_str(), "W^T*Y", tn * 1e3, tn_blas * 1e3, tn_blas / tn);
    }
    return 0;
}
