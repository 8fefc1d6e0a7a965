// kernels/cpu/cpu_backend.hpp: the reference backend (oneTBB parallel loops, scalar twins in numerics.hpp).
#pragma once

#include <memory>

#include "kernels/backend.hpp"
#include "kernels/vector_clones.hpp"

namespace quantflow {

std::unique_ptr<Backend> make_cpu_backend();

// The round-to-nearest quantizer the CPU backend uses, exposed for tests and other backends' checks.
// Throws Error naming `name` when the weight holds NaN or Inf.
QuantizedTensor quantize_cpu(std::string_view name, const TensorView& w, const QuantSpec& spec);
// Backend::rotate_groups on the host (rows in parallel; kernels/convrot.hpp's transform).
std::vector<float> rotate_groups_cpu(const TensorView& w, std::int64_t g);
// y = (W - dequant(q)) x; each row summed in 8 fixed lanes then combined in a fixed order.
void residual_gemv_cpu(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y);

// Top-k SVD (randomized or exact) of a weight; learned rounding; quality metrics (see Backend).
LowRank top_k_svd_cpu(std::string_view name, const TensorView& w, const SvdSettings& settings);
RoundingStats learned_round_cpu(std::string_view name, const TensorView& w, const LowRank& basis,
                                const RoundingSettings& settings, QuantizedTensor& q);
QualityMetrics measure_cpu(const TensorView& w, const QuantizedTensor& q, const LowRank* basis, const QualityInputs& inputs);

// Decodes n elements of row `row` starting at column col0 to float32 (exact for F32/F16/BF16).
void decode_row_cpu(const TensorView& w, std::int64_t row, std::int64_t col0, std::int64_t n, float* out);

// out[i] = e4m3(clamp(x[i] * multiplier, -448, 448)) for i < n: the FP8 encode loop of every format.
// mxfp8 / nvfp4 round-to-nearest of w into q (q.spec, rows, cols and codes sized; tensor_amax: nvfp4's global amax).
void quantize_block_scaled_cpu(std::string_view name, const TensorView& w, QuantizedTensor& q, float tensor_amax);
// Backend::search_block_scales on the host (rows in parallel).
double search_block_scales_cpu(const TensorView& w, QuantizedTensor& q);
// nvfp4: q's codes = round-to-nearest of w with the block scales and global scale q holds.
void encode_nvfp4_cpu(const TensorView& w, QuantizedTensor& q);
// 16 lanes where the CPU has AVX-512 (QF_AVX512_WIDE); `portable` forces the twin of the same bits (tests).
void encode_fp8_cpu(const float* x, std::int64_t n, float multiplier, std::uint8_t* out, bool portable = false);

// amax of |x| through the float bits: for non-NaN values the order of |bits| is the order of |x|, and an
// integer max vectorises where a float max (NaN semantics) does not. Returns the largest |bits|.
QF_VECTOR_CLONES std::uint32_t max_abs_bits(const float* x, std::int64_t n);

}  // namespace quantflow
