#include "kernels/quant_types.hpp"

#include "kernels/numerics.hpp"

namespace quantflow {

bool is_fp8(QuantFormat format) {
    return format == QuantFormat::Fp8Tensor || format == QuantFormat::Fp8Row || format == QuantFormat::Fp8Block ||
           format == QuantFormat::Fp8Block2d;
}

std::int64_t scale_block_rows(const QuantSpec& spec, std::int64_t rows) {
    switch (spec.format) {
        case QuantFormat::Fp8Tensor:
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
        default: return cols;
    }
}

bool format_fits(const QuantSpec& spec, std::int64_t rows, std::int64_t cols) {
    if (rows <= 0 || cols <= 0) return false;
    const std::int64_t br = scale_block_rows(spec, rows), bc = scale_block_cols(spec, cols);
    return br > 0 && bc > 0 && rows % br == 0 && cols % bc == 0;
}

std::int64_t scale_rows(const QuantSpec& spec, std::int64_t rows) { return rows / scale_block_rows(spec, rows); }
std::int64_t scale_cols(const QuantSpec& spec, std::int64_t cols) { return cols / scale_block_cols(spec, cols); }

float encode_factor(QuantFormat format, float amax) {
    if (!is_fp8(format)) return int8_step(amax);
    return format == QuantFormat::Fp8Block ? fp8_multiplier_reciprocal_first(amax) : fp8_multiplier(amax);
}

float stored_scale(QuantFormat format, float amax) {
    return is_fp8(format) ? 1.0f / encode_factor(format, amax) : encode_factor(format, amax);
}

bool all_codes_zero(const QuantizedTensor& q) {
    // +0 codes are 0x00 in both formats; -0.0 inputs give 0x80 in e4m3, so test magnitude bits.
    const std::uint8_t mask = is_fp8(q.spec.format) ? 0x7F : 0xFF;
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
    }
    return "?";
}

}  // namespace quantflow
