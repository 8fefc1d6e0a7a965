// Fuzz target: a whole `inspect` and `convert --simple` (CPU backend, one thread) of a small mutated file.
// Input: one byte of options (bit 0 --int8, bits 1-2 --scaling_mode tensor|row|block|block2d, bit 3 legacy
// instead of --comfy_quant, bit 4 --heur, bit 5 --input_scale, bit 6 --kernel_backend lodewise, bit 7
// --full_precision_matrix_mult), then the .safetensors file. Invariants: an error leaves no temp file and
// no output; a conversion that succeeds writes a file that inspect reads back.
#include <cstdint>
#include <memory>
#include <string>

#include "fuzz/fuzz_support.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "pipeline/convert.hpp"
#include "pipeline/inspect.hpp"

namespace {

quantflow::Options options_from_byte(std::uint8_t bits, const std::string& input, const std::string& output) {
    quantflow::Options o;
    o.input = input;
    o.output = output;
    o.simple = true;
    o.int8 = bits & 1;
    static const char* const kModes[] = {"tensor", "row", "block", "block2d"};
    o.scaling_mode = kModes[(bits >> 1) & 3];
    o.block_size = 16;
    o.comfy_quant = !(bits & 8);
    o.heur = bits & 16;
    o.input_scale = bits & 32;
    if (bits & 64) o.kernel_backend = "lodewise";
    o.full_precision_matrix_mult = bits & 128;
    o.manual_seed = 1;
    o.device = "cpu";
    o.profile = "cpu";
    o.progress = "none";
    o.threads = 1;
    o.overwrite = true;
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    qffuzz::init_process();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    // One CPU device for every input; its (zero) accelerator budget is set by the first prepare_conversion.
    static const auto devices =
        std::make_shared<quantflow::DevicePool>(std::vector<std::shared_ptr<quantflow::Backend>>{quantflow::make_cpu_backend()});
    qffuzz::clear_scratch();
    const std::string input = qffuzz::scratch_path("in.safetensors"), output = qffuzz::scratch_path("out.safetensors");
    qffuzz::write_file(input, std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
    qffuzz::expect_clean("inspect", [&] { (void)quantflow::inspect_file(input, false); });
    qffuzz::expect_clean("inspect --json", [&] { (void)quantflow::inspect_file(input, true); });

    const quantflow::Options options = options_from_byte(data[0], input, output);
    const bool converted = qffuzz::expect_clean("convert", [&] {
        const quantflow::Prepared p = quantflow::prepare_conversion(options, devices);
        quantflow::Progress progress(quantflow::ProgressStyle::None, 0);
        (void)quantflow::execute_conversion(p, progress);
    });
    if (const std::string left = qffuzz::hidden_files(); !left.empty())
        qffuzz::report_finding("convert", "temp files left behind: " + left);
    if (converted)
        qffuzz::expect_clean("inspect output", [&] {
            try {
                (void)quantflow::inspect_file(output, false);
            } catch (const quantflow::Error& e) {
                qffuzz::report_finding("convert", std::string("the output does not read back: ") + e.what());
            }
        });
    return 0;
}
