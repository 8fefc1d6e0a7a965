#include "kernels/quant_types.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <array>

#include "kernels/convrot.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {

bool is_fp8(QuantFormat format) {
    return format == QuantFormat::Fp8Tensor || format == QuantFormat::Fp8Row || format == QuantFormat::Fp8Block ||
           format == QuantFormat::Fp8Block2d;
}

bool is_block_scaled(QuantFormat format) { return format == QuantFormat::Mxfp8 || format == QuantFormat::Nvfp4; }

bool is_convrot(QuantFormat format) { return format == QuantFormat::Int8ConvRot || format == QuantFormat::W4a4ConvRot; }

int int_code_max(QuantFormat format) { return format == QuantFormat::W4a4ConvRot ? 7 : 127; }

bool is_integer_grid(QuantFormat format) { return !is_fp8(format) && format != QuantFormat::Fp8E5m2Tensor && !is_block_scaled(format); }

std::uint8_t grid_sign_bit(QuantFormat format) {
    if (is_integer_grid(format)) return 0;
    return format == QuantFormat::Nvfp4 ? 0x08 : 0x80;
}

int grid_top(QuantFormat format) {
    if (is_integer_grid(format)) return int_code_max(format);
    if (format == QuantFormat::Nvfp4) return 7;
    return format == QuantFormat::Fp8E5m2Tensor ? 123 : 126;
}

float code_value(QuantFormat format, std::uint8_t code) {
    switch (format) {
        case QuantFormat::Fp8E5m2Tensor: return e5m2_to_f32(code);
        case QuantFormat::Nvfp4: return e2m1_to_f32(code);
        case QuantFormat::Mxfp8: return e4m3_to_f32(code);
        default: return is_fp8(format) ? e4m3_to_f32(code) : static_cast<float>(static_cast<std::int8_t>(code));
    }
}

std::int64_t scale_block_rows(const QuantSpec& spec, std::int64_t rows) {
    switch (spec.format) {
        case QuantFormat::Fp8Tensor:
        case QuantFormat::Fp8E5m2Tensor:
        case QuantFormat::Int8Tensor: return rows;
        case QuantFormat::Fp8Block2d:
        case QuantFormat::Int8Block: return spec.block_size;
        default: return 1;
    }
}

std::int64_t scale_block_cols(const QuantSpec& spec, std::int64_t cols) {
    switch (spec.format) {
        case QuantFormat::Fp8Block:
        case QuantFormat::Fp8Block2d:
        case QuantFormat::Int8Block:
        case QuantFormat::Int8Lode: return spec.block_size;
        case QuantFormat::Mxfp8: return 32;
        case QuantFormat::Nvfp4: return 16;
        default: return cols;
    }
}

bool format_fits(const QuantSpec& spec, std::int64_t rows, std::int64_t cols) {
    if (rows <= 0 || cols <= 0) return false;
    if (is_block_scaled(spec.format)) return true;  // padded in the file
    if (is_convrot(spec.format))  // whole rotation groups; int4 also whole 64-column groups (comfy-kitchen's check)
        return convrot_group_valid(spec.block_size) && cols % spec.block_size == 0 &&
               (spec.format != QuantFormat::W4a4ConvRot || cols % 64 == 0);
    const std::int64_t br = scale_block_rows(spec, rows), bc = scale_block_cols(spec, cols);
    return br > 0 && bc > 0 && rows % br == 0 && cols % bc == 0;
}

std::int64_t scale_rows(const QuantSpec& spec, std::int64_t rows) { return rows / scale_block_rows(spec, rows); }
std::int64_t scale_cols(const QuantSpec& spec, std::int64_t cols) {
    const std::int64_t bc = scale_block_cols(spec, cols);
    return is_block_scaled(spec.format) ? (cols + bc - 1) / bc : cols / bc;
}

float encode_factor(QuantFormat format, float amax) {
    // comfy-kitchen's ConvRot quantizers: max(amax / 127, 1e-30) and max(amax, 1e-10) / 7, in float32.
    if (format == QuantFormat::Int8ConvRot) return std::max(amax / kInt8Max, 1e-30f);
    if (format == QuantFormat::W4a4ConvRot) return std::max(amax, 1e-10f) / 7.0f;
    if (format == QuantFormat::Fp8E5m2Tensor) return kE5m2Max / (amax > kAmaxFloor ? amax : kAmaxFloor);
    if (!is_fp8(format)) return int8_step(amax);
    return format == QuantFormat::Fp8Block ? fp8_multiplier_reciprocal_first(amax) : fp8_multiplier(amax);
}

float stored_scale(QuantFormat format, float amax) {
    const bool reciprocal = is_fp8(format) || format == QuantFormat::Fp8E5m2Tensor;
    return reciprocal ? 1.0f / encode_factor(format, amax) : encode_factor(format, amax);
}

std::vector<float> dequantize(const QuantizedTensor& q) {
    std::vector<float> out(static_cast<std::size_t>(q.rows * q.cols));
    const std::int64_t br = scale_block_rows(q.spec, q.rows), bc = scale_block_cols(q.spec, q.cols);
    const std::int64_t grid = scale_cols(q.spec, q.cols);
    std::array<float, 256> values{};
    for (int c = 0; c < 256; ++c) values[static_cast<std::size_t>(c)] = code_value(q.spec.format, static_cast<std::uint8_t>(c));
    // Rows in parallel (re-quantizing decodes whole layers): each row's values do not depend on the thread count.
    oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(0, q.rows, 8), [&](const auto& range) {
        std::vector<double> scratch(is_convrot(q.spec.format) ? static_cast<std::size_t>(q.spec.block_size) : 0);
        for (std::int64_t r = range.begin(); r != range.end(); ++r) {
            const float* scales = q.scales.data() + (r / br) * grid;
            float* row = out.data() + r * q.cols;
            const std::uint8_t* codes = q.codes.data() + r * q.cols;
            for (std::int64_t c = 0; c < q.cols; ++c) row[c] = values[codes[c]] * (q.global_scale * scales[c / bc]);
            if (is_convrot(q.spec.format)) rotate_row_groups(row, q.cols, q.spec.block_size, scratch.data());
        }
    });
    return out;
}

bool all_codes_zero(const QuantizedTensor& q) {
    // +0 codes are 0x00 in both formats; -0.0 inputs give 0x80 in e4m3, so test magnitude bits.
    std::uint8_t mask = 0xFF;
    if (is_fp8(q.spec.format) || q.spec.format == QuantFormat::Fp8E5m2Tensor || q.spec.format == QuantFormat::Mxfp8) mask = 0x7F;
    if (q.spec.format == QuantFormat::Nvfp4) mask = 0x07;
    for (const std::uint8_t c : q.codes)
        if ((c & mask) != 0) return false;
    return true;
}

std::string_view format_label(QuantFormat format) {
    switch (format) {
        case QuantFormat::Fp8Tensor: return "fp8 tensor";
        case QuantFormat::Fp8Row: return "fp8 row";
        case QuantFormat::Fp8Block: return "fp8 block";
        case QuantFormat::Fp8Block2d: return "fp8 block2d";
        case QuantFormat::Int8Block: return "int8 block";
        case QuantFormat::Int8Lode: return "int8 lodewise";
        case QuantFormat::Int8Tensor: return "int8 tensor";
        case QuantFormat::Int8Row: return "int8 row";
        case QuantFormat::Fp8E5m2Tensor: return "fp8 e5m2";
        case QuantFormat::Mxfp8: return "mxfp8";
        case QuantFormat::Nvfp4: return "nvfp4";
        case QuantFormat::Int8ConvRot: return "int8 convrot";
        case QuantFormat::W4a4ConvRot: return "convrot w4a4";
    }
    return "?";
}

}  // namespace quantflow
