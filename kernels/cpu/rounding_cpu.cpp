// The CPU backend's learned-rounding primitives (kernels/rounding_work.hpp): full-size passes in fixed row
// bands run in oneTBB tasks over the file-dtype weight, the caller's codes and the basis. Every pass gives
// the same bits whatever the thread count (dense_cpu.hpp).
#include <cblas.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "kernels/cpu/code_gather_cpu.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/cpu/rounding_cpu.hpp"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow {
namespace {

class CpuRoundingWork final : public RoundingWork {
public:
    CpuRoundingWork(std::string_view name, const TensorView& w, const LowRank& basis, QuantizedTensor& q)
        : name_(name), w_(w), basis_(basis), q_(q) {}

    // The last projection is kept: after re-rounding (correct_and_round, adam_finish) it is brought up to date from
    // the changed codes alone (projection_change), so the driver's next project costs nothing.
    std::vector<double> project(std::int64_t k, double* error2) override {
        if (!last_ || last_->k != k) {
            double e2 = 0;
            std::vector<double> p = initial_projection(w_, q_, leading(k), &e2);
            last_ = Projection{k, std::move(p), e2};
        }
        if (error2) *error2 = last_->error2;
        return last_->p;
    }

    void correct_and_round(const std::vector<double>& z, std::int64_t k) override {
        // q = q0 - (U Z V) * (FP8: 1/D, INT8: D), then the final rounding.
        const LowRank& b = leading(k);
        const bool fp8 = !is_integer_grid(q_.spec.format);  // float grids: code units are w / scale
        const Matrix uz = times_u(b, z);
        const std::int64_t n = b.cols;
        std::vector<CodeChange> changes;
        round_offsets(q_, [&](std::int64_t r0, std::int64_t rows, float* out) {
            low_rank_rows(uz, b, r0, rows, out);
            RowScales scales(q_);
            for (std::int64_t i = 0; i < rows; ++i) {
                const float* d = scales.at(r0 + i);
                float* o = out + i * n;
                for (std::int64_t c = 0; c < n; ++c) {
                    const float s = d[c];
                    o[c] = fp8 ? -o[c] * (1.0f / s) : -o[c] * s;
                }
            }
        }, last_ ? &changes : nullptr);
        follow(changes);
    }

    // A(Y) with full-size products (4 M N k flops), in double like the k-space operator.
    std::vector<double> int8_step_direct(const std::vector<double>& y, std::int64_t k) override {
        const LowRank& b = leading(k);
        const std::int64_t n = b.cols;
        std::vector<double> uy(static_cast<std::size_t>(b.rows * k), 0.0);
        const std::vector<double> v(b.v.begin(), b.v.end());
        for (std::int64_t r = 0; r < b.rows; ++r)
            for (std::int64_t i = 0; i < k; ++i)
                for (std::int64_t j = 0; j < k; ++j)
                    uy[static_cast<std::size_t>(r * k + j)] += static_cast<double>(b.u[static_cast<std::size_t>(r * k + i)]) * y[static_cast<std::size_t>(i * k + j)];
        return project_error_f64(b, [&](std::int64_t r0, std::int64_t rows, double* e) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(n), static_cast<int>(k), 1.0,
                        uy.data() + r0 * k, static_cast<int>(k), v.data(), static_cast<int>(n), 0.0, e, static_cast<int>(n));
            RowScales scales(q_);
            for (std::int64_t i = 0; i < rows; ++i) {
                const float* d = scales.at(r0 + i);
                double* er = e + i * n;
                for (std::int64_t c = 0; c < n; ++c) {
                    const double s = d[c];
                    er[c] *= s * s;
                }
            }
        });
    }

    void adam_begin(std::int64_t k, const std::vector<double>& p0, Optimizer optimizer, double lr) override {
        adam_ = std::make_unique<AdamCpu>(leading(k), q_, p0, optimizer, lr);
    }
    AdamLoopState adam_steps(int t0, int count, std::vector<double>& losses) override { return adam_->steps(t0, count, losses); }
    void adam_finish(int best_buffer) override {
        std::vector<CodeChange> changes;
        adam_->finish(best_buffer, last_ ? &changes : nullptr);
        adam_.reset();
        follow(changes);
    }

    // Every admissible move at 24 bytes would be a list of up to half the layer's elements (the wide finish), of
    // which keep_best_moves keeps `keep`. So when keep is smaller than that, the pass first values the moves of
    // every 16th band and collects only moves whose value reaches the (1.5 keep / 16)-th best of that sample (about
    // 1.5 keep of them: the sample's rank is thousands, so its relative spread is about 1%; 2 keep cost 40% more
    // time selecting), again with no floor if that gives fewer than keep. The kept moves are the same: with at
    // least keep moves at or above the floor, the keep best are all among them. With the floor, the pass skips
    // the elements whose leverage bound cannot reach it (MidpointScanCpu).
    std::vector<MidpointMove> midpoint_moves(const MidpointQuery& query, double& error2) override {
        const std::int64_t n = q_.cols;
        const std::int64_t bands = (q_.rows + band_rows(n) - 1) / band_rows(n);
        double floor = 0;
        if (query.keep > 0 && bands >= 4 * kSampleEvery) {
            const std::vector<MidpointMove> sample = scan_moves(query, kSampleEvery, 0, nullptr);
            const std::size_t rank = 3 * query.keep / (2 * kSampleEvery);
            if (sample.size() > rank) {
                std::vector<double> values(sample.size());
                for (std::size_t i = 0; i < sample.size(); ++i) values[i] = move_value(query, sample[i]);
                std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank), values.end(), std::greater<>());
                floor = values[rank];
            }
        }
        // The error of the current codes is the kept projection's when there is one (the pass then skips it).
        std::vector<MidpointMove> all = scan_moves(query, 1, floor, last_ ? nullptr : &error2);
        if (floor > 0 && all.size() < query.keep) all = scan_moves(query, 1, 0, last_ ? nullptr : &error2);
        if (last_) error2 = last_->error2;
        keep_best_moves(all, query, n);
        return all;
    }

    void move_codes(std::span<const MidpointMove> moves) override {
        last_.reset();
        const std::uint8_t sign = grid_sign_bit(q_.spec.format);
        for (const MidpointMove& mv : moves) {
            std::uint8_t& code = q_.codes[static_cast<std::size_t>(mv.element)];
            code = grid_step_bits(sign, code, mv.step);
        }
    }

    // Round-to-nearest is deterministic: quantizing again gives the codes the work started from (nvfp4: encoding
    // with the scales q holds, which a scale search may have chosen).
    void reset_codes() override {
        last_.reset();
        if (q_.spec.format == QuantFormat::Nvfp4) encode_nvfp4_cpu(w_, q_);
        else q_.codes = quantize_cpu(name_, w_, q_.spec).codes;
    }
    void fetch_codes(QuantizedTensor& q) override {
        if (&q != &q_) q.codes = q_.codes;
    }

private:
    static constexpr std::int64_t kSampleEvery = 16;

    struct Projection {
        std::int64_t k;
        std::vector<double> p;
        double error2;
    };

    // Brings the kept projection up to date after a re-rounding that made `changes`; drops it when so many codes
    // changed (more than 1 in 8) that a full pass costs less.
    void follow(const std::vector<CodeChange>& changes) {
        if (!last_) return;
        if (static_cast<std::int64_t>(changes.size()) * 8 > q_.rows * q_.cols) {
            last_.reset();
            return;
        }
        const ProjectionChange d = projection_change(w_, q_, leading(last_->k), changes);
        for (std::size_t i = 0; i < d.dp.size(); ++i) last_->p[i] += d.dp[i];
        last_->error2 += d.derror2;
    }

    double move_value(const MidpointQuery& query, const MidpointMove& mv) const {
        const auto r = static_cast<std::size_t>(mv.element / q_.cols), c = static_cast<std::size_t>(mv.element % q_.cols);
        return midpoint_value(mv.delta, mv.cost,
                              midpoint_leverage(mv.delta, query.row[r], query.col[c], query.row_p[r], query.col_p[c], query.priority_extra),
                              query.lambda);
    }

    // The admissible moves of every `every`-th band of rows whose value is at least `floor` (0: all of them), in
    // element order, and in error2 (when given) ||dequant(q) - W||^2 over those bands.
    std::vector<MidpointMove> scan_moves(const MidpointQuery& query, std::int64_t every, double floor, double* error2) const {
        const MidpointScanCpu scan(w_, q_, query);
        const std::int64_t m = q_.rows, band = band_rows(q_.cols), bands = (m + band - 1) / band, scanned = (bands + every - 1) / every;
        std::vector<std::vector<MidpointMove>> found(static_cast<std::size_t>(scanned));
        std::vector<double> partial(static_cast<std::size_t>(scanned), 0.0);
        oneapi::tbb::parallel_for(std::int64_t{0}, scanned, [&](std::int64_t i) {
            const std::int64_t r0 = i * every * band;
            found[static_cast<std::size_t>(i)] =
                scan.band(r0, std::min(m, r0 + band) - r0, floor, error2 ? &partial[static_cast<std::size_t>(i)] : nullptr);
        });
        std::vector<MidpointMove> all;
        if (error2) *error2 = 0;
        for (std::size_t i = 0; i < found.size(); ++i) {
            all.insert(all.end(), found[i].begin(), found[i].end());
            if (error2) *error2 += partial[i];
        }
        return all;
    }

    // The leading k components of the basis (the basis itself when k is its width).
    const LowRank& leading(std::int64_t k) {
        if (k >= basis_.k) return basis_;
        auto it = narrow_.find(k);
        if (it == narrow_.end()) it = narrow_.emplace(k, leading_components(basis_, k)).first;
        return it->second;
    }

    std::string name_;
    const TensorView& w_;
    const LowRank& basis_;
    QuantizedTensor& q_;
    std::map<std::int64_t, LowRank> narrow_;
    std::unique_ptr<AdamCpu> adam_;
    std::optional<Projection> last_;  // of the current codes, while they are known
};

}  // namespace

std::vector<double> initial_projection(const TensorView& w, const QuantizedTensor& q, const LowRank& basis, double* error2) {
    use_single_threaded_blas();
    const auto values = code_values(q.spec.format);
    const std::int64_t n = basis.cols, band = band_rows(n);
    std::vector<double> partial(static_cast<std::size_t>((basis.rows + band - 1) / band), 0.0);  // per band, summed in order
    std::vector<double> p = project_error_f64(basis, [&](std::int64_t r0, std::int64_t rows, double* e) {
        std::vector<float> wrow(static_cast<std::size_t>(n));
        RowScales scales(q);
        double e2 = 0;
        for (std::int64_t i = 0; i < rows; ++i) {
            decode_row_cpu(w, r0 + i, 0, n, wrow.data());
            const std::uint8_t* codes = q.codes.data() + (r0 + i) * n;
            double* er = e + i * n;
            code_errors_f64(values.data(), codes, scales.at(r0 + i), wrow.data(), n, er);
            if (error2) e2 += sum_of_squares(er, n);
        }
        partial[static_cast<std::size_t>(r0 / band)] = e2;
    });
    if (error2) {
        *error2 = 0;
        for (const double x : partial) *error2 += x;
    }
    return p;
}

void round_offsets(QuantizedTensor& q, const std::function<void(std::int64_t, std::int64_t, float*)>& delta,
                   std::vector<CodeChange>* changes) {
    const auto values = code_values(q.spec.format);
    const QuantFormat format = q.spec.format;
    const int top = int_code_max(format);
    const std::int64_t m = q.rows, n = q.cols, band = band_rows(n), bands = (m + band - 1) / band;
    std::vector<std::vector<CodeChange>> changed(changes ? static_cast<std::size_t>(bands) : 0);
    oneapi::tbb::parallel_for(std::int64_t{0}, bands, [&](std::int64_t b) {
        const std::int64_t r0 = b * band, rows = std::min(m, r0 + band) - r0;
        const auto x = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(rows * n));  // delta writes it all
        std::vector<std::uint8_t> before(changes ? static_cast<std::size_t>(n) : 0);
        delta(r0, rows, x.get());
        for (std::int64_t i = 0; i < rows; ++i) {
            std::uint8_t* codes = q.codes.data() + (r0 + i) * n;
            float* xr = x.get() + i * n;
            if (changes) std::copy_n(codes, n, before.data());
            add_code_values(values.data(), codes, n, xr);
            if (is_fp8(format) || format == QuantFormat::Mxfp8) {
                encode_fp8_cpu(xr, n, 1.0f, codes);
            } else if (format == QuantFormat::Fp8E5m2Tensor) {
                for (std::int64_t c = 0; c < n; ++c) codes[c] = f32_to_e5m2(clamp_abs(xr[c], kE5m2Max));
            } else if (format == QuantFormat::Nvfp4) {
                for (std::int64_t c = 0; c < n; ++c) codes[c] = f32_to_e2m1(clamp_abs(xr[c], kE2m1Max));
            } else if (top == 127) {
                for (std::int64_t c = 0; c < n; ++c) codes[c] = static_cast<std::uint8_t>(int8_round(xr[c]));
            } else {  // int4: clamp to the grid, round half to even
                const float t = static_cast<float>(top);
                for (std::int64_t c = 0; c < n; ++c) codes[c] = static_cast<std::uint8_t>(static_cast<std::int8_t>(round_half_even_small(clamp_abs(xr[c], t))));
            }
            if (!changes) continue;
            // Eight codes compared at once: about one in a thousand changes, and a byte loop with a push_back in it
            // cost 3% of a 2-core default run (perf).
            for (std::int64_t c0 = 0; c0 < n; c0 += 8) {
                const std::int64_t c1 = std::min(n, c0 + 8);
                std::uint64_t now = 0, was = 0;
                if (c1 - c0 == 8) {
                    std::memcpy(&now, codes + c0, 8);
                    std::memcpy(&was, before.data() + c0, 8);
                    if (now == was) continue;
                }
                for (std::int64_t c = c0; c < c1; ++c)
                    if (codes[c] != before[static_cast<std::size_t>(c)])
                        changed[static_cast<std::size_t>(b)].push_back({(r0 + i) * n + c, before[static_cast<std::size_t>(c)], codes[c]});
            }
        }
    });
    if (!changes) return;
    changes->clear();
    for (const auto& part : changed) changes->insert(changes->end(), part.begin(), part.end());
}

std::unique_ptr<RoundingWork> make_rounding_work_cpu(std::string_view name, const TensorView& w, const LowRank& basis, QuantizedTensor& q) {
    use_single_threaded_blas();
    return std::make_unique<CpuRoundingWork>(name, w, basis, q);
}

RoundingStats learned_round_cpu(std::string_view name, const TensorView& w, const LowRank& basis, const RoundingSettings& settings,
                                QuantizedTensor& q) {
    return make_cpu_backend()->learned_round(name, w, basis, settings, q);  // the shape check and the driver live there
}

}  // namespace quantflow
