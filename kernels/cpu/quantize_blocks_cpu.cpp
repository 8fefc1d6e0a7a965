// kernels/cpu/quantize_blocks_cpu.cpp: round-to-nearest mxfp8 and nvfp4 (notes/comfyui-new-formats.md 4-5).
//
// Blocks run along a row (32 or 16 elements; the last one may be partial: the file's zero padding does not
// change its amax). Codes are one per element, scales one float per block (2^e for mxfp8, the e4m3 block scale
// for nvfp4, whose global scale goes to q.global_scale). Every step is the float32 operation comfy-kitchen's
// eager quantizer performs, so the bytes are identical (tests/interop_kitchen.py).
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cpu/block_rows_cpu.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"
#include "kernels/refine_rules.hpp"

namespace quantflow {
namespace {

[[noreturn]] void throw_non_finite(std::string_view name, const TensorView& w, std::int64_t row) {
    throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                "] holds NaN or Inf in row " + std::to_string(row) + "; refusing to quantize it");
}

// Runs body(row, decoded row) over every row, in parallel: float32 rows are read in place, others decoded into
// one buffer per task (perf: the per-row copy and allocation were 8-10% of an nvfp4 --simple run).
template <class Body>
void for_rows(const TensorView& w, Body body) {
    oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(0, w.rows), [&](const auto& range) {
        std::vector<float> row(w.dtype == DType::F32 ? 0 : static_cast<std::size_t>(w.cols));
        for (std::int64_t r = range.begin(); r != range.end(); ++r) {
            if (w.dtype == DType::F32) {
                body(r, reinterpret_cast<const float*>(w.data) + r * w.cols);
                continue;
            }
            decode_row_cpu(w, r, 0, w.cols, row.data());
            body(r, row.data());
        }
    });
}

void quantize_mxfp8(std::string_view name, const TensorView& w, QuantizedTensor& q) {
    const std::int64_t blocks = (w.cols + 31) / 32;
    q.scales.assign(static_cast<std::size_t>(w.rows * blocks), 0.0f);
    for_rows(w, [&](std::int64_t r, const float* row) {
        if (!mxfp8_row_cpu(row, w.cols, q.scales.data() + r * blocks, q.codes.data() + r * w.cols)) throw_non_finite(name, w, r);
    });
}

// The global scale S = amax / (448 * 6); an all-zero weight gets S = 1 (zero scales and codes).
void quantize_nvfp4(std::string_view name, const TensorView& w, QuantizedTensor& q, float tensor_amax) {
    const std::int64_t blocks = (w.cols + 15) / 16;
    const float global = tensor_amax > 0.0f ? tensor_amax / (kFp8Max * kE2m1Max) : 1.0f;
    q.global_scale = global;
    q.scales.assign(static_cast<std::size_t>(w.rows * blocks), 0.0f);
    for_rows(w, [&](std::int64_t r, const float* row) {
        if (!nvfp4_row_cpu(row, w.cols, global, q.scales.data() + r * blocks, q.codes.data() + r * w.cols))
            throw_non_finite(name, w, r);
    });
}

// One block encoded with `total` = global * block scale: ||e||^2 and e.x, e = decode(codes) - x (the decoder's
// float product value * total; sums in double).
struct BlockError {
    double error2 = 0, along = 0;
};
BlockError encoded_error(const float* x, std::int64_t n, float total, std::uint8_t* codes) {
    e2m1_block_cpu(x, n, total, codes);
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
    const std::int64_t blocks = (w.cols + 15) / 16;
    for_rows(w, [&](std::int64_t r, const float* row) {
        nvfp4_codes_cpu(row, w.cols, q.global_scale, q.scales.data() + r * blocks, q.codes.data() + r * w.cols);
    });
}

void quantize_block_scaled_cpu(std::string_view name, const TensorView& w, QuantizedTensor& q, float tensor_amax) {
    if (q.spec.format == QuantFormat::Mxfp8) quantize_mxfp8(name, w, q);
    else quantize_nvfp4(name, w, q, tensor_amax);
}

}  // namespace quantflow
