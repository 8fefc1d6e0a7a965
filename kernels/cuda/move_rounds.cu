// The rounding-aware finish's rounds on the GPU (MoveRounds, kernels/rounding_work.hpp): the pool lives on the
// device, so a round moves only the k x k residual in and the ranked head with its chunk sums out. The same bits as
// the host's rounds (kernels/move_rounds_host.cpp): refine_rules.hpp's round_score, the same double sums in the
// same order (the CUDA build contracts nothing: --fmad=false), and a stable radix sort (CUB) of the positive scores,
// descending, over candidates in index order: best first, ties by the lower index, as the host's total order.
// Every buffer is allocated at creation: a cudaMalloc / cudaFree inside a round would stall the other layers' streams.
#include "kernels/cuda/move_rounds.cuh"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_select.cuh>
#include <thrust/iterator/counting_iterator.h>

#include <algorithm>
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/refine_rules.hpp"

namespace quantflow::cuda {
namespace {

constexpr int kThreads = 256;

unsigned int blocks_for(std::int64_t n) { return static_cast<unsigned int>(std::max<std::int64_t>(1, (n + kThreads - 1) / kThreads)); }

__global__ void pool_kernel(const MidpointMove* moves, std::int64_t size, std::int64_t cols, std::int64_t k, float* delta0, float* cost0,
                            std::int64_t* row_at, std::int64_t* col_at) {
    const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (i >= size) return;
    delta0[i] = moves[i].delta;
    cost0[i] = moves[i].cost;
    row_at[i] = moves[i].element / cols * k;
    col_at[i] = moves[i].element % cols * k;
}

// uph[r, j] = sum_i U[r, i] hp[i, j] in double, i in order, stored as float (the host's rank_rows).
__global__ void rank_rows_kernel(std::int64_t rows, std::int64_t k, const float* u, const double* hp, float* uph) {
    const std::int64_t x = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (x >= rows * k) return;
    const std::int64_t r = x / k, j = x % k;
    double acc = 0;
    for (std::int64_t i = 0; i < k; ++i) acc += static_cast<double>(u[r * k + i]) * hp[i * k + j];
    uph[x] = static_cast<float>(acc);
}

__global__ void score_kernel(std::int64_t size, std::int64_t k, const float* uph, const float* vt, const std::int64_t* row_at,
                             const std::int64_t* col_at, const float* delta, const float* cost, const double* leverage, double lambda,
                             double* score) {
    const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (i >= size) return;
    score[i] = round_score(uph + row_at[i], vt + col_at[i], k, delta[i], cost[i], leverage[i], lambda);
}

struct PositiveAt {
    const double* score;
    __device__ bool operator()(std::uint32_t i) const { return score[i] > 0; }
};

__global__ void gather_scores_kernel(const std::uint32_t* order, const std::int64_t* count, const double* score, double* keys) {
    const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (t < *count) keys[t] = score[order[t]];
}

// One block per chunk, one thread per k x k entry: the host's sum_moves, entry by entry.
__global__ void chunk_sums_kernel(const std::uint32_t* head, std::int64_t limit, std::int64_t chunk, std::int64_t k, const float* delta,
                                  const float* u, const double* vt, const std::int64_t* row_at, const std::int64_t* col_at, double* sums) {
    const std::int64_t from = blockIdx.x * chunk, to = from + chunk < limit ? from + chunk : limit;
    for (std::int64_t e = threadIdx.x; e < k * k; e += blockDim.x) {
        const std::int64_t a = e / k, c = e % k;
        double s = 0;
        for (std::int64_t t = from; t < to; ++t) {
            const std::uint32_t i = head[t];
            const double du = static_cast<double>(delta[i]) * u[row_at[i] + a];
            s += du * vt[col_at[i] + c];
        }
        sums[blockIdx.x * k * k + e] = s;
    }
}

__global__ void flip_kernel(const std::uint32_t* head, std::int64_t take, float* delta, float* cost) {
    const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (t >= take) return;
    const std::uint32_t i = head[t];
    delta[i] = -delta[i];
    cost[i] = -cost[i];
}

__global__ void gather_costs_kernel(const std::uint32_t* head, std::int64_t count, const float* cost, float* out) {
    const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
    if (t < count) out[t] = cost[head[t]];
}

class DeviceMoveRounds final : public MoveRounds {
public:
    DeviceMoveRounds(int device, const RoundsPool& pool, const Stream& s)
        : device_(device), s_(s), rows_(pool.rows), k_(pool.k), size_(static_cast<std::int64_t>(pool.moves.size())) {
        const DeviceScope on(device_, DeviceScope::Mode::Checked);
        const auto n = static_cast<std::size_t>(size_);
        DeviceBuffer<MidpointMove> moves(n, s_.get());
        upload(moves, pool.moves.data(), n, s_);
        for (DeviceBuffer<float>* b : {&delta0_, &cost0_, &delta_, &cost_}) *b = DeviceBuffer<float>(n, s_.get());
        row_at_ = DeviceBuffer<std::int64_t>(n, s_.get());
        col_at_ = DeviceBuffer<std::int64_t>(n, s_.get());
        leverage_ = DeviceBuffer<double>(n, s_.get());
        score_ = DeviceBuffer<double>(n, s_.get());
        keys_ = DeviceBuffer<double>(n, s_.get());
        sorted_keys_ = DeviceBuffer<double>(n, s_.get());
        order_ = DeviceBuffer<std::uint32_t>(n, s_.get());
        sorted_ = DeviceBuffer<std::uint32_t>(n, s_.get());
        head_costs_ = DeviceBuffer<float>(n, s_.get());
        count_ = DeviceBuffer<std::int64_t>(1, s_.get());
        // Scratch of the selection and the sort, once: a cudaMalloc / cudaFree per round would stall every stream.
        std::size_t select_bytes = 0, sort_bytes = 0;
        QF_CUDA_CHECK(cub::DeviceSelect::If(nullptr, select_bytes, thrust::counting_iterator<std::uint32_t>(0), order_.get(), count_.get(),
                                            size_, PositiveAt{score_.get()}, s_.get()));
        QF_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, sort_bytes, keys_.get(), sorted_keys_.get(), order_.get(),
                                                                sorted_.get(), size_, 0, 64, s_.get()));
        scratch_bytes_ = std::max<std::size_t>({select_bytes, sort_bytes, 1});
        scratch_ = DeviceBuffer<unsigned char>(scratch_bytes_, s_.get());
        u_ = DeviceBuffer<float>(pool.u.size(), s_.get());
        vt64_ = DeviceBuffer<double>(pool.vt.size(), s_.get());
        vt_ = DeviceBuffer<float>(pool.vt.size(), s_.get());
        uph_ = DeviceBuffer<float>(static_cast<std::size_t>(rows_ * k_), s_.get());
        hp_ = DeviceBuffer<double>(static_cast<std::size_t>(k_ * k_), s_.get());
        const std::vector<float> vt(pool.vt.begin(), pool.vt.end());
        upload(leverage_, pool.leverage.data(), n, s_);
        upload(u_, pool.u.data(), pool.u.size(), s_);
        upload(vt64_, pool.vt.data(), pool.vt.size(), s_);
        upload(vt_, vt.data(), vt.size(), s_);
        pool_kernel<<<blocks_for(size_), kThreads, 0, s_.get()>>>(moves.get(), size_, pool.cols, k_, delta0_.get(), cost0_.get(),
                                                                   row_at_.get(), col_at_.get());
        QF_CUDA_CHECK(cudaGetLastError());
        s_.sync();  // `moves` and `vt` die here
        restart();
    }

    std::vector<std::uint32_t> rank(const std::vector<double>& hp, double lambda, std::size_t cap, std::vector<float>& costs) override {
        const DeviceScope on(device_, DeviceScope::Mode::Checked);
        upload(hp_, hp.data(), hp.size(), s_);
        rank_rows_kernel<<<blocks_for(rows_ * k_), kThreads, 0, s_.get()>>>(rows_, k_, u_.get(), hp_.get(), uph_.get());
        score_kernel<<<blocks_for(size_), kThreads, 0, s_.get()>>>(size_, k_, uph_.get(), vt_.get(), row_at_.get(), col_at_.get(),
                                                                    delta_.get(), cost_.get(), leverage_.get(), lambda, score_.get());
        QF_CUDA_CHECK(cudaGetLastError());
        // The positive candidates in index order, then sorted by score, descending (a stable radix sort: ties keep
        // the lower index first).
        std::size_t bytes = scratch_bytes_;
        QF_CUDA_CHECK(cub::DeviceSelect::If(scratch_.get(), bytes, thrust::counting_iterator<std::uint32_t>(0), order_.get(), count_.get(),
                                            size_, PositiveAt{score_.get()}, s_.get()));
        std::int64_t positives = 0;
        download(&positives, count_, 1, s_);
        s_.sync();
        const std::int64_t ranked = std::min<std::int64_t>(positives, static_cast<std::int64_t>(cap));
        std::vector<std::uint32_t> head(static_cast<std::size_t>(ranked));
        costs.resize(head.size());
        head_ = sorted_.get();  // the sorted order's first `ranked`: it stays on the device for chunk_sums and flip
        if (ranked == 0) return head;
        gather_scores_kernel<<<blocks_for(positives), kThreads, 0, s_.get()>>>(order_.get(), count_.get(), score_.get(), keys_.get());
        QF_CUDA_CHECK(cudaGetLastError());
        bytes = scratch_bytes_;
        QF_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(scratch_.get(), bytes, keys_.get(), sorted_keys_.get(), order_.get(),
                                                                sorted_.get(), positives, 0, 64, s_.get()));
        gather_costs_kernel<<<blocks_for(ranked), kThreads, 0, s_.get()>>>(sorted_.get(), ranked, cost_.get(), head_costs_.get());
        QF_CUDA_CHECK(cudaGetLastError());
        QF_CUDA_CHECK(cudaMemcpyAsync(head.data(), sorted_.get(), head.size() * sizeof(std::uint32_t), cudaMemcpyDeviceToHost, s_.get()));
        download(costs.data(), head_costs_, costs.size(), s_);
        s_.sync();
        return head;
    }

    std::vector<double> chunk_sums(std::size_t limit, std::size_t chunk) override {
        const DeviceScope on(device_, DeviceScope::Mode::Checked);
        const std::size_t chunks = (limit + chunk - 1) / chunk, kk = static_cast<std::size_t>(k_ * k_);
        std::vector<double> sums(chunks * kk);
        if (chunks == 0) return sums;
        if (sums_.size() < sums.size()) sums_ = DeviceBuffer<double>(sums.size(), s_.get());  // once: the driver's chunk count is fixed
        chunk_sums_kernel<<<static_cast<unsigned int>(chunks), kThreads, 0, s_.get()>>>(
            head_, static_cast<std::int64_t>(limit), static_cast<std::int64_t>(chunk), k_, delta_.get(), u_.get(), vt64_.get(),
            row_at_.get(), col_at_.get(), sums_.get());
        QF_CUDA_CHECK(cudaGetLastError());
        download(sums.data(), sums_, sums.size(), s_);
        s_.sync();
        return sums;
    }

    void flip(std::size_t take) override {
        if (take == 0) return;
        const DeviceScope on(device_, DeviceScope::Mode::Checked);
        flip_kernel<<<blocks_for(static_cast<std::int64_t>(take)), kThreads, 0, s_.get()>>>(head_, static_cast<std::int64_t>(take),
                                                                                            delta_.get(), cost_.get());
        QF_CUDA_CHECK(cudaGetLastError());
    }

    void restart() override {
        const DeviceScope on(device_, DeviceScope::Mode::Checked);
        const std::size_t bytes = static_cast<std::size_t>(size_) * sizeof(float);
        QF_CUDA_CHECK(cudaMemcpyAsync(delta_.get(), delta0_.get(), bytes, cudaMemcpyDeviceToDevice, s_.get()));
        QF_CUDA_CHECK(cudaMemcpyAsync(cost_.get(), cost0_.get(), bytes, cudaMemcpyDeviceToDevice, s_.get()));
    }

    ~DeviceMoveRounds() override {
        const DeviceScope on(device_);
        cudaStreamSynchronize(s_.get());  // no check: a destructor does not throw (an error resurfaces on the next call)
    }

private:
    int device_;
    const Stream& s_;
    std::int64_t rows_, k_, size_;
    DeviceBuffer<float> delta0_, cost0_, delta_, cost_, u_, vt_, uph_, head_costs_;
    DeviceBuffer<std::int64_t> row_at_, col_at_, count_;
    DeviceBuffer<double> leverage_, score_, keys_, sorted_keys_, vt64_, hp_, sums_;
    DeviceBuffer<std::uint32_t> order_, sorted_;
    DeviceBuffer<unsigned char> scratch_;
    std::size_t scratch_bytes_ = 0;
    const std::uint32_t* head_ = nullptr;
};

}  // namespace

std::unique_ptr<MoveRounds> make_device_rounds(int device, const RoundsPool& pool, const Stream& s) {
    return std::make_unique<DeviceMoveRounds>(device, pool, s);
}

}  // namespace quantflow::cuda
