#include "stages/format/int4_pack.hpp"

#include "kernels/error.hpp"

namespace quantflow {

std::vector<std::uint8_t> pack_int4(std::span<const std::uint8_t> codes) {
    QF_EXPECT(codes.size() % 2 == 0, "pack_int4: an odd number of codes (" + std::to_string(codes.size()) + ")");
    std::vector<std::uint8_t> out(codes.size() / 2);
    for (std::size_t j = 0; j < out.size(); ++j)
        out[j] = static_cast<std::uint8_t>((codes[2 * j] & 0x0Fu) | ((codes[2 * j + 1] & 0x0Fu) << 4));
    return out;
}

std::vector<std::uint8_t> unpack_int4(std::span<const std::byte> packed) {
    std::vector<std::uint8_t> out(packed.size() * 2);
    const auto nibble = [](unsigned v) { return static_cast<std::uint8_t>(v & 0x8u ? v | 0xF0u : v); };
    for (std::size_t j = 0; j < packed.size(); ++j) {
        const auto b = static_cast<unsigned>(packed[j]);
        out[2 * j] = nibble(b & 0x0Fu);
        out[2 * j + 1] = nibble(b >> 4);
    }
    return out;
}

}  // namespace quantflow
