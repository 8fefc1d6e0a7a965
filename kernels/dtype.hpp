// kernels/dtype.hpp: the safetensors element types.
//
// The enumerators are declared in the order of safetensors' own `Dtype` enum (v0.8), because that order
// drives the canonical tensor sort of a safetensors writer (dtype descending, then name). Names are the
// exact, case-sensitive strings of the format ("F8_E4M3", never "F8_E4M3FN").
#pragma once

#include <cstdint>
#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace quantflow {

enum class DType : std::uint8_t {
    BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
    I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
};

// "BF16" -> DType::BF16; nullopt for anything safetensors does not know.
std::optional<DType> dtype_from_name(std::string_view name);
std::string_view dtype_name(DType dtype);
// Bits per element (4 for F4, 6 for the F6 types, 8 ... 64 for the rest).
int dtype_bits(DType dtype);
// True for the dtypes quantflow may quantize: F32, F16, BF16.
bool is_quantizable_float(DType dtype);

// The F32/F16/BF16 values of `bytes` as float32 (exact); throws Error for any other dtype.
std::vector<float> decode_floats(std::span<const std::byte> bytes, DType dtype);

}  // namespace quantflow
