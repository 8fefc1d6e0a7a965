// Fuzz target: model and hardware profile JSON (pipeline/profiles.cpp) read from a user's file, and the size
// strings they hold ("6GiB"). A model profile that loads is then used to filter a few tensor names.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_support.hpp"
#include "pipeline/profiles.hpp"
#include "stages/filter.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    qffuzz::init_process();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const std::string path = qffuzz::scratch_path("profile.json");
    qffuzz::write_file(path, text);
    qffuzz::expect_clean("load_model_profile", [&] {
        quantflow::FilterOptions filter;
        filter.profiles.push_back(quantflow::load_model_profile(path));
        filter.heur = true;
        const std::int64_t shape[2] = {3072, 128};
        for (const char* name : {"blocks.0.self_attn.q.weight", "patch_embedding.weight", "head.head.bias", "norm.weight"})
            (void)quantflow::decide_tensor(filter, name, quantflow::DType::BF16, shape);
    });
    qffuzz::expect_clean("load_hardware_profile", [&] { (void)quantflow::load_hardware_profile(path); });
    qffuzz::expect_clean("parse_size", [&] { (void)quantflow::parse_size(text, "fuzz"); });
    return 0;
}
