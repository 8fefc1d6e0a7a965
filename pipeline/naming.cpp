#include "pipeline/naming.hpp"

#include <algorithm>
#include <filesystem>

#include "kernels/error.hpp"
#include "stages/format/json_text.hpp"

namespace quantflow {

std::string default_output_path(const Options& o) {
    std::string base = o.input;
    const std::string ext = ".safetensors";
    if (base.size() >= ext.size() && base.compare(base.size() - ext.size(), ext.size(), ext) == 0)
        base.resize(base.size() - ext.size());
    std::string name = base + (o.int8 ? "_int8_blockwise" : "_float8_e4m3fn");
    name += o.int8 ? "_bs" + std::to_string(o.block_size) : "_" + o.scaling_mode_or_default();
    const auto has = [&](const char* flag) {
        return std::find(o.model_flags.begin(), o.model_flags.end(), flag) != o.model_flags.end();
    };
    const std::pair<const char*, const char*> suffixes[] = {
        {"t5xxl", "_t5"}, {"distillation_large", "_nodist_l"}, {"distillation_small", "_nodist_s"},
        {"nerf_large", "_nonerf_l"}, {"nerf_small", "_nonerf_s"}, {"radiance", "_norad"}};
    for (const auto& [flag, suffix] : suffixes)
        if (has(flag)) name += suffix;
    name += "_k" + std::to_string(o.min_k) + "-" + std::to_string(o.max_k) + "_p" + python_float_str(o.top_p) + "_lr" +
            python_float_str(o.lr) + ext;
    return name;
}

void check_distinct_paths(const std::string& input, const std::string& output) {
    std::error_code ec;
    const bool same = std::filesystem::exists(output, ec) && std::filesystem::equivalent(input, output, ec);
    if (same || input == output)
        throw Error(output + ": output is the input file; choose another -o", ExitCode::kUsage);
}

}  // namespace quantflow
