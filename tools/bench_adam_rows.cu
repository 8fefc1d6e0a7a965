// tools/bench_adam_rows.cu: `qf_bench_skinny --adam-rows`, the measurement behind kAdamColumnsPerThread
// (kernels/cuda/adam.cuh): one chunk of 25 AdamW steps on WAN-14B-shaped FP8 layers (k 16) with 2 and 4
// matrix columns per thread of the fused step; the median of 5 chunks after one warm-up, per step. The floor
// beside them: a step moves 16 bytes per element (offsets read and written, second moment read and written), timed as a device copy of
// the same bytes in the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/cuda/adam.cuh"

namespace quantflow::cuda {

int bench_adam_rows() {
    constexpr std::int64_t k = 16;
    constexpr int steps = 25, runs = 5;
    std::printf("AdamW fused step, k %lld, FP8 tensor-wise: ms per step (median of %d chunks of %d steps)\n", static_cast<long long>(k),
                runs, steps);
    std::printf("%-12s %8s %8s %8s\n", "shape", "2 cols", "4 cols", "floor");
    for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{5120, 5120}, {13824, 5120}, {5120, 13824}}) {
        LowRank basis;
        basis.rows = rows;
        basis.cols = cols;
        basis.k = k;
        std::mt19937 rng(7);
        std::normal_distribution<float> normal(0.0f, 0.01f);
        basis.u.resize(static_cast<std::size_t>(rows * k));
        basis.v.resize(static_cast<std::size_t>(k * cols));
        for (auto& x : basis.u) x = normal(rng);
        for (auto& x : basis.v) x = normal(rng);
        const ScaleGrid g{rows, cols, 1, 1};
        DeviceBuffer<float> scale(1);
        const float one = 1.0f / 448.0f;
        const Stream s;
        upload(scale, &one, 1, s);
        const std::vector<double> p0(static_cast<std::size_t>(k * k), 1e-3);
        std::printf("%5lldx%-6lld", static_cast<long long>(rows), static_cast<long long>(cols));
        for (const int per_thread : {2, 4}) {
            std::vector<double> ms;
            for (int run = 0; run <= runs; ++run) {
                AdamDevice adam(basis, k, g, scale.get(), p0, Optimizer::AdamW, 0.01, s, per_thread);
                std::vector<double> losses;
                const auto t0 = std::chrono::steady_clock::now();
                adam.steps(0, steps, losses);
                const double took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
                if (run > 0) ms.push_back(took / steps);
            }
            std::sort(ms.begin(), ms.end());
            std::printf(" %8.3f", ms[ms.size() / 2]);
        }
        {  // the floor: copy 8 bytes per element (read 8, write 8) on the device
            const std::size_t n = static_cast<std::size_t>(rows * cols) * 2;
            DeviceBuffer<float> a(n), b(n);
            std::vector<double> ms;
            for (int run = 0; run <= runs; ++run) {
                s.sync();
                const auto t0 = std::chrono::steady_clock::now();
                for (int step = 0; step < steps; ++step) cudaMemcpyAsync(b.get(), a.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s.get());
                s.sync();
                const double took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
                if (run > 0) ms.push_back(took / steps);
            }
            std::sort(ms.begin(), ms.end());
            std::printf(" %8.3f", ms[ms.size() / 2]);
        }
        std::printf("\n");
    }
    return 0;
}

}  // namespace quantflow::cuda
