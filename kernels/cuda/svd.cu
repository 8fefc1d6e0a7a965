#include "kernels/cuda/svd.cuh"

#include <algorithm>
#include <vector>

namespace quantflow::cuda {

LowRank randomized_svd(Solver& solver, const Stream& stream, float* w_f32, std::int64_t rows, std::int64_t cols,
                       const SvdSettings& settings) {
    // cuSOLVER is column-major: the row-major [rows, cols] weight is the column-major [cols, rows] matrix W^T.
    // W^T = U' S V'^T gives W = V' S U'^T: our U is V' and our V (k x cols, row-major) is U' (cols x k, col-major).
    const std::int64_t m = cols, n = rows, small = std::min(m, n);
    const std::int64_t k = std::clamp<std::int64_t>(settings.k, 1, small);
    const std::int64_t p = std::clamp<std::int64_t>(settings.oversample, 0, small - k);
    const std::int64_t iters = std::max(0, settings.power_iterations);
    DeviceBuffer<float> s(static_cast<std::size_t>(small), stream.get()), u(static_cast<std::size_t>(m * k), stream.get()),
        v(static_cast<std::size_t>(n * k), stream.get());
    DeviceBuffer<int> info(1, stream.get());
    QF_CUSOLVER_CHECK(cusolverDnSetDeterministicMode(solver.get(), CUSOLVER_DETERMINISTIC_RESULTS));
    std::size_t device_bytes = 0, host_bytes = 0;
    QF_CUSOLVER_CHECK(cusolverDnXgesvdr_bufferSize(solver.get(), solver.params(), 'S', 'S', m, n, k, p, iters, CUDA_R_32F, w_f32, m,
                                                   CUDA_R_32F, s.get(), CUDA_R_32F, u.get(), m, CUDA_R_32F, v.get(), n, CUDA_R_32F,
                                                   &device_bytes, &host_bytes));
    DeviceBuffer<unsigned char> work(std::max<std::size_t>(device_bytes, 1), stream.get());
    std::vector<unsigned char> host_work(std::max<std::size_t>(host_bytes, 1));
    // Every buffer cuSOLVER gets is written first: compute-sanitizer's initcheck saw Xgesvdr's geqr2 kernels
    // read uninitialised memory from buffers handed in unwritten, and reports none with them zeroed
    // (tools/initcheck_gesvdr.cu). A memset costs ~2 us per MB here, next to milliseconds of SVD.
    QF_CUDA_CHECK(cudaMemsetAsync(work.get(), 0, work.size(), stream.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(s.get(), 0, s.size() * sizeof(float), stream.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(u.get(), 0, u.size() * sizeof(float), stream.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(v.get(), 0, v.size() * sizeof(float), stream.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(info.get(), 0, sizeof(int), stream.get()));
    QF_CUSOLVER_CHECK(cusolverDnXgesvdr(solver.get(), solver.params(), 'S', 'S', m, n, k, p, iters, CUDA_R_32F, w_f32, m, CUDA_R_32F,
                                        s.get(), CUDA_R_32F, u.get(), m, CUDA_R_32F, v.get(), n, CUDA_R_32F, work.get(), device_bytes,
                                        host_work.data(), host_bytes, info.get()));
    int status = 0;
    std::vector<float> sigma(static_cast<std::size_t>(small)), uu(static_cast<std::size_t>(m * k)), vv(static_cast<std::size_t>(n * k));
    download(&status, info, 1, stream);
    download(sigma.data(), s, sigma.size(), stream);
    download(uu.data(), u, uu.size(), stream);
    download(vv.data(), v, vv.size(), stream);
    stream.sync();
    if (status != 0) throw Error("cusolverDnXgesvdr: info " + std::to_string(status) + " for a " + std::to_string(rows) + "x" +
                                 std::to_string(cols) + " weight, k " + std::to_string(k));
    LowRank out;
    out.rows = rows;
    out.cols = cols;
    out.k = k;
    out.sigma.assign(sigma.begin(), sigma.begin() + k);
    out.v = std::move(uu);  // U' column-major [cols, k] is V_k row-major [k, cols]
    out.u.resize(static_cast<std::size_t>(rows * k));  // V' column-major [rows, k] -> U_k row-major
    for (std::int64_t j = 0; j < k; ++j)
        for (std::int64_t r = 0; r < rows; ++r) out.u[static_cast<std::size_t>(r * k + j)] = vv[static_cast<std::size_t>(j * n + r)];
    return out;
}

}  // namespace quantflow::cuda
