#include <doctest/doctest.h>
#include <simdjson.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "pipeline/profiles.hpp"
#include "stages/filter.hpp"

using namespace quantflow;

namespace {

using Strings = std::vector<std::string>;

Strings operator+(Strings a, const Strings& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// SPEC 4.2, typed again on purpose: this copy protects the JSON data from silent edits.
// clang-format off
const Strings kAvoid = {"norm", "bias", "embed_tokens", "shared", "patch_embedding", "audio_model.patch_embedding",
    "ref_conv", "control_adapter", "motion_encoder.enc.net_app", "face_encoder.conv", "pose_patch_embedding",
    "motion_encoder.enc.fc", "img_emb.proj", "q_norm", "motion_encoder.dec", "head.modulation", "casual_audio_encoder",
    "cond_encoder", "frame_packer", "norm_k", "norm_q"};
const Strings kT5xxlRemove = {"decoder", "lm_head"};
const Strings kQwenAvoid = {"norm_added_k", "norm_added_q", "norm_k", "norm_q", "txt_norm"};
const Strings kHunyuanAvoid = {"layernorm", "img_attn_k_norm", "img_attn_q_norm", "txt_attn_k_norm", "txt_attn_q_norm",
    "norm1", "norm2", "vision_in.proj.0", "vision_in.proj.4", "img_in.proj", "cond_type_embedding"};
const Strings kZimageAvoid = {"cap_embedder.0", "cap_pad_token", "attention_norm1", "attention_norm2", "ffn_norm1",
    "ffn_norm2", "k_norm", "q_norm", "x_pad_token"};
const Strings kDistillLarge = {"distilled_guidance_layer", "final_layer", "img_in", "txt_in"};
const Strings kDistillSmall = {"distilled_guidance_layer"};
const Strings kNerfLarge = {"distilled_guidance_layer", "nerf_blocks", "nerf_image_embedder", "txt_in"};
const Strings kNerfSmall = {"distilled_guidance_layer", "nerf_blocks", "nerf_image_embedder"};
const Strings kRadiance = {"img_in_patch", "nerf_final_layer_conv", "__x0__"};
const Strings kWan = {"text_embedding", "time_embedding", "audio_model.text_embedding", "audio_model.time_embedding",
    "time_projection", "video_model.time_projection", "head.head", "face_encoder.out_proj", "face_adapter"};
const Strings kQwen = {"time_text_embed", "img_in", "norm_out", "proj_out", "txt_in"};
const Strings kZimage = {"x_embedder", "final_layer", "cap_embedder.1", "adaLN_modulation", "t_embedder"};
// clang-format on

FilterOptions with_profiles(const Strings& names) {
    FilterOptions options;
    for (const auto& name : names) options.profiles.push_back(load_model_profile(name));
    return options;
}

TensorDecision decide(const FilterOptions& options, const std::string& name,
                      std::vector<std::int64_t> shape = {4096, 4096}, DType dtype = DType::BF16) {
    return decide_tensor(options, name, dtype, shape);
}

void check(const TensorDecision& d, Verdict verdict, const std::string& reason) {
    CHECK(d.verdict == verdict);
    CHECK(d.reason == reason);
}

struct HeaderTensor {
    std::string dtype;
    std::vector<std::int64_t> shape;
};

// Just enough of a safetensors reader to compare against the reference tool's outputs.
std::map<std::string, HeaderTensor> read_header(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in);
    unsigned char len[8] = {};
    in.read(reinterpret_cast<char*>(len), 8);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | len[i];
    std::string json(n, '\0');
    in.read(json.data(), static_cast<std::streamsize>(n));
    simdjson::dom::parser parser;
    simdjson::dom::object root;
    REQUIRE(!parser.parse(json).get(root));
    std::map<std::string, HeaderTensor> out;
    for (const auto& field : root) {
        if (field.key == "__metadata__") continue;
        HeaderTensor t;
        t.dtype = std::string(std::string_view(field.value["dtype"]));
        for (auto dim : field.value["shape"].get_array()) t.shape.push_back(std::int64_t(dim));
        out[std::string(field.key)] = t;
    }
    return out;
}

}  // namespace

TEST_CASE("embedded model profiles are the seed families plus flux (detection only, no seed list)") {
    CHECK(model_profile_names() == Strings{"distillation_large", "distillation_small", "flux", "hunyuan", "nerf_large",
                                           "nerf_small", "qwen", "radiance", "t5xxl", "wan", "zimage_l", "zimage_s"});
    CHECK(load_model_profile("flux").skip == Strings{"norm"});
}

TEST_CASE("embedded model profiles equal the literal seed lists of spec 4.2") {
    const std::map<std::string, Strings> expected = {
        {"t5xxl", kAvoid},
        {"wan", kAvoid + kWan},
        {"qwen", kQwenAvoid + kQwen},
        {"hunyuan", kHunyuanAvoid},
        {"zimage_l", kZimageAvoid + kZimage},
        {"zimage_s", kZimageAvoid},
        {"distillation_large", kDistillLarge},
        {"distillation_small", kDistillSmall},
        {"nerf_large", kNerfLarge},
        {"nerf_small", kNerfSmall},
        {"radiance", kRadiance},
    };
    for (const auto& [name, skip] : expected) {
        CAPTURE(name);
        const ModelProfile p = load_model_profile(name);
        CHECK(p.name == name);
        CHECK(p.skip == skip);
        // Only --t5xxl removes tensors and copies the weight scale into input_scale.
        CHECK(p.remove == (name == "t5xxl" ? kT5xxlRemove : Strings{}));
        CHECK(p.input_scale_from_weight == (name == "t5xxl"));
    }
}

TEST_CASE("wan profile detects WAN by its 5-D patch embedding and ComfyUI's key, head.modulation") {
    const ModelProfile wan = load_model_profile("wan");
    CHECK(wan.detect_all == Strings{"patch_embedding.weight", "head.modulation"});
    REQUIRE(wan.detect_rank.size() == 1);
    CHECK(wan.detect_rank[0] == std::pair<std::string, int>{"patch_embedding.weight", 5});
}

TEST_CASE("step 1: a remove substring drops every tensor of the key, weight or not") {
    const auto t5 = with_profiles({"t5xxl"});
    check(decide(t5, "decoder.block.0.layer.0.SelfAttention.q.weight"), Verdict::Remove,
          "removed by profile t5xxl: 'decoder'");
    check(decide(t5, "decoder.final_layer_norm.weight", {4096}), Verdict::Remove,
          "removed by profile t5xxl: 'decoder'");
    check(decide(t5, "decoder.block.0.bias", {4096}), Verdict::Remove, "removed by profile t5xxl: 'decoder'");
    check(decide(t5, "lm_head.weight", {32128, 4096}), Verdict::Remove, "removed by profile t5xxl: 'lm_head'");
    // Removal comes before the skip list: a decoder norm is dropped, not kept.
    check(decide(t5, "decoder.block.0.layer.0.layer_norm.weight"), Verdict::Remove,
          "removed by profile t5xxl: 'decoder'");
    check(decide(t5, "encoder.block.0.layer.0.SelfAttention.q.weight"), Verdict::Quantize, "");
}

TEST_CASE("keys that are not 2-D .weight tensors pass through") {
    const FilterOptions none;
    check(decide(none, "blocks.0.norm1.weight", {256}), Verdict::Keep, "not a 2-D .weight");
    check(decide(none, "conv.weight", {64, 32, 3, 3}), Verdict::Keep, "not a 2-D .weight");
    check(decide(none, "pos_embed", {1, 16, 256}), Verdict::Keep, "not a 2-D .weight");
    check(decide(none, "proj.bias", {256, 256}), Verdict::Keep, "not a 2-D .weight");
    check(decide(none, "proj.weight_scale", {256, 256}), Verdict::Keep, "not a 2-D .weight");
    check(decide(none, "weight", {256, 256}), Verdict::Keep, "not a 2-D .weight");
}

TEST_CASE("step 2: a profile skip substring keeps the layer and names the profile and entry") {
    const auto wan = with_profiles({"wan"});
    check(decide(wan, "time_embedding.0.weight"), Verdict::Keep, "profile wan: 'time_embedding'");
    check(decide(wan, "model.diffusion_model.head.head.weight"), Verdict::Keep, "profile wan: 'head.head'");
    // The first entry in list order is reported: 'norm' (AVOID) before 'norm_q'.
    check(decide(wan, "blocks.0.self_attn.norm_q.weight"), Verdict::Keep, "profile wan: 'norm'");
    // Plain substring, as the seed does: not a match on name components.
    check(decide(wan, "enormous.weight"), Verdict::Keep, "profile wan: 'norm'");
    check(decide(wan, "blocks.0.self_attn.q.weight"), Verdict::Quantize, "");
}

TEST_CASE("several profiles: any list matches, the first matching profile is named") {
    const auto qwen_then_z = with_profiles({"qwen", "zimage_s"});
    check(decide(qwen_then_z, "txt_in.q_norm.weight"), Verdict::Keep, "profile qwen: 'txt_in'");
    check(decide(with_profiles({"zimage_s", "qwen"}), "txt_in.q_norm.weight"), Verdict::Keep,
          "profile zimage_s: 'q_norm'");
    const auto distill_rad = with_profiles({"distillation_small", "radiance"});
    check(decide(distill_rad, "img_in_patch.weight"), Verdict::Keep, "profile radiance: 'img_in_patch'");
    check(decide(distill_rad, "distilled_guidance_layer.in_proj.weight"), Verdict::Keep,
          "profile distillation_small: 'distilled_guidance_layer'");
    check(decide(distill_rad, "double_blocks.0.img_attn.qkv.weight"), Verdict::Quantize, "");
    // A remove list of one profile applies while another profile only skips.
    const auto wan_t5 = with_profiles({"wan", "t5xxl"});
    check(decide(wan_t5, "decoder.proj.weight"), Verdict::Remove, "removed by profile t5xxl: 'decoder'");
    check(decide(wan_t5, "time_projection.1.weight"), Verdict::Keep, "profile wan: 'time_projection'");
}

TEST_CASE("step 3: --exclude-layers is a regex searched anywhere in the key") {
    FilterOptions options = with_profiles({"wan"});
    options.exclude.emplace(R"(blocks\.[0-3]\.)");
    options.exclude_text = R"(blocks\.[0-3]\.)";
    check(decide(options, "model.blocks.2.ffn.0.weight"), Verdict::Keep, R"(--exclude-layers 'blocks\.[0-3]\.')");
    check(decide(options, "model.blocks.12.ffn.0.weight"), Verdict::Quantize, "");
    // The profile (step 2) is reported before the regex; the regex before dtype and shape (step 4).
    check(decide(options, "blocks.1.norm_k.weight"), Verdict::Keep, "profile wan: 'norm'");
    check(decide(options, "blocks.1.ids.weight", {4096, 4096}, DType::I64), Verdict::Keep,
          R"(--exclude-layers 'blocks\.[0-3]\.')");
    check(decide(options, "blocks.1.ffn.0.bias", {4096}), Verdict::Keep, "not a 2-D .weight");
}

TEST_CASE("step 4: empty tensors and non-float dtypes pass through") {
    FilterOptions options;
    options.heur = true;
    check(decide(options, "a.weight", {0, 4096}), Verdict::Keep, "empty tensor");
    check(decide(options, "a.weight", {4096, 0}), Verdict::Keep, "empty tensor");
    check(decide(options, "a.weight", {0, 5}, DType::I64), Verdict::Keep, "empty tensor");
    check(decide(options, "a.weight", {4096, 4096}, DType::I64), Verdict::Keep, "dtype I64 is not quantizable");
    check(decide(options, "a.weight", {4096, 4096}, DType::F8_E4M3), Verdict::Keep, "dtype F8_E4M3 is not quantizable");
    check(decide(options, "a.weight", {4096, 4096}, DType::F64), Verdict::Keep, "dtype F64 is not quantizable");
    check(decide(options, "a.weight", {4096, 4096}, DType::I8), Verdict::Keep, "dtype I8 is not quantizable");
    for (DType dtype : {DType::F32, DType::F16, DType::BF16})
        check(decide(options, "a.weight", {4096, 4096}, dtype), Verdict::Quantize, "");
}

TEST_CASE("step 5: --heur keeps poorly shaped layers, only when asked") {
    FilterOptions options;
    check(decide(options, "a.weight", {256, 256}), Verdict::Quantize, "");
    options.heur = true;
    check(decide(options, "a.weight", {256, 256}), Verdict::Keep, "--heur: M*N 65536 < 15000000 with aspect 1.00 < 2");
    check(decide(options, "a.weight", {3072, 1024}), Verdict::Keep, "--heur: max(M,N) 3072 < 4096");
    check(decide(options, "a.weight", {4096, 4096}), Verdict::Quantize, "");
    options.block_size = 128;
    check(decide(options, "a.weight", {4096, 4160}), Verdict::Keep, "--heur: 4160 not divisible by block size 128");
}

TEST_CASE("--heur rule 1: a dimension below the block size") {
    CHECK(heuristic_skip_reason(63, 4096, 64) == "dimension 63 < block size 64");
    CHECK(heuristic_skip_reason(4096, 32, 64) == "dimension 32 < block size 64");
    CHECK(heuristic_skip_reason(32, 100, 64) == "dimension 32 < block size 64");  // before divisibility
}

TEST_CASE("--heur rule 2: a dimension not divisible by the block size") {
    CHECK(heuristic_skip_reason(100, 300, 64) == "100 not divisible by block size 64");  // fixture odd.proj
    CHECK(heuristic_skip_reason(4096, 4100, 64) == "4100 not divisible by block size 64");
    CHECK(heuristic_skip_reason(4096, 4096, 64) == std::nullopt);
}

TEST_CASE("--heur rule 3: aspect above 4 (strictly) with min below 5120 (strictly)") {
    CHECK(heuristic_skip_reason(16384, 4096, 64) == std::nullopt);  // aspect exactly 4.0
    CHECK(heuristic_skip_reason(16448, 4096, 64) == "aspect 4.02 > 4 with min 4096 < 5120");
    CHECK(heuristic_skip_reason(4096, 16448, 64) == "aspect 4.02 > 4 with min 4096 < 5120");
    CHECK(heuristic_skip_reason(25280, 5056, 64) == "aspect 5.00 > 4 with min 5056 < 5120");
    CHECK(heuristic_skip_reason(25600, 5120, 64) == std::nullopt);  // min exactly 5120
}

TEST_CASE("--heur rule 4: fewer than 15,000,000 elements with aspect below 2") {
    CHECK(heuristic_skip_reason(3000, 5000, 8) == std::nullopt);  // M*N exactly 15,000,000
    CHECK(heuristic_skip_reason(2992, 5000, 8) == "M*N 14960000 < 15000000 with aspect 1.67 < 2");
    CHECK(heuristic_skip_reason(4096, 2048, 64) == std::nullopt);  // aspect exactly 2.0, max exactly 4096
    CHECK(heuristic_skip_reason(4096, 2112, 64) == "M*N 8650752 < 15000000 with aspect 1.94 < 2");
}

TEST_CASE("--heur rule 5: the larger dimension below 4096") {
    CHECK(heuristic_skip_reason(4095, 1365, 1) == "max(M,N) 4095 < 4096");
    CHECK(heuristic_skip_reason(4096, 1365, 1) == std::nullopt);
    CHECK(heuristic_skip_reason(1024, 3072, 64) == "max(M,N) 3072 < 4096");
}

TEST_CASE("--heur with block size 64 keeps every layer of the fixture small_model, as the reference did") {
    const auto input = read_header(std::string(QF_FIXTURES) + "/small_model.safetensors");
    const auto output = read_header(std::string(QF_FIXTURES) + "/ref_int8_b64_simple_heur.safetensors");
    FilterOptions options;
    options.heur = true;
    for (const auto& [name, t] : input) {
        CAPTURE(name);
        const auto d = decide_tensor(options, name, *dtype_from_name(t.dtype), t.shape);
        CHECK(d.verdict == Verdict::Keep);
        REQUIRE(output.count(name) == 1);
        CHECK(output.at(name).dtype == t.dtype);
    }
    CHECK(output.size() == input.size());
}

TEST_CASE("--t5xxl on the fixture quantizes exactly the weights the reference quantized") {
    const auto input = read_header(std::string(QF_FIXTURES) + "/small_model.safetensors");
    const auto output = read_header(std::string(QF_FIXTURES) + "/ref_fp8_tensor_simple_t5.safetensors");
    const auto options = with_profiles({"t5xxl"});
    int quantized = 0;
    for (const auto& [name, t] : input) {
        CAPTURE(name);
        const auto d = decide_tensor(options, name, *dtype_from_name(t.dtype), t.shape);
        REQUIRE(output.count(name) == 1);
        CHECK((d.verdict == Verdict::Quantize) == (output.at(name).dtype == "F8_E4M3"));
        quantized += d.verdict == Verdict::Quantize;
    }
    CHECK(quantized == 9);  // every 2-D float weight of the fixture: AVOID matches none of them
}
