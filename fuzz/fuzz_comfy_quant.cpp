// Fuzz target: the per-layer `comfy_quant` JSON and the `__metadata__` text of a quantized file, as inspect,
// compare, decode, batch --resume and the plan of a re-quantizing run (stored layers) read them. The input is the comfy_quant bytes of two layers (FP8 tensor-wise
// and INT8 16x16 tiles) and, when it is valid UTF-8, also the file's "quantflow" record.
#include <simdjson.h>

#include <cstdint>
#include <memory>
#include <string>

#include "fuzz/fuzz_support.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "pipeline/batch.hpp"
#include "pipeline/compare.hpp"
#include "pipeline/decode.hpp"
#include "pipeline/inspect.hpp"
#include "pipeline/plan.hpp"

namespace {

using qffuzz::Tensor;

constexpr std::int64_t kRows = 16, kCols = 32;

std::string pattern(std::size_t bytes, unsigned mask) {
    std::string s(bytes, '\0');
    for (std::size_t i = 0; i < bytes; ++i) s[i] = static_cast<char>((i * 37 + 11) & mask);
    return s;
}

std::string f32(std::initializer_list<float> values) {
    std::string s;
    for (const float v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
    return s;
}

quantflow::Backend& cpu() {
    static const std::unique_ptr<quantflow::Backend> backend = quantflow::make_cpu_backend();
    return *backend;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    qffuzz::init_process();
    // BF16 bit patterns with exponent bits below 0x3F80: small finite weights.
    const std::string weight = pattern(kRows * kCols * 2, 0x3E);
    qffuzz::write_file(qffuzz::scratch_path("original.safetensors"),
                       qffuzz::safetensors_image({{"a.bias", "BF16", {kRows}, pattern(kRows * 2, 0x3E)},
                                                  {"a.weight", "BF16", {kRows, kCols}, weight},
                                                  {"b.weight", "BF16", {kRows, kCols}, weight}}));
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    std::vector<std::pair<std::string, std::string>> metadata;
    if (simdjson::validate_utf8(text.data(), text.size())) metadata = {{"format", "comfy_quant"}, {"quantflow", text}};
    const std::string path = qffuzz::scratch_path("quantized.safetensors");
    const auto n = static_cast<std::int64_t>(size);
    qffuzz::write_file(path, qffuzz::safetensors_image(
                                 {{"a.bias", "BF16", {kRows}, pattern(kRows * 2, 0x3E)},
                                  {"a.comfy_quant", "U8", {n}, text},
                                  {"a.weight", "F8_E4M3", {kRows, kCols}, pattern(kRows * kCols, 0x3F)},
                                  {"a.weight_scale", "F32", {1}, f32({0.01f})},
                                  {"b.comfy_quant", "U8", {n}, text},
                                  {"b.weight", "I8", {kRows, kCols}, pattern(kRows * kCols, 0xFF)},
                                  {"b.weight_scale", "F32", {1, 2}, f32({0.01f, 0.02f})}},
                                 metadata));
    qffuzz::expect_clean("inspect", [&] { (void)quantflow::inspect_file(path, false); });
    qffuzz::expect_clean("inspect --json", [&] { (void)quantflow::inspect_file(path, true); });
    qffuzz::expect_clean("resume_verdict", [&] { (void)quantflow::resume_verdict(path, "original.safetensors", 1, 2, 3, "--simple"); });
    qffuzz::expect_clean("plan of a re-quantizing run", [&] {
        quantflow::Options o;
        o.input = path;
        o.comfy_quant = true;
        (void)quantflow::build_plan(quantflow::read_safetensors_header(path), o, quantflow::filter_options(o));
    });
    qffuzz::expect_clean("decode", [&] { (void)quantflow::decode_file(path, qffuzz::scratch_path("decoded.safetensors"), true); });
    qffuzz::expect_clean("compare", [&] {
        quantflow::CompareOptions options;
        options.original = qffuzz::scratch_path("original.safetensors");
        options.quantized = path;
        options.k = 4;
        options.samples = 4;
        options.seed = 1;
        const quantflow::Comparison c = quantflow::compare_files(options, cpu());
        (void)quantflow::comparison_text(c, options);
        (void)quantflow::comparison_json(c, options);
    });
    return 0;
}
