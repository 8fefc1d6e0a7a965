// stages/format/block_scaled.hpp: the file layout of mxfp8 and nvfp4 (notes/comfyui-new-formats.md 3-5).
//
// A QuantizedTensor holds one code per element over the weight's own [N, K] and one float per block. The file
// holds, zero-padded:
//   mxfp8  weight F8_E4M3 [roundup(N,32), roundup(K,32)]; weight_scale U8 (E8M0 bytes) swizzled
//   nvfp4  weight U8 [roundup(N,16), roundup(K,16)/2], byte j = code(2j) << 4 | code(2j+1) (even element in the
//          HIGH nibble); weight_scale F8_E4M3 swizzled; weight_scale_2 F32 [] (the global scale)
// Swizzled scales: the logical grid A[r][c] (r < padded rows, c < padded K / block) is stored as a zero-filled
// [roundup(R,128), roundup(C,4)] tensor in cuBLAS's 128x4 tiles of 512 bytes (swizzled_offset).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/quant_types.hpp"

namespace quantflow {

// Byte offset of logical scale (r, c) in a swizzled tensor whose padded column count is cols_padded (a multiple of 4).
std::int64_t swizzled_offset(std::int64_t r, std::int64_t c, std::int64_t cols_padded);

// Stored shapes for an [rows, cols] weight (format Mxfp8 or Nvfp4).
std::vector<std::int64_t> block_weight_shape(QuantFormat format, std::int64_t rows, std::int64_t cols);
std::vector<std::int64_t> block_scale_shape(QuantFormat format, std::int64_t rows, std::int64_t cols);

// The stored bytes of q's weight and of its swizzled scales.
std::vector<std::uint8_t> pack_block_weight(const QuantizedTensor& q);
std::vector<std::uint8_t> pack_block_scales(const QuantizedTensor& q);

// The inverse, for compare: a [rows, cols] QuantizedTensor from the stored bytes (global_scale is nvfp4's
// weight_scale_2, 1 for mxfp8). Throws Error when a byte count does not match the shapes above.
QuantizedTensor unpack_block_scaled(QuantFormat format, std::int64_t rows, std::int64_t cols, std::span<const std::byte> weight,
                                    std::span<const std::byte> scales, float global_scale);

}  // namespace quantflow
