// stages/format/int4_pack.hpp: convrot_w4a4's packed signed int4 (notes/comfyui-new-formats.md 7).
//
// Byte j of a row holds codes 2j and 2j+1 as two's-complement nibbles, the EVEN code in the LOW nibble (the
// opposite of nvfp4's order): byte = (c[2j] & 0xF) | (c[2j+1] & 0xF) << 4. A QuantizedTensor keeps one int8
// code per byte; rows of an odd width cannot be packed (the format needs K % 64 == 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace quantflow {

// codes: rows x cols int8 codes in [-8, 7] (cols even) -> rows x cols/2 bytes.
std::vector<std::uint8_t> pack_int4(std::span<const std::uint8_t> codes);
// The inverse: every nibble sign-extended to an int8 code (two per byte).
std::vector<std::uint8_t> unpack_int4(std::span<const std::byte> packed);

}  // namespace quantflow
