#include "kernels/rounding.hpp"

#include <algorithm>

#include "kernels/error.hpp"

namespace quantflow {

Optimizer parse_optimizer(std::string_view text) {
    if (text == "original") return Optimizer::Original;
    if (text == "adamw") return Optimizer::AdamW;
    if (text == "radam") return Optimizer::RAdam;
    throw Error("--optimizer '" + std::string(text) + "' is not one of original, adamw, radam",
                ExitCode::kUsage);
}

std::string_view optimizer_name(Optimizer optimizer) {
    switch (optimizer) {
        case Optimizer::Original: return "original";
        case Optimizer::AdamW: return "adamw";
        case Optimizer::RAdam: return "radam";
    }
    return "?";
}

std::uint64_t svd_work_bytes(std::int64_t rows, std::int64_t cols, std::int64_t k, bool exact, unsigned threads) {
    const auto m = static_cast<std::uint64_t>(rows), n = static_cast<std::uint64_t>(cols);
    const std::uint64_t r = std::min(m, n);
    if (exact) {
        // decode_matrix's copy and LAPACKE's transposed one, U and VT with their transposes, gesdd's workspace
        // (3 r^2 + max(max(m, n), 4 r^2 + 4 r) floats for jobz 'S') and integer workspace (8 r).
        return 4 * (2 * m * n + 2 * m * r + 2 * r * n + 3 * r * r + std::max(std::max(m, n), 4 * r * r + 4 * r) + r) + 32 * r;
    }
    // The sketch (kernels/sketch_svd.cpp, l = k + the default oversampling of 16): Y [m, l] and Z [n, l], the
    // sketch's random columns [n, l], a right product's new panel and the Gram matrix's double copy of one (3 max(m, n) l
    // floats), U [m, l] and the last Z brought back, V^T [k, n]; per thread, gemm_nn's 8 decoded rows or gemm_tn's
    // rows and partial sums.
    const std::uint64_t l = std::min(r, static_cast<std::uint64_t>(k) + 16);
    return 4 * ((2 * m + 3 * n + 3 * std::max(m, n)) * l + n * static_cast<std::uint64_t>(k)) + std::uint64_t{threads} * 4 * (8 * n + 40960);
}

std::uint64_t learned_rounding_work_bytes(std::int64_t rows, std::int64_t cols, std::int64_t k, Optimizer optimizer,
                                          std::uint64_t finish_pool, bool exact_svd, unsigned threads) {
    const auto elements = static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols);
    const auto basis = static_cast<std::uint64_t>((rows + cols) * k) * 4;
    // The SVD reads the weight in its file dtype (a float32 copy only for the exact SVD); `original`'s passes hold
    // a band of errors in double and of offsets in float per thread (1 MiB); Adam-family optimizers hold two offset
    // buffers and the second moment (the first moment lives in the k x k space).
    const std::uint64_t svd = svd_work_bytes(rows, cols, k, exact_svd, threads);
    const std::uint64_t optimizer_bytes = optimizer == Optimizer::Original ? std::uint64_t{threads} << 20 : elements * 12;
    // The rounding-aware finish's admissible moves (24 bytes each: about 5% of the elements, or on the CPU about
    // 1.5 times the pool where a sampled floor applies, also for the wide finish) and its pool. Per pool move, at
    // the peak: while the pool is selected (keep_best_moves), the moves found (1.5 x 24 bytes), a value and an
    // index each (1.5 x 16), a flag each (1.5) and the kept move (24), 86 in all; later the rounds
    // (move_rounds_host.cpp: 32 bytes, the leverage 8, the driver's two runs 2) beside the pool, less.
    const std::uint64_t finish = std::max(elements * 2, finish_pool * 96);
    return std::max(svd, optimizer_bytes) + finish + basis;
}

LowRank leading_components(const LowRank& basis, std::int64_t k) {
    LowRank out;
    out.rows = basis.rows;
    out.cols = basis.cols;
    out.k = std::clamp<std::int64_t>(k, 1, basis.k);
    out.u.resize(static_cast<std::size_t>(out.rows * out.k));
    for (std::int64_t r = 0; r < out.rows; ++r)
        std::copy_n(basis.u.begin() + r * basis.k, out.k, out.u.begin() + r * out.k);
    out.v.assign(basis.v.begin(), basis.v.begin() + out.k * out.cols);
    out.sigma.assign(basis.sigma.begin(), basis.sigma.begin() + std::min<std::int64_t>(out.k, static_cast<std::int64_t>(basis.sigma.size())));
    return out;
}

AdamStep adam_step_scalars(Optimizer optimizer, double lr, int t) {
    const double b1 = AdamConstants::beta1, b2 = AdamConstants::beta2;
    const double bc1 = 1.0 - std::pow(b1, t), bc2 = 1.0 - std::pow(b2, t);
    AdamStep s;
    s.step_size = lr / bc1;
    s.bc2_sqrt = std::sqrt(bc2);
    if (optimizer == Optimizer::AdamW) {
        s.decay = 1.0 - lr * AdamConstants::adamw_weight_decay;
        return s;
    }
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * std::pow(b2, t) / bc2;
    if (rho_t > 5.0)
        s.rect = std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
    return s;
}

}  // namespace quantflow
