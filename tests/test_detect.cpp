// --model auto: architecture detection from tensor names and ranks, on synthetic headers of each family.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "pipeline/detect.hpp"

using namespace quantflow;

namespace {

std::vector<TensorInfo> header_of(const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& tensors) {
    std::vector<TensorInfo> out;
    for (const auto& [name, shape] : tensors) out.push_back({name, DType::BF16, shape, 0, 0});
    return out;
}

std::vector<std::string> detected(const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& tensors) {
    return detect_architecture(header_of(tensors)).profiles;
}

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("WAN 2.x: 5-D patch embedding and self/cross attention blocks") {
    CHECK(detected({{"patch_embedding.weight", {5120, 16, 1, 2, 2}}, {"blocks.0.self_attn.q.weight", {5120, 5120}},
                    {"blocks.0.cross_attn.k.weight", {5120, 5120}}, {"head.head.weight", {64, 5120}}}) == Names{"wan"});
    // The same names with a 2-D patch embedding are not WAN (rank rule).
    CHECK(detected({{"patch_embedding.weight", {5120, 64}}, {"blocks.0.self_attn.q.weight", {5120, 5120}},
                    {"blocks.0.cross_attn.k.weight", {5120, 5120}}}).empty());
}

TEST_CASE("Hunyuan Video, Flux, Chroma and Chroma Radiance are told apart") {
    CHECK(detected({{"double_blocks.0.img_mod.linear.weight", {18432, 3072}}, {"double_blocks.0.img_attn_qkv.weight", {9216, 3072}},
                    {"img_in.proj.weight", {3072, 16, 1, 2, 2}}}) == Names{"hunyuan"});
    CHECK(detected({{"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}, {"single_blocks.0.linear1.weight", {21504, 3072}},
                    {"img_in.weight", {3072, 64}}, {"guidance_in.in_layer.weight", {3072, 256}}}) == Names{"flux"});
    CHECK(detected({{"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}, {"single_blocks.0.linear1.weight", {21504, 3072}},
                    {"distilled_guidance_layer.in_proj.weight", {5120, 64}}}) == Names{"distillation_large"});
    CHECK(detected({{"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}, {"distilled_guidance_layer.in_proj.weight", {5120, 64}},
                    {"nerf_blocks.0.param_generator.weight", {8192, 3072}}, {"nerf_final_layer_conv.conv.weight", {3, 64, 3, 3}},
                    {"img_in_patch.weight", {3072, 3, 16, 16}}}) == Names{"nerf_large", "radiance"});
}

TEST_CASE("Qwen Image, Z-Image and T5-XXL") {
    CHECK(detected({{"img_in.weight", {3072, 64}}, {"txt_in.weight", {3072, 3584}}, {"txt_norm.weight", {3584}},
                    {"transformer_blocks.0.attn.add_q_proj.weight", {3072, 3072}}}) == Names{"qwen"});
    CHECK(detected({{"x_embedder.weight", {3840, 64}}, {"cap_embedder.0.weight", {2560}}, {"cap_embedder.1.weight", {3840, 2560}},
                    {"cap_pad_token", {1, 3840}}, {"layers.0.attention.qkv.weight", {11520, 3840}}}) == Names{"zimage_l"});
    CHECK(detected({{"shared.weight", {32128, 4096}}, {"encoder.block.0.layer.0.SelfAttention.q.weight", {4096, 4096}},
                    {"decoder.block.0.layer.0.SelfAttention.q.weight", {4096, 4096}}}) == Names{"t5xxl"});
    CHECK(detected({{"encoder.embed_tokens.weight", {32128, 4096}}, {"encoder.block.0.layer.0.SelfAttention.q.weight", {4096, 4096}}}) ==
          Names{"t5xxl"});
}

TEST_CASE("unknown architecture: no profile, and the summary says so") {
    const Detection d = detect_architecture(header_of({{"blocks.0.attn.qkv.weight", {768, 256}}, {"pos_embed", {1, 16, 256}}}));
    CHECK(d.profiles.empty());
    CHECK(d.summary == "unknown architecture: no model profile's detect rules match, no model filter applied");
    const Detection w = detect_architecture(header_of({{"patch_embedding.weight", {5120, 16, 1, 2, 2}},
                                                       {"blocks.0.self_attn.q.weight", {5120, 5120}},
                                                       {"blocks.0.cross_attn.k.weight", {5120, 5120}}}));
    CHECK(w.summary == "wan (WAN 2.x video DiT (seed AVOID + WAN lists)): found patch_embedding.weight, blocks.0.self_attn.q.weight, "
                       "blocks.0.cross_attn.k.weight");
}
