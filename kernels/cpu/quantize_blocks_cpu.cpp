// kernels/cpu/quantize_blocks_cpu.cpp: round-to-nearest mxfp8 and nvfp4 (notes/comfyui-new-formats.md 4-5).
//
// Blocks run along a row (32 or 16 elements; the last one may be partial: the file's zero padding does not
// change its amax). Codes are one per element, scales one float per block (2^e for mxfp8, the e4m3 block scale
// for nvfp4, whose global scale goes to q.global_scale). Every step is the float32 operation comfy-kitchen's
// eager quantizer performs, so the bytes are identical (tests/interop_kitchen.py).
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow {
namespace {

float block_amax(const float* x, std::int64_t n, bool& finite) {
    const std::uint32_t m = max_abs_bits(x, n);
    finite = m < 0x7F800000u;
    return bits_f32(m);
}

[[noreturn]] void throw_non_finite(std::string_view name, const TensorView& w, std::int64_t row) {
    throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                "] holds NaN or Inf in row " + std::to_string(row) + "; refusing to quantize it");
}

// Runs body(row, decoded row) over every row, in parallel.
template <class Body>
void for_rows(const TensorView& w, Body body) {
    oneapi::tbb::parallel_for(std::int64_t{0}, w.rows, [&](std::int64_t r) {
        std::vector<float> row(static_cast<std::size_t>(w.cols));
        decode_row_cpu(w, r, 0, w.cols, row.data());
        body(r, row.data());
    });
}

void quantize_mxfp8(std::string_view name, const TensorView& w, QuantizedTensor& q) {
    const std::int64_t blocks = (w.cols + 31) / 32;
    q.scales.assign(static_cast<std::size_t>(w.rows * blocks), 0.0f);
    for_rows(w, [&](std::int64_t r, const float* row) {
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int64_t c0 = b * 32, n = std::min<std::int64_t>(32, w.cols - c0);
            bool finite = true;
            const float amax = block_amax(row + c0, n, finite);
            if (!finite) throw_non_finite(name, w, r);
            const std::uint8_t byte = mxfp8_scale_byte(amax);
            q.scales[static_cast<std::size_t>(r * blocks + b)] = e8m0_to_f32(byte);
            std::uint8_t* out = q.codes.data() + r * w.cols + c0;
            if (amax == 0.0f) {
                std::fill(out, out + n, std::uint8_t{0});
                continue;
            }
            // The quantizer divides by 2^(byte - 127) also for byte 0 (a block below ~2^-118), where the
            // decoder reads 0.
            const float scale = bits_f32(byte == 0 ? 0x00400000u : static_cast<std::uint32_t>(byte) << 23);
            // x / 2^e is x * 2^-e exactly (both the correctly rounded x 2^-e; 2^-e is exact for every byte), so the
            // vectorised FP8 encoder serves (perf: the scalar f32_to_e4m3 loop was half of an mxfp8 --simple run).
            encode_fp8_cpu(row + c0, n, 1.0f / scale, out);
        }
    });
}

// f32_to_e2m1(clamp(x[i] / total[i], 6)) for i < n without its branch chain: the index counts the rounding
// boundaries below |y| (ties to even: 0.25, 1.25, 2.5 and 5 round down, 0.75, 1.75 and 3.5 up), so the loop
// vectorises (inputs are finite here; test_quantize_cpu checks it against f32_to_e2m1). total holds each element's
// block total (global * block scale): one call per row, not per block of 16 (perf: the per-block calls were 24%
// of an nvfp4 --simple run).
QF_VECTOR_CLONES void encode_e2m1_row(const float* x, std::int64_t n, const float* total, std::uint8_t* out) {
    for (std::int64_t i = 0; i < n; ++i) {
        const float y = x[i] / total[i];
        const float a = y < 0 ? -y : y;
        const int index = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f);
        out[i] = static_cast<std::uint8_t>(((f32_bits(y) >> 28) & 8u) | static_cast<unsigned>(index));
    }
}

// One block (the scale search's trials): the same encoding with one total.
void encode_e2m1(const float* x, std::int64_t n, float total, std::uint8_t* out) {
    float totals[16];
    std::fill(totals, totals + n, total);
    encode_e2m1_row(x, n, totals, out);
}

// Row r of q's codes: round-to-nearest of `row` with the block scales and global scale q holds, in one vectorised
// encode. An all-zero block (scale 0) gets code 0: its totals are 1 for the division and its codes zeroed after
// (-0.0 would give the -0 code).
void encode_nvfp4_row(const float* row, std::int64_t r, QuantizedTensor& q) {
    const std::int64_t n = q.cols, blocks = (n + 15) / 16;
    std::vector<float> totals(static_cast<std::size_t>(n));
    std::vector<std::int64_t> zero;  // first columns of the all-zero blocks
    for (std::int64_t b = 0; b < blocks; ++b) {
        const std::int64_t c0 = b * 16, end = std::min<std::int64_t>(n, c0 + 16);
        const float scale = q.scales[static_cast<std::size_t>(r * blocks + b)];
        if (scale == 0.0f) zero.push_back(c0);
        std::fill(totals.begin() + c0, totals.begin() + end, scale == 0.0f ? 1.0f : q.global_scale * scale);
    }
    std::uint8_t* out = q.codes.data() + r * n;
    encode_e2m1_row(row, n, totals.data(), out);
    for (const std::int64_t c0 : zero) std::fill(out + c0, out + std::min<std::int64_t>(n, c0 + 16), std::uint8_t{0});
}

// The global scale S = amax / (448 * 6); an all-zero weight gets S = 1 (zero scales and codes).
void quantize_nvfp4(std::string_view name, const TensorView& w, QuantizedTensor& q, float tensor_amax) {
    const std::int64_t blocks = (w.cols + 15) / 16;
    const float global = tensor_amax > 0.0f ? tensor_amax / (kFp8Max * kE2m1Max) : 1.0f;
    q.global_scale = global;
    q.scales.assign(static_cast<std::size_t>(w.rows * blocks), 0.0f);
    for_rows(w, [&](std::int64_t r, const float* row) {
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int64_t c0 = b * 16, n = std::min<std::int64_t>(16, w.cols - c0);
            bool finite = true;
            const float amax = block_amax(row + c0, n, finite);
            if (!finite) throw_non_finite(name, w, r);
            const float wanted = (amax / kE2m1Max) / global;
            q.scales[static_cast<std::size_t>(r * blocks + b)] = e4m3_to_f32(f32_to_e4m3(wanted < kFp8Max ? wanted : kFp8Max));
        }
        encode_nvfp4_row(row, r, q);
    });
}

// One block encoded with `total` = global * block scale: ||e||^2 and e.x, e = decode(codes) - x (the decoder's
// float product value * total; sums in double).
struct BlockError {
    double error2 = 0, along = 0;
};
BlockError encoded_error(const float* x, std::int64_t n, float total, std::uint8_t* codes) {
    encode_e2m1(x, n, total, codes);
    BlockError b;
    for (std::int64_t i = 0; i < n; ++i) {
        const double e = static_cast<double>(e2m1_to_f32(codes[i]) * total) - x[i];
        b.error2 += e * e;
        b.along += e * x[i];
    }
    return b;
}

}  // namespace

double search_block_scales_cpu(const TensorView& w, QuantizedTensor& q) {
    if (q.spec.format != QuantFormat::Nvfp4) return 0;
    const std::int64_t blocks = (w.cols + 15) / 16;
    const float global = q.global_scale;
    std::vector<double> row_error2(static_cast<std::size_t>(w.rows), 0.0);
    for_rows(w, [&](std::int64_t r, const float* row) {
        std::uint8_t trial[16];
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::int64_t c0 = b * 16, n = std::min<std::int64_t>(16, w.cols - c0);
            float& scale = q.scales[static_cast<std::size_t>(r * blocks + b)];
            std::uint8_t* out = q.codes.data() + r * w.cols + c0;
            const BlockError rtn = encoded_error(row + c0, n, global * scale, trial);
            row_error2[static_cast<std::size_t>(r)] += rtn.error2;
            if (scale == 0.0f) continue;  // an all-zero block
            double norm2 = 0;
            for (std::int64_t i = 0; i < n; ++i) norm2 += static_cast<double>(row[c0 + i]) * row[c0 + i];
            const auto score = [&](const BlockError& e) { return e.error2 + kAlongWeight * e.along * e.along / norm2; };
            const int code = f32_to_e4m3(scale);
            double best = score(rtn);
            for (int c = std::max(1, code - kScaleSearchBelow); c <= std::min(0x7E, code + kScaleSearchAbove); ++c) {
                const float candidate = e4m3_to_f32(static_cast<std::uint8_t>(c));
                if (c == code || global * candidate == 0.0f) continue;
                const double e = score(encoded_error(row + c0, n, global * candidate, trial));
                if (e < best) {  // ties keep round-to-nearest's scale
                    best = e;
                    scale = candidate;
                    std::copy(trial, trial + n, out);
                }
            }
        }
    });
    double total = 0;
    for (const double e : row_error2) total += e;
    return total;
}

void encode_nvfp4_cpu(const TensorView& w, QuantizedTensor& q) {
    for_rows(w, [&](std::int64_t r, const float* row) { encode_nvfp4_row(row, r, q); });
}

void quantize_block_scaled_cpu(std::string_view name, const TensorView& w, QuantizedTensor& q, float tensor_amax) {
    if (q.spec.format == QuantFormat::Mxfp8) quantize_mxfp8(name, w, q);
    else quantize_nvfp4(name, w, q, tensor_amax);
}

}  // namespace quantflow
