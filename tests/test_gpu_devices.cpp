// [gpu] Several GPUs (issue 13): the binary's output with --devices all is byte-identical to one GPU's in the
// default mode, AdamW and --simple; every GPU computes layers; a layer that fails names its GPU; a GPU that is
// not there is a usage error.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "kernels/cuda/cuda_backend.hpp"
#include "tests/test_support.hpp"

namespace {

std::string binary() {
    const char* v = std::getenv("QF_BINARY");
    return v && *v ? v : QF_BINARY;
}

std::string make_model(const std::string& dir, bool poison) {
    std::vector<qftest::RawTensor> tensors;
    for (int i = 0; i < 8; ++i) {
        const std::string p = "blocks." + std::to_string(i) + ".";
        tensors.push_back({p + "attn.weight", "BF16", {512, 768}, qftest::structured_bf16(512, 768, 40 + i)});
        tensors.push_back({p + "attn.bias", "BF16", {512}, qftest::random_bf16(512, 60 + i)});
        tensors.push_back({p + "ffn.weight", "BF16", {768, 512}, qftest::structured_bf16(768, 512, 80 + i)});
    }
    if (poison) {
        const std::uint16_t nan = 0x7FC0;  // bf16 NaN in blocks.5.ffn.weight, row 2
        std::memcpy(tensors[17].data.data() + 2 * (2 * 512 + 7), &nan, 2);
    }
    const std::string path = dir + (poison ? "/poison.safetensors" : "/model.safetensors");
    qftest::write_safetensors(path, tensors, {{"format", "pt"}});
    return path;
}

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("gpu devices: --devices all writes the bytes of one GPU; every GPU computes layers") {
    const int gpus = quantflow::cuda_device_count();
    MESSAGE("GPUs: " << gpus);
    const std::string dir = qftest::temp_dir("gpu_devices");
    const std::string model = make_model(dir, false);
    std::string log;
    for (const char* mode : {"", "--optimizer adamw --num_iter 60", "--simple"}) {
        CAPTURE(mode);
        const std::string common = binary() + " -i " + model + " --overwrite --comfy_quant --manual_seed 3 --progress none " + mode;
        // The output goes into the failure message: a run that aborted once (exit 134) left nothing else to go by.
        const int one = qftest::run_command(common + " -o " + dir + "/one.safetensors --devices 0", log);
        const std::string said_one = log;  // INFO reads its arguments when a check fails: copies, not `log`
        INFO("--devices 0 said: " << said_one);
        REQUIRE(one == 0);
        const int all = qftest::run_command(common + " -o " + dir + "/all.safetensors --devices all --report " + dir + "/all.json", log);
        const std::string said_all = log;
        INFO("--devices all said: " << said_all);
        REQUIRE(all == 0);
        CHECK(qftest::read_file(dir + "/one.safetensors") == qftest::read_file(dir + "/all.safetensors"));
        const std::string report = read_text(dir + "/all.json");
        for (int g = 0; g < gpus; ++g) CHECK(report.find("\"cuda:" + std::to_string(g) + "\": ") != std::string::npos);
    }
    REQUIRE(qftest::run_command(binary() + " plan -i " + model + " --comfy_quant --devices all", log) == 0);
    CHECK(log.find("gpu_memory_budget") != std::string::npos);
    CHECK(qftest::run_command(binary() + " plan -i " + model + " --devices " + std::to_string(gpus), log) == 2);
    CHECK(log.find("--devices " + std::to_string(gpus) + ": no GPU " + std::to_string(gpus) + " on this machine") != std::string::npos);
}

TEST_CASE("gpu devices: a layer that fails names its tensor and its GPU; nothing is published") {
    const std::string dir = qftest::temp_dir("gpu_devices_fail");
    const std::string model = make_model(dir, true);
    qftest::temp_dir("gpu_devices_fail/out");
    std::string log;
    CHECK(qftest::run_command(binary() + " -i " + model + " -o " + dir + "/out/o.safetensors --comfy_quant --simple --progress none "
                                                         "--devices all",
                              log) == 1);
    CHECK(log.find("cuda:") != std::string::npos);
    CHECK(log.find("tensor 'blocks.5.ffn.weight' [768, 512] holds NaN or Inf in row 2") != std::string::npos);
    CHECK(!qftest::file_exists(dir + "/out/o.safetensors"));
}
