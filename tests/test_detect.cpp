// --model auto: architecture detection from tensor names and ranks, on synthetic headers of each family.
//
// Each family's header holds the keys ComfyUI's own detection reads for it (comfy/model_detection.py,
// detect_unet_config; T5 from comfy/sd.py, detect_te_model), with real shapes, so a file ComfyUI loads as that
// family is recognised here (issue 12 finding 4), and the neighbours ComfyUI tells apart are not confused.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "pipeline/detect.hpp"
#include "pipeline/profiles.hpp"

using namespace quantflow;

namespace {

using Header = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;
using Names = std::vector<std::string>;

std::vector<TensorInfo> header_of(const Header& tensors) {
    std::vector<TensorInfo> out;
    for (const auto& [name, shape] : tensors) out.push_back({name, DType::BF16, shape, 0, 0});
    return out;
}

Names detected(const Header& tensors) { return detect_architecture(header_of(tensors)).profiles; }

Header with(Header base, const Header& more) {
    base.insert(base.end(), more.begin(), more.end());
    return base;
}

// WAN 2.1 14B text-to-video: ComfyUI keys on head.modulation and reads head.head, blocks.0.ffn.0, patch_embedding.
const Header kWan21T2v = {{"patch_embedding.weight", {5120, 16, 1, 2, 2}}, {"head.modulation", {1, 2, 5120}},
                          {"head.head.weight", {64, 5120}}, {"blocks.0.ffn.0.weight", {13824, 5120}},
                          {"blocks.0.self_attn.q.weight", {5120, 5120}}, {"blocks.0.cross_attn.k.weight", {5120, 5120}}};

// Flux.1: double_blocks.0.img_attn.norm.key_norm.{scale,weight} and img_in.weight.
const Header kFlux = {{"img_in.weight", {3072, 64}}, {"double_blocks.0.img_attn.norm.key_norm.scale", {128}},
                      {"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}, {"single_blocks.0.linear1.weight", {21504, 3072}},
                      {"txt_in.weight", {3072, 4096}}, {"vector_in.in_layer.weight", {3072, 768}},
                      {"guidance_in.in_layer.weight", {3072, 256}}};

// Hunyuan Video: txt_in.individual_token_refiner.blocks.0.norm1.weight; ComfyUI also reads img_in.proj,
// final_layer.linear and txt_in.input_embedder.
const Header kHunyuanVideo = {{"txt_in.individual_token_refiner.blocks.0.norm1.weight", {3072}},
                              {"img_in.proj.weight", {3072, 16, 1, 2, 2}}, {"final_layer.linear.weight", {64, 3072}},
                              {"txt_in.input_embedder.weight", {3072, 4096}}, {"double_blocks.0.img_attn_qkv.weight", {9216, 3072}},
                              {"double_blocks.19.img_attn_qkv.weight", {9216, 3072}}, {"single_blocks.0.linear1.weight", {21504, 3072}}};

// Z-Image: the Lumina 2 branch (cap_embedder.1.weight, noise_refiner.0.attention.k_norm.weight) at dim 3840 with
// cap_pad_token (pad_tokens_multiple).
const Header kZImage = {{"x_embedder.weight", {3840, 64}}, {"cap_embedder.0.weight", {2560}}, {"cap_embedder.1.weight", {3840, 2560}},
                        {"noise_refiner.0.attention.k_norm.weight", {128}}, {"cap_pad_token", {1, 3840}},
                        {"x_pad_token", {1, 3840}}, {"layers.0.attention.qkv.weight", {11520, 3840}}};

}  // namespace

TEST_CASE("issue 12 finding 4: Hunyuan Video without double_blocks.0.img_mod.linear.weight is hunyuan, as in ComfyUI") {
    // The header of the report: the token refiner and img_attn_qkv blocks, no img_mod in the header.
    const Detection d = detect_architecture(header_of(kHunyuanVideo));
    CHECK(d.profiles == Names{"hunyuan"});
    CHECK(d.summary == "hunyuan (Hunyuan Video DiT (seed HUNYUAN_AVOID list)): found txt_in.individual_token_refiner.blocks.0.norm1.weight");
    // HunyuanVideo 1.5 (vision_in, cond_type_embedding) and HunyuanImage 2.1 (byt5_in, 2-D patches) share the key.
    CHECK(detected(with(kHunyuanVideo, {{"vision_in.proj.0.weight", {1152}}, {"cond_type_embedding.weight", {3, 2048}}})) ==
          Names{"hunyuan"});
    CHECK(detected({{"txt_in.individual_token_refiner.blocks.0.norm1.weight", {3584}}, {"img_in.proj.weight", {3584, 64, 1, 1}},
                    {"byt5_in.fc1.weight", {2048, 1472}}, {"double_blocks.0.img_attn_qkv.weight", {10752, 3584}}}) == Names{"hunyuan"});
    // A full checkpoint keeps its prefix (ComfyUI strips model.diffusion_model.; a substring test needs not).
    CHECK(detected({{"model.diffusion_model.txt_in.individual_token_refiner.blocks.0.norm1.weight", {3072}},
                    {"model.diffusion_model.double_blocks.0.img_attn_qkv.weight", {9216, 3072}}}) == Names{"hunyuan"});
}

TEST_CASE("WAN: head.modulation, every variant ComfyUI names, one profile that keeps each variant's extra inputs") {
    const Detection d = detect_architecture(header_of(kWan21T2v));
    CHECK(d.profiles == Names{"wan"});
    CHECK(d.summary == "wan (WAN 2.x video DiT (seed AVOID + WAN lists)): found patch_embedding.weight, head.modulation");
    // ComfyUI's model_type branches (WAN 2.1 and 2.2 14B share one layout; 2.2 TI2V 5B has 48 latent channels).
    // Each is the wan profile; its skip list keeps the variant's own input modules in their original dtype.
    struct Variant {
        const char* model_type;
        Header keys;
        const char* kept;  // a 2-D weight of the variant that the wan profile must not quantize ("" = none)
    };
    const std::vector<Variant> variants = {
        {"i2v", {{"img_emb.proj.0.bias", {1280}}, {"img_emb.proj.1.weight", {5120, 1280}}}, "img_emb.proj.1.weight"},
        {"flf2v", {{"img_emb.proj.0.bias", {1280}}, {"img_emb.emb_pos", {1, 514, 1280}}}, ""},
        {"vace", {{"vace_patch_embedding.weight", {5120, 96, 1, 2, 2}}, {"vace_blocks.0.before_proj.weight", {5120, 5120}}}, ""},
        {"camera", {{"control_adapter.conv.weight", {5120, 256, 2, 2}}, {"control_adapter.proj.weight", {5120, 5120}}},
         "control_adapter.proj.weight"},
        {"s2v", {{"casual_audio_encoder.encoder.final_linear.weight", {5120, 1024}}}, "casual_audio_encoder.encoder.final_linear.weight"},
        {"humo", {{"audio_proj.audio_proj_glob_1.layer.bias", {5120}}}, ""},
        {"animate", {{"face_adapter.fuser_blocks.0.k_norm.weight", {128}}, {"face_adapter.fuser_blocks.0.linear1_kv.weight", {10240, 5120}}},
         "face_adapter.fuser_blocks.0.linear1_kv.weight"},
        {"scail", {{"patch_embedding_pose.weight", {5120, 16, 1, 2, 2}}}, ""},
    };
    FilterOptions wan_filter;
    wan_filter.profiles.push_back(load_model_profile("wan"));
    for (const auto& v : variants) {
        CAPTURE(v.model_type);
        CHECK(detected(with(kWan21T2v, v.keys)) == Names{"wan"});
        if (*v.kept) CHECK(decide_tensor(wan_filter, v.kept, DType::BF16, std::vector<std::int64_t>{5120, 5120}).verdict == Verdict::Keep);
    }
    CHECK(detected({{"patch_embedding.weight", {3072, 48, 1, 2, 2}}, {"head.modulation", {1, 2, 3072}}, {"head.head.weight", {192, 3072}},
                    {"blocks.0.ffn.0.weight", {14336, 3072}}}) == Names{"wan"});  // WAN 2.2 TI2V 5B
    // Without the blocks' names a WAN file is still WAN (ComfyUI needs only head.modulation to pick it) ...
    CHECK(detected({{"model.diffusion_model.patch_embedding.weight", {1536, 16, 1, 2, 2}},
                    {"model.diffusion_model.head.modulation", {1, 2, 1536}}}) == Names{"wan"});
    // ... but a 2-D patch embedding is not the WAN layout (rank rule), and blocks without head.modulation are not WAN.
    CHECK(detected({{"patch_embedding.weight", {5120, 64}}, {"head.modulation", {1, 2, 5120}}}).empty());
    CHECK(detected({{"patch_embedding.weight", {5120, 16, 1, 2, 2}}, {"blocks.0.self_attn.q.weight", {5120, 5120}},
                    {"blocks.0.cross_attn.k.weight", {5120, 5120}}}).empty());
}

TEST_CASE("Flux.1 is flux; Flux 2, Hunyuan 3D and Hunyuan Video share double_blocks but not the profile") {
    CHECK(detected(kFlux) == Names{"flux"});
    // key_norm may be stored as .weight; a Flux without guidance (schnell) is Flux too.
    CHECK(detected({{"img_in.weight", {3072, 64}}, {"double_blocks.0.img_attn.norm.key_norm.weight", {128}},
                    {"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}}) == Names{"flux"});
    // Ovis and LongCat-Image are Flux in ComfyUI (image_model "flux"), txt_norm included: not Qwen Image.
    CHECK(detected(with(kFlux, {{"txt_norm.weight", {2048}}, {"double_blocks.0.img_mlp.gate_proj.weight", {8192, 3072}}})) == Names{"flux"});
    // Flux 2 (double_stream_modulation_img): image_model "flux2" in ComfyUI, a different model; no profile here.
    CHECK(detected({{"img_in.weight", {6144, 128}}, {"double_blocks.0.img_attn.norm.key_norm.scale", {128}},
                    {"double_stream_modulation_img.lin.weight", {36864, 6144}}, {"double_blocks.0.img_attn.qkv.weight", {18432, 6144}}})
              .empty());
    // Hunyuan 3D 2.0: Flux-style blocks on latent_in, no img_in.weight, so ComfyUI does not take it for Flux.
    CHECK(detected({{"latent_in.weight", {1024, 64}}, {"cond_in.weight", {1024, 1536}},
                    {"double_blocks.0.img_attn.norm.key_norm.scale", {64}}, {"double_blocks.0.img_attn.qkv.weight", {3072, 1024}},
                    {"single_blocks.0.linear1.weight", {7168, 1024}}}).empty());
    CHECK(detected(kHunyuanVideo) == Names{"hunyuan"});
}

TEST_CASE("Chroma is distillation_large; Chroma Radiance is nerf_large and radiance") {
    // Chroma: the Flux gate plus distilled_guidance_layer.norms.0 (or .0.norms.0 in the split layout).
    const Header chroma = {{"img_in.weight", {3072, 64}}, {"double_blocks.0.img_attn.norm.key_norm.scale", {128}},
                           {"double_blocks.0.img_attn.qkv.weight", {9216, 3072}}, {"distilled_guidance_layer.in_proj.weight", {5120, 64}},
                           {"distilled_guidance_layer.norms.0.scale", {5120}}};
    CHECK(detected(chroma) == Names{"distillation_large"});
    CHECK(detected({{"img_in.weight", {3072, 64}}, {"double_blocks.0.img_attn.norm.key_norm.weight", {128}},
                    {"distilled_guidance_layer.0.norms.0.weight", {5120}}}) == Names{"distillation_large"});
    // Chroma Radiance: no img_in.weight (pixel patches come in through img_in_patch), nerf_blocks.0.norm.
    const Header radiance = {{"img_in_patch.weight", {3072, 3, 16, 16}}, {"double_blocks.0.img_attn.norm.key_norm.scale", {128}},
                             {"distilled_guidance_layer.norms.0.scale", {5120}}, {"nerf_blocks.0.norm.scale", {64}},
                             {"nerf_blocks.0.param_generator.weight", {8192, 3072}}, {"nerf_final_layer_conv.norm.scale", {64}},
                             {"nerf_final_layer_conv.conv.weight", {3, 64, 3, 3}}};
    CHECK(detected(radiance) == Names{"nerf_large", "radiance"});
    CHECK(detected(with(radiance, {{"__x0__", {0}}})) == Names{"nerf_large", "radiance"});  // x0-prediction variant
}

TEST_CASE("Qwen Image is qwen; Lens and Qwen Image 2.1 are not") {
    const Header qwen = {{"img_in.weight", {3072, 64}}, {"txt_in.weight", {3072, 3584}}, {"txt_norm.weight", {3584}},
                         {"transformer_blocks.0.attn.add_q_proj.weight", {3072, 3072}}, {"proj_out.weight", {64, 3072}}};
    CHECK(detected(qwen) == Names{"qwen"});
    CHECK(detected(with(qwen, {{"__index_timestep_zero__", {0}}})) == Names{"qwen"});                          // 2511
    CHECK(detected(with(qwen, {{"time_text_embed.addition_t_embedding.weight", {2, 3072}}})) == Names{"qwen"});  // Layered
    // Lens: checked before Qwen Image in ComfyUI (norm_added_q and a SwiGLU img_mlp.w1).
    CHECK(detected(with(qwen, {{"transformer_blocks.0.attn.norm_added_q.weight", {128}},
                               {"transformer_blocks.0.img_mlp.w1.weight", {8192, 3072}}})).empty());
    // Qwen Image 2.1: txt_in.text_norm instead of txt_norm, a fused img_mlp.
    CHECK(detected({{"txt_in.text_norm.weight", {4096}}, {"modulation.1.weight", {18432, 3072}}, {"img_in.weight", {3072, 128}},
                    {"transformer_blocks.0.attn.norm_q.weight", {128}}, {"proj_out.weight", {128, 3072}},
                    {"transformer_blocks.0.img_mlp.gate_up.weight", {24576, 3072}}}).empty());
}

TEST_CASE("Z-Image is zimage_l; Lumina 2 and Ming-Image share the layout but not the profile") {
    CHECK(detected(kZImage) == Names{"zimage_l"});
    // Lumina 2 (dim 2304): no pad tokens (ComfyUI creates them only for pad_tokens_multiple).
    CHECK(detected({{"x_embedder.weight", {2304, 64}}, {"cap_embedder.1.weight", {2304, 2304}},
                    {"noise_refiner.0.attention.k_norm.weight", {96}}, {"layers.0.attention.qkv.weight", {4608, 2304}}}).empty());
    // Ming-Image: ComfyUI's __ming_image__ marker makes it image_model "ming_image".
    CHECK(detected(with(kZImage, {{"__ming_image__", {0}}})).empty());
}

TEST_CASE("T5-XXL: encoder.block.23's gated FFN (ComfyUI's detect_te_model); T5-base is not T5-XXL") {
    CHECK(detected({{"shared.weight", {32128, 4096}}, {"encoder.block.0.layer.0.SelfAttention.q.weight", {4096, 4096}},
                    {"encoder.block.23.layer.1.DenseReluDense.wi_1.weight", {10240, 4096}},
                    {"decoder.block.0.layer.0.SelfAttention.q.weight", {4096, 4096}}}) == Names{"t5xxl"});
    // The encoder alone, without shared.weight or embed_tokens (as text encoders ship for Flux and WAN).
    CHECK(detected({{"encoder.block.23.layer.1.DenseReluDense.wi_0.weight", {10240, 4096}},
                    {"encoder.block.23.layer.1.DenseReluDense.wi_1.weight", {10240, 4096}}}) == Names{"t5xxl"});
    CHECK(detected({{"encoder.block.23.layer.1.DenseReluDense.wi.weight", {65536, 1024}}}) == Names{"t5xxl"});  // T5 v1.0 XXL
    // T5-base: 12 blocks, only block 0's attention is what ComfyUI keys on.
    CHECK(detected({{"shared.weight", {32128, 768}}, {"encoder.block.0.layer.0.SelfAttention.q.weight", {768, 768}},
                    {"encoder.block.0.layer.0.SelfAttention.k.weight", {768, 768}},
                    {"encoder.block.11.layer.1.DenseReluDense.wi.weight", {3072, 768}}}).empty());
}

TEST_CASE("unknown architecture: no profile, and the summary says so") {
    const Detection d = detect_architecture(header_of({{"blocks.0.attn.qkv.weight", {768, 256}}, {"pos_embed", {1, 16, 256}}}));
    CHECK(d.profiles.empty());
    CHECK(d.summary == "unknown architecture: no model profile's detect rules match, no model filter applied");
}
