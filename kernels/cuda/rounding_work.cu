// The CUDA backend's learned-rounding primitives (kernels/rounding_work.hpp). Full-size passes on the device;
// small products (U Z, U Y: rows x k) and the k x k reductions on the host in a fixed order, like the CPU's.
#include "kernels/cuda/rounding_work.cuh"

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "kernels/cuda/adam.cuh"
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/move_rounds.cuh"
#include "kernels/cuda/rounding.cuh"
#include "kernels/cuda/skinny.cuh"
#include "kernels/error.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow::cuda {
namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

class CudaRoundingWork final : public RoundingWork {
public:
    CudaRoundingWork(int device, std::string_view name, const LowRank& basis, QuantizedTensor& q, StagingRing& ring,
                     const std::function<DeviceWeightRef(const Stream&)>& load_weight)
        : device_(device), name_(name), basis_(basis), q_(q), ring_(ring), kind_(code_kind(q.spec.format)), n_(at(q.rows * q.cols)),
          g_(grid_of(q.spec, q.rows, q.cols)) {
        QF_EXPECT(basis.rows == q.rows && basis.cols == q.cols && q.codes.size() == n_,
                  "tensor '" + name_ + "': basis [" + std::to_string(basis.rows) + ", " + std::to_string(basis.cols) +
                      "] does not match the codes [" + std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]");
        weight_ = load_weight(s_);
        codes_ = DeviceBuffer<std::uint8_t>(n_, s_.get());
        rtn_ = DeviceBuffer<std::uint8_t>(n_, s_.get());
        scales_ = DeviceBuffer<float>(q.scales.size(), s_.get());
        v_ = DeviceBuffer<float>(basis.v.size(), s_.get());
        v64_ = DeviceBuffer<double>(basis.v.size(), s_.get());
        e_work_ = DeviceBuffer<double>(n_, s_.get());  // the error (or the INT8 step's product) in double for the projections
        t_ = DeviceBuffer<double>(at(q.rows * basis.k), s_.get());
        ring_.upload(codes_.get(), q.codes.data(), n_, s_);
        QF_CUDA_CHECK(cudaMemcpyAsync(rtn_.get(), codes_.get(), n_, cudaMemcpyDeviceToDevice, s_.get()));
        const std::vector<float> scales = cell_scales(q);
        upload(scales_, scales.data(), scales.size(), s_);
        upload(v_, basis.v.data(), basis.v.size(), s_);
        const std::vector<double> v64(basis.v.begin(), basis.v.end());
        upload(v64_, v64.data(), v64.size(), s_);
        s_.sync();  // v64 dies here
    }
    ~CudaRoundingWork() override {
        adam_.reset();
        cudaStreamSynchronize(s_.get());  // no check: a destructor does not throw (an error resurfaces on the next call)
    }

    std::vector<double> project(std::int64_t k, double* error2) override {
        const auto on = enter(k);
        project_rows_lt(lt_, weight_.view, g_, codes_.get(), scales_.get(), kind_, v64_.get(), static_cast<int>(k), e_work_.get(),
                        t_.get(), s_.get());
        if (error2) *error2 = sum_squares(e_work_.get(), static_cast<std::int64_t>(n_), s_.get());  // E is in e_work_ now
        return reduce(k);
    }

    // uz = U_k Z in float (i summed in order), then the rank-k correction fused with the final rounding.
    void correct_and_round(const std::vector<double>& z, std::int64_t k) override {
        const auto on = enter(k);
        const std::int64_t rows = basis_.rows, wide = basis_.k;
        const std::vector<float> zf(z.begin(), z.end());
        std::vector<float> uz(at(rows * k));
        for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t j = 0; j < k; ++j) {
                float acc = 0.0f;
                for (std::int64_t i = 0; i < k; ++i) acc += basis_.u[at(r * wide + i)] * zf[at(i * k + j)];
                uz[at(r * k + j)] = acc;
            }
        DeviceBuffer<float> duz(uz.size(), s_.get());
        upload(duz, uz.data(), uz.size(), s_);
        correct_codes(weight_.view, g_, codes_.get(), scales_.get(), kind_, duz.get(), v_.get(), static_cast<int>(k), s_.get());
        s_.sync();
    }

    // U_k^T ((U_k Y V_k) * D^2) V_k^T: U_k Y on the host in double (as the CPU), the rest on the device.
    std::vector<double> int8_step_direct(const std::vector<double>& y, std::int64_t k) override {
        const auto on = enter(k);
        const std::int64_t rows = basis_.rows, wide = basis_.k;
        std::vector<double> uy(at(rows * k), 0.0);
        for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j) uy[at(r * k + j)] += static_cast<double>(basis_.u[at(r * wide + i)]) * y[at(i * k + j)];
        DeviceBuffer<double> duy(uy.size(), s_.get());
        upload(duy, uy.data(), uy.size(), s_);
        scaled_low_rank(rows, basis_.cols, g_, scales_.get(), duy.get(), v64_.get(), static_cast<int>(k), e_work_.get(), s_.get());
        rows_times_vt_lt(lt_, rows, basis_.cols, e_work_.get(), v64_.get(), static_cast<int>(k), t_.get(), s_.get());
        return reduce(k);
    }

    void adam_begin(std::int64_t k, const std::vector<double>& p0, Optimizer optimizer, double lr) override {
        const auto on = enter(k);
        adam_.reset();
        adam_ = std::make_unique<AdamDevice>(basis_, k, g_, scales_.get(), p0, optimizer, lr, s_);
    }
    AdamLoopState adam_steps(int t0, int count, std::vector<double>& losses) override {
        QF_EXPECT(adam_, "tensor '" + name_ + "': adam_steps before adam_begin");
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        return adam_->steps(t0, count, losses);
    }
    void adam_finish(int best_buffer) override {
        QF_EXPECT(adam_, "tensor '" + name_ + "': adam_finish before adam_begin");
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        adam_->finish(best_buffer, kind_, codes_.get());
        s_.sync();
        adam_.reset();
    }

    std::vector<MidpointMove> midpoint_moves(const MidpointQuery& query, double& error2) override {
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        // The finish runs after the optimizer: its buffers go before the candidates' come (layer_memory counts
        // the larger of the two, not both).
        adam_.reset();
        const RefineTables tables = refine_tables(q_.spec.format);
        const unsigned int blocks = midpoint_blocks(static_cast<std::int64_t>(n_));
        DeviceBuffer<unsigned long long> count(1, s_.get());
        DeviceBuffer<double> partial(blocks, s_.get());
        std::vector<double> sums(blocks);
        // keep == 0 only measures error2: room for no move.
        unsigned long long capacity = query.keep == 0 ? 0 : n_ / 16 + (1u << 20), total = 0;
        for (;;) {
            DeviceBuffer<MidpointMove> found(static_cast<std::size_t>(std::max<unsigned long long>(capacity, 1)), s_.get());
            QF_CUDA_CHECK(cudaMemsetAsync(count.get(), 0, sizeof(unsigned long long), s_.get()));
            find_midpoint_moves(weight_.view, g_, codes_.get(), scales_.get(), kind_, tables, query.cost_share, found.get(), count.get(),
                                capacity, partial.get(), s_.get());
            download(&total, count, 1, s_);
            download(sums.data(), partial, blocks, s_);
            s_.sync();
            if (query.keep > 0 && total > capacity) {  // never drop a move: the pass again, with room for all of them
                capacity = total;
                continue;
            }
            error2 = 0;
            for (const double x : sums) error2 += x;
            if (query.keep == 0 || total == 0) return {};
            // The selection on the device (the atomic compaction's order varies from run to run; the ranking and
            // the element order of the result do not): only the kept moves cross the bus.
            const std::size_t keep = std::min<std::size_t>(query.keep, static_cast<std::size_t>(total));
            DeviceBuffer<MidpointMove> kept(keep, s_.get());
            DeviceBuffer<double> row, row_p, col, col_p;  // the leverage, needed only to rank (the kernel indexes it unchecked)
            if (total > query.keep) {
                QF_EXPECT(query.row.size() == at(q_.rows) && query.row_p.size() == at(q_.rows) && query.col.size() == at(q_.cols) &&
                              query.col_p.size() == at(q_.cols),
                          "tensor '" + name_ + "': midpoint query leverage sizes do not match [" + std::to_string(q_.rows) + ", " +
                              std::to_string(q_.cols) + "]");
                const auto to_device = [&](std::span<const double> src) {
                    DeviceBuffer<double> d(src.size(), s_.get());
                    upload(d, src.data(), src.size(), s_);
                    return d;
                };
                row = to_device(query.row);
                row_p = to_device(query.row_p);
                col = to_device(query.col);
                col_p = to_device(query.col_p);
            }
            cuda::keep_best_moves(found.get(), static_cast<std::size_t>(total), query.keep, q_.cols, row.get(), row_p.get(), col.get(),
                                  col_p.get(), query.priority_extra, query.lambda, kept.get(), s_.get());
            std::vector<MidpointMove> moves(keep);
            download(moves.data(), kept, keep, s_);
            s_.sync();
            return moves;
        }
    }

    void move_codes(std::span<const MidpointMove> moves) override {
        if (moves.empty()) return;
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        DeviceBuffer<MidpointMove> d(moves.size(), s_.get());
        upload(d, moves.data(), moves.size(), s_);
        cuda::move_codes(d.get(), static_cast<std::int64_t>(moves.size()), kind_, codes_.get(), s_.get());
        s_.sync();
    }

    std::unique_ptr<MoveRounds> move_rounds(const RoundsPool& pool) override { return make_device_rounds(device_, pool, s_); }

    void reset_codes() override {
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        QF_CUDA_CHECK(cudaMemcpyAsync(codes_.get(), rtn_.get(), n_, cudaMemcpyDeviceToDevice, s_.get()));
    }

    void fetch_codes(QuantizedTensor& q) override {
        const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
        q.codes.resize(n_);
        ring_.download(q.codes.data(), codes_.get(), n_, s_);
    }

private:
    // Checks k and makes this layer's GPU current until the caller's scope ends.
    [[nodiscard]] cuda::DeviceScope enter(std::int64_t k) {
        QF_EXPECT(k >= 1 && k <= basis_.k, "tensor '" + name_ + "': " + std::to_string(k) + " components asked of a basis of " +
                                               std::to_string(basis_.k));
        return cuda::DeviceScope(device_, cuda::DeviceScope::Mode::Checked);
    }

    // P[i, j] = sum_r U[r, i] T[r, j] over the leading k components, in double, rows in order (the CPU's
    // reduce_projection).
    std::vector<double> reduce(std::int64_t k) {
        const std::int64_t rows = basis_.rows, wide = basis_.k;
        std::vector<double> t(at(rows * k)), p(at(k * k), 0.0);
        download(t.data(), t_, t.size(), s_);
        s_.sync();
        for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j) p[at(i * k + j)] += static_cast<double>(basis_.u[at(r * wide + i)]) * t[at(r * k + j)];
        return p;
    }

    int device_;
    std::string name_;
    const LowRank& basis_;
    QuantizedTensor& q_;
    StagingRing& ring_;
    CodeKind kind_;
    std::size_t n_;
    ScaleGrid g_;
    Stream s_;  // before every buffer: it outlives them
    LtHandle lt_;
    DeviceWeightRef weight_;
    DeviceBuffer<std::uint8_t> codes_, rtn_;
    DeviceBuffer<float> scales_, v_;
    DeviceBuffer<double> v64_, e_work_, t_;
    std::unique_ptr<AdamDevice> adam_;
};

}  // namespace

ScaleGrid grid_of(const QuantSpec& spec, std::int64_t rows, std::int64_t cols) {
    ScaleGrid g;
    g.block_rows = scale_block_rows(spec, rows);
    g.block_cols = scale_block_cols(spec, cols);
    g.grid_rows = scale_rows(spec, rows);
    g.grid_cols = scale_cols(spec, cols);
    return g;
}

std::unique_ptr<RoundingWork> make_rounding_work(int device, std::string_view name, const LowRank& basis, QuantizedTensor& q,
                                                 StagingRing& ring, const std::function<DeviceWeightRef(const Stream&)>& load_weight) {
    return std::make_unique<CudaRoundingWork>(device, name, basis, q, ring, load_weight);
}

}  // namespace quantflow::cuda
