// The optimizer's top-k SVD as quantflow runs it (kernels/sketch_svd.cpp on the chosen backend, SvdSettings'
// defaults), on a weight tools/bench_svd_accuracy.py --binary writes: times Backend::top_k_svd (best of the runs,
// the first run reported apart: it pays one-time costs such as the GPU's kernel loads) and writes U [rows, k] and
// V^T [k, cols] as float32 for the script to compare with the exact subspaces.
//
// usage: qf_bench_svd WEIGHT.bf16 ROWS COLS K SEED DEVICE OUT_PREFIX [RUNS]
//   WEIGHT.bf16: rows x cols bf16, row-major; DEVICE: cpu, cuda, cuda:N; writes OUT_PREFIX.u and OUT_PREFIX.v.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/backend.hpp"
#include "kernels/error.hpp"

using namespace quantflow;

int main(int argc, char** argv) {
    if (argc < 8) {
        std::fprintf(stderr, "usage: qf_bench_svd WEIGHT.bf16 ROWS COLS K SEED DEVICE OUT_PREFIX [RUNS]\n");
        return 2;
    }
    try {
        const std::int64_t rows = std::stoll(argv[2]), cols = std::stoll(argv[3]);
        std::vector<std::byte> bytes(static_cast<std::size_t>(rows * cols * 2));
        std::ifstream in(argv[1], std::ios::binary);
        in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        QF_EXPECT(in.gcount() == static_cast<std::streamsize>(bytes.size()), std::string(argv[1]) + ": shorter than " +
                                                                               std::to_string(bytes.size()) + " bytes");
        std::string why;
        const std::unique_ptr<Backend> backend = make_backend(parse_device(argv[6]), why);
        SvdSettings settings;
        settings.k = std::stoll(argv[4]);
        settings.seed = std::stoull(argv[5]);
        const int runs = argc > 8 ? std::stoi(argv[8]) : 3;
        const TensorView w{bytes.data(), DType::BF16, rows, cols};
        LowRank basis;
        double first = 0, best = 1e30;
        for (int i = 0; i < runs; ++i) {
            const auto t = std::chrono::steady_clock::now();
            basis = backend->top_k_svd("w", w, settings);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
            if (i == 0) first = s;
            else best = std::min(best, s);
        }
        std::printf("%s: %lldx%lld k %lld (l %lld, %d power iterations): first %.4f s, best of %d %.4f s\n", backend->name().c_str(),
                    static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(basis.k),
                    static_cast<long long>(basis.k + settings.oversample), settings.power_iterations, first, runs - 1,
                    runs > 1 ? best : first);
        std::ofstream(std::string(argv[7]) + ".u", std::ios::binary)
            .write(reinterpret_cast<const char*>(basis.u.data()), static_cast<std::streamsize>(basis.u.size() * 4));
        std::ofstream(std::string(argv[7]) + ".v", std::ios::binary)
            .write(reinterpret_cast<const char*>(basis.v.data()), static_cast<std::streamsize>(basis.v.size() * 4));
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qf_bench_svd: %s\n", e.what());
        return 1;
    }
}
