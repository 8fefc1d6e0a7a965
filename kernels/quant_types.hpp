// kernels/quant_types.hpp: the vocabulary of quantized tensors shared by every layer above kernels/.
//
// A weight is a row-major matrix [rows = out_features M, cols = in_features N]. A QuantizedTensor holds
// one byte code per element (e4m3 bits or int8) and float32 scales in the layout of its format:
//   Fp8Tensor, Int8Tensor  1 scale                       Fp8Row  M scales      Int8Row  M scales ([M,1])
//   Fp8Block  M x N/bs     (1 x bs groups per row)       Int8Lode M x N/bs  (1 x bs groups per row)
//   Fp8Block2d, Int8Block  M/bs x N/bs (bs x bs tiles, row-major by (out-block, in-block))
//   Fp8E5m2Tensor 1 scale (e5m2 codes)
//   Mxfp8  M x ceil(N/32) power-of-two block scales (e4m3 codes), Nvfp4 M x ceil(N/16) e4m3 block scales times one
//   global scale (E2M1 codes 0..15, one per byte here; packing, padding and swizzling are the file's business:
//   stages/format/block_scaled.hpp). A partial last block covers the remaining columns.
//   Int8ConvRot, W4a4ConvRot  M scales (one per row) of the ConvRot-rotated weight (kernels/convrot.hpp): codes
//   are int8 in [-127, 127] or int4 in [-7, 7] (one per byte here; the file packs int4 in pairs); block_size is
//   the rotation's group size G. Their codes and scales describe W_rot = W * H_G^T per group: a Backend
//   quantizes them from the rotated weight (Backend::rotate_groups); dequantize() rotates back.
// Scales are what the file stores: dequantized value = code * (global_scale * scale).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/dtype.hpp"

namespace quantflow {

enum class QuantFormat : std::uint8_t {
    Fp8Tensor, Fp8Row, Fp8Block, Fp8Block2d,
    Int8Block, Int8Lode, Int8Tensor, Int8Row,
    Fp8E5m2Tensor, Mxfp8, Nvfp4,
    Int8ConvRot, W4a4ConvRot
};

struct QuantSpec {
    QuantFormat format = QuantFormat::Fp8Tensor;
    std::int64_t block_size = 64;  // used by the block formats only
};

// The float8_e4m3fn formats with float32 scales (the ones learned rounding and the legacy path know).
bool is_fp8(QuantFormat format);
// Formats whose scales are block scales in a swizzled file layout (mxfp8, nvfp4): any shape fits by padding.
bool is_block_scaled(QuantFormat format);
// The ConvRot formats (a rotated weight, per-row scales).
bool is_convrot(QuantFormat format);
// Largest integer code of the integer formats: 127, or 7 for W4a4ConvRot.
int int_code_max(QuantFormat format);
// The grid learned rounding moves codes on, in index order: two's-complement integers (int8, int4), or sign-magnitude
// floats whose sign is bit 7 (e4m3, e5m2) or bit 3 (E2M1, one code per byte). grid_sign_bit is 0 for integers.
bool is_integer_grid(QuantFormat format);
std::uint8_t grid_sign_bit(QuantFormat format);
// The largest grid index: e4m3 126 (0x7F is NaN), e5m2 123 (0x7C is inf), E2M1 7, integers int_code_max.
int grid_top(QuantFormat format);
// The value of one code of this format (e4m3, e5m2, E2M1 or int8).
float code_value(QuantFormat format, std::uint8_t code);
// Whether [rows, cols] can be stored in this format (block sizes must divide the blocked dimensions).
bool format_fits(const QuantSpec& spec, std::int64_t rows, std::int64_t cols);
// Number of scales and their grid (scale_rows x scale_cols) for a [rows, cols] weight (a partial last block
// counts for the block-scaled formats).
std::int64_t scale_rows(const QuantSpec& spec, std::int64_t rows);
std::int64_t scale_cols(const QuantSpec& spec, std::int64_t cols);
// Rows and columns of the weight covered by one scale.
std::int64_t scale_block_rows(const QuantSpec& spec, std::int64_t rows);
std::int64_t scale_block_cols(const QuantSpec& spec, std::int64_t cols);
// How a block whose largest |x| is amax is encoded (spec 5.1/5.2), for every backend: FP8 multiplies by
// 448 / amax ((1 / amax) * 448 for the 1 x bs block format, the reference's rounding: numerics.hpp), INT8
// divides by the step amax / 127.
float encode_factor(QuantFormat format, float amax);
// What the file stores for that block: dequantized value = code * scale (FP8 1 / multiplier, INT8 the step).
float stored_scale(QuantFormat format, float amax);
// "fp8 tensor", "int8 block 64", ... for plans and messages.
std::string_view format_label(QuantFormat format);

// A read-only view of a 2-D weight in its file dtype (F32, F16 or BF16), row-major, contiguous.
struct TensorView {
    const std::byte* data = nullptr;
    DType dtype = DType::F32;
    std::int64_t rows = 0;
    std::int64_t cols = 0;
};

struct QuantizedTensor {
    QuantSpec spec;
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    std::vector<std::uint8_t> codes;  // rows*cols bytes: e4m3 bits or int8 two's complement
    std::vector<float> scales;        // scale_rows x scale_cols, row-major
    float global_scale = 1.0f;        // nvfp4's weight_scale_2; 1 for every other format
};

// The [rows, cols] float32 values q stands for, row-major: code * (global_scale * block scale), the product
// comfy-kitchen's decoders form; for the ConvRot formats then rotated back to the weight's own space.
std::vector<float> dequantize(const QuantizedTensor& q);

// Whether every code is zero (+0 or -0): the quantization of an all-zero weight.
bool all_codes_zero(const QuantizedTensor& q);

}  // namespace quantflow
