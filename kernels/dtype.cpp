#include "kernels/dtype.hpp"

#include <array>
#include <cstring>
#include <string>

#include "kernels/error.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

struct DTypeInfo {
    DType dtype;
    std::string_view name;
    int bits;
};

constexpr std::array<DTypeInfo, 22> kDTypes{{
    {DType::BOOL, "BOOL", 8},         {DType::F4, "F4", 4},
    {DType::F6_E2M3, "F6_E2M3", 6},   {DType::F6_E3M2, "F6_E3M2", 6},
    {DType::U8, "U8", 8},             {DType::I8, "I8", 8},
    {DType::F8_E5M2, "F8_E5M2", 8},   {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::F8_E8M0, "F8_E8M0", 8},   {DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {DType::I16, "I16", 16},          {DType::U16, "U16", 16},
    {DType::F16, "F16", 16},          {DType::BF16, "BF16", 16},
    {DType::I32, "I32", 32},          {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},          {DType::C64, "C64", 64},
    {DType::F64, "F64", 64},          {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},
}};

}  // namespace

std::optional<DType> dtype_from_name(std::string_view name) {
    for (const auto& info : kDTypes)
        if (info.name == name) return info.dtype;
    return std::nullopt;
}

std::string_view dtype_name(DType dtype) { return kDTypes[static_cast<std::size_t>(dtype)].name; }

int dtype_bits(DType dtype) { return kDTypes[static_cast<std::size_t>(dtype)].bits; }

bool is_quantizable_float(DType dtype) {
    return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

std::vector<float> decode_floats(std::span<const std::byte> bytes, DType dtype) {
    QF_EXPECT(is_quantizable_float(dtype), "cannot read " + std::string(dtype_name(dtype)) + " values as floats");
    const std::size_t width = dtype == DType::F32 ? 4 : 2;
    std::vector<float> out(bytes.size() / width);
    for (std::size_t i = 0; i < out.size(); ++i) {
        std::uint16_t h;
        switch (dtype) {
            case DType::BF16: std::memcpy(&h, bytes.data() + 2 * i, 2); out[i] = bf16_to_f32(h); break;
            case DType::F16: std::memcpy(&h, bytes.data() + 2 * i, 2); out[i] = f16_to_f32(h); break;
            default: std::memcpy(&out[i], bytes.data() + 4 * i, 4);
        }
    }
    return out;
}

}  // namespace quantflow
