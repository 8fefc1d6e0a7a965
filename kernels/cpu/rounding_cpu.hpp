// kernels/cpu/rounding_cpu.hpp: the CPU backend's learned-rounding primitives (kernels/rounding_work.hpp),
// private to kernels/cpu. The driver is kernels/learned_rounding.cpp.
//
// Notation: q0 = the codes as float values, D = dequantization scale of each element (the stored scale),
// W_hat = (q0 + delta) * D.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "kernels/adam_rules.hpp"
#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/refine_rules.hpp"
#include "kernels/rounding.hpp"
#include "kernels/rounding_work.hpp"

namespace quantflow {

// E = dequant(q) - W, projected in double: P = U^T E V^T; error2 (when given) receives ||E||^2.
std::vector<double> initial_projection(const TensorView& w, const QuantizedTensor& q, const LowRank& basis, double* error2 = nullptr);

// One code that re-rounding changed.
struct CodeChange {
    std::int64_t element = 0;  // row * cols + col
    std::uint8_t before = 0, after = 0;
};

// Rewrites q's codes from q0 + delta (delta(r0, rows, out) fills rows x cols offsets in code units), with the
// final clamp and rounding of spec 5.1/5.2. `changes`, when given, receives every code that changed, in element
// order.
void round_offsets(QuantizedTensor& q, const std::function<void(std::int64_t, std::int64_t, float*)>& delta,
                   std::vector<CodeChange>* changes = nullptr);

// The change of P = U^T E V^T (k x k, basis.k = k) and of ||E||^2 that `changes` (element order, q's codes now
// hold their `after`) made, from those elements alone, in double, in a fixed order (projection_change_cpu.cpp).
struct ProjectionChange {
    std::vector<double> dp;
    double derror2 = 0;
};
ProjectionChange projection_change(const TensorView& w, const QuantizedTensor& q, const LowRank& basis, std::span<const CodeChange> changes);

// AdamW / RAdam's state on the CPU (adam_cpu.cpp): two offset buffers, the second moment, and the k x k loop
// state; the RoundingWork methods of the same names delegate here.
class AdamCpu {
public:
    AdamCpu(const LowRank& basis, QuantizedTensor& q, const std::vector<double>& p0, Optimizer optimizer, double lr);
    AdamLoopState steps(int t0, int count, std::vector<double>& losses);
    void finish(int best_buffer, std::vector<CodeChange>* changes);

private:
    const LowRank& basis_;
    QuantizedTensor& q_;
    std::vector<double> p0_, p_, m1_, grad_;
    Optimizer optimizer_;
    double lr_;
    std::vector<float> delta_[2], second_;
    AdamLoopState state_;
};

// What the candidate pass reads of a code: its value and |step_up|, |step_down| (refine_rules.hpp), 16 bytes.
struct CodeRecord {
    float value, up, down, unused;
};

// One row of the finish's candidate filter (midpoint_filter_cpu.cpp): e[c] = value(codes[c]) * d[c] - W[row, c]
// for every column c of W, and in cols, in order, the columns whose e is neither 0 nor NaN and at least floor_share of
// its step towards W (the code's |step_up| when e < 0, else |step_down|, times d[c]), and, with bound given, whose
// bound[c] >= threshold; returns their count. error2, when given, receives the sum of e^2 in four fixed lanes
// (sum_of_squares). Where the CPU has AVX-512 the tables are read by gather and the columns listed by compress;
// the result is the same, bit for bit, as the portable loops' (`portable` forces them: tests).
struct MidpointFilter {
    const CodeRecord* records;  // 256
    float floor_share;
    const float* bound = nullptr;
    float threshold = 0;
};
struct MidpointScratch {  // the portable loops' buffers
    std::vector<float> w, marked;
    std::vector<CodeRecord> rec;
};
std::int64_t filter_row(const MidpointFilter& f, const TensorView& w, std::int64_t row, const std::uint8_t* codes, const float* d, float* e,
                        std::uint32_t* cols, double* error2, MidpointScratch& scratch, bool portable = false);

// The rounding-aware finish's candidate pass (RoundingWork::midpoint_moves) over one band of rows
// (midpoint_scan_cpu.cpp). band(r0, rows, floor, error2) returns the admissible moves (refine_rules.hpp,
// midpoint_move) of rows [r0, r0 + rows) whose value (midpoint_value) is at least `floor`, or all of them when
// floor is 0, in element order; error2 (when given) receives ||dequant(q) - W||^2 over those rows, added row
// after row, each row's sum in four fixed lanes (sum_of_squares). query's column leverage is read on construction
// when given, the rest of it only when floor > 0. The object holds references to w, q and query, which must
// outlive it.
class MidpointScanCpu {
public:
    MidpointScanCpu(const TensorView& w, const QuantizedTensor& q, const MidpointQuery& query);
    std::vector<MidpointMove> band(std::int64_t r0, std::int64_t rows, double floor, double* error2) const;

private:
    template <bool kFloor>
    std::vector<MidpointMove> band_moves(std::int64_t r0, std::int64_t rows, double floor, double* error2) const;
    float row_threshold(std::int64_t r, double floor) const;

    const TensorView& w_;
    const QuantizedTensor& q_;
    const MidpointQuery& query_;
    RefineTables tables_;
    std::array<CodeRecord, 256> records_;
    // With a floor, elements are first filtered by their leverage bound: a move's value is at most
    // (row + extra row_p) max(col, col_p) / lambda (row_threshold), which about half the candidates of a WAN
    // block fail. bound_: max(col, col_p) per column, rounded up to a float (empty when lambda <= 0 or
    // extra < 0, where there is no such bound, or without columns).
    std::vector<float> bound_;
};

// sum of x[c]^2 over c < n in double, in four fixed lanes: one chain of dependent adds would cost more than the
// row's own work (measured: the projection's pass went from 10.6% to 4.1% of a single-thread run).
template <typename T>
double sum_of_squares(const T* x, std::int64_t n) {
    double lane[4] = {0, 0, 0, 0};
    std::int64_t c = 0;
    for (; c + 4 <= n; c += 4)
        for (int l = 0; l < 4; ++l) lane[l] += static_cast<double>(x[c + l]) * x[c + l];
    for (; c < n; ++c) lane[0] += static_cast<double>(x[c]) * x[c];
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

std::unique_ptr<RoundingWork> make_rounding_work_cpu(std::string_view name, const TensorView& w, const LowRank& basis, QuantizedTensor& q);

}  // namespace quantflow
