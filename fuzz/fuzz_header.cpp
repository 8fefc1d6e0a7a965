// Fuzz target: the safetensors header parser (stages/format/safetensors_header.cpp) on a whole file held in
// memory: 8-byte length, header JSON, data block. A parsed header must satisfy the format's invariants.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_support.hpp"
#include "stages/format/safetensors_header.hpp"

using quantflow::SafetensorsHeader;

namespace {

void check_invariants(const SafetensorsHeader& h) {
    std::uint64_t covered = 0;
    for (const auto& t : h.tensors) {
        if (t.begin != covered) qffuzz::report_finding("header", "tensor '" + t.name + "' does not start where the last ended");
        if (t.end < t.begin) qffuzz::report_finding("header", "tensor '" + t.name + "' has reversed offsets");
        covered = t.end;
        if (h.find(t.name) < 0) qffuzz::report_finding("header", "find() misses tensor '" + t.name + "'");
        (void)t.elements();
    }
    if (h.data_start + covered != h.file_size) qffuzz::report_finding("header", "tensors do not cover the data block");
    for (const auto& [key, value] : h.metadata)
        if (h.metadata_value(key) == nullptr) qffuzz::report_finding("header", "metadata_value() misses '" + key + "'");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view file(reinterpret_cast<const char*>(data), size);
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < 8 && i < size; ++i) n |= static_cast<std::uint64_t>(data[i]) << (8 * i);
    // What read_safetensors_header hands the parser: the N bytes after the prefix, when the file holds them
    // (otherwise the length checks reject the file before the text is looked at).
    const std::string_view json = size >= 8 && n <= size - 8 ? file.substr(8, n) : std::string_view{};
    qffuzz::expect_clean("header", [&] {
        const SafetensorsHeader h = quantflow::parse_safetensors_header("fuzz.safetensors", json, n, size);
        check_invariants(h);
    });
    return 0;
}
