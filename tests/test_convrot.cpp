// ConvRot (notes/comfyui-new-formats.md 6-7): the Hadamard transform against the explicit Kronecker matrix, the
// int8 / int4 quantizers on hand-checked rows, int4 packing, the comfy_quant object both ways, the plan's
// decisions and the bias correction computed in the rotated space.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/convrot.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/error.hpp"
#include "kernels/random.hpp"
#include "pipeline/plan.hpp"
#include "stages/bias_corrector.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/int4_pack.hpp"
#include "kernels/learned_rounding.hpp"
#include "tests/rounding_weights.hpp"
#include "test_support.hpp"

using namespace quantflow;
using namespace qftest;

namespace {

TensorView view_of(const std::vector<float>& w, std::int64_t rows, std::int64_t cols) {
    return {reinterpret_cast<const std::byte*>(w.data()), DType::F32, rows, cols};
}

// H_g = H4 (x) ... (x) H4 / sqrt(g), built as comfy-kitchen builds it (repeated kron), in double.
std::vector<double> kron_hadamard(std::int64_t g) {
    const double h4[16] = {1, 1, 1, -1, 1, 1, -1, 1, 1, -1, 1, 1, -1, 1, 1, 1};
    std::vector<double> h(h4, h4 + 16);
    std::int64_t n = 4;
    while (n < g) {
        std::vector<double> next(static_cast<std::size_t>(16 * n * n));
        for (std::int64_t i = 0; i < n; ++i)
            for (std::int64_t j = 0; j < n; ++j)
                for (int a = 0; a < 4; ++a)
                    for (int b = 0; b < 4; ++b)
                        next[static_cast<std::size_t>((i * 4 + a) * 4 * n + j * 4 + b)] = h[static_cast<std::size_t>(i * n + j)] * h4[a * 4 + b];
        h = std::move(next);
        n *= 4;
    }
    for (auto& v : h) v /= std::sqrt(static_cast<double>(g));
    return h;
}

std::vector<float> normal(std::size_t n, std::uint64_t seed, double sd = 0.05) {
    std::vector<float> v(n);
    fill_normal(seed, sd, v);
    return v;
}

}  // namespace

TEST_CASE("convrot: the butterfly equals comfy-kitchen's Kronecker matrix, is its own inverse, and groups are powers of 4") {
    for (const std::int64_t g : {4, 16, 64, 256}) {
        const auto h = kron_hadamard(g);
        const auto x = normal(static_cast<std::size_t>(g), static_cast<std::uint64_t>(g));
        std::vector<double> y(x.begin(), x.end());
        hadamard_group(y.data(), g);
        double worst = 0;
        for (std::int64_t i = 0; i < g; ++i) {
            double want = 0;
            for (std::int64_t j = 0; j < g; ++j) want += h[static_cast<std::size_t>(i * g + j)] * x[static_cast<std::size_t>(j)];
            worst = std::max(worst, std::abs(want - y[static_cast<std::size_t>(i)]));
        }
        CHECK(worst < 1e-15);
        hadamard_group(y.data(), g);  // H * H = I
        for (std::int64_t i = 0; i < g; ++i) CHECK(std::abs(y[static_cast<std::size_t>(i)] - x[static_cast<std::size_t>(i)]) < 1e-15);
    }
    for (const std::int64_t g : {4, 16, 64, 256, 1024, 4096}) CHECK(convrot_group_problem(g).empty());
    CHECK(convrot_group_problem(128) == "ConvRot group size 128 is not a power of 4 (4, 16, 64, 256, 1024, 4096)");
    CHECK(convrot_group_problem(2) == "ConvRot group size 2 is not a power of 4 (4, 16, 64, 256, 1024, 4096)");
    CHECK(convrot_group_problem(16384) == "ConvRot group size 16384 is larger than 4096");
    CHECK_FALSE(convrot_group_valid(0));
    CHECK_FALSE(convrot_group_valid(12));
}

TEST_CASE("convrot: int8 and int4 round-to-nearest of the rotated weight, comfy-kitchen's floors for zero rows") {
    // Row 0 (1, 1, 1, 1) rotates to H4 x / 2 = (1, 1, 1, 1); row 1 (0.5, 0, 0, 0) to (0.25, 0.25, 0.25, -0.25); row 2
    // is zero. 64 columns (int4 needs K % 64 == 0), the first group of 4 set.
    std::vector<float> w(3 * 64, 0.0f);
    for (int c = 0; c < 4; ++c) w[static_cast<std::size_t>(c)] = 1;
    w[64] = 0.5f;
    const auto cpu = make_cpu_backend();
    const std::vector<float> rot = cpu->rotate_groups("t", view_of(w, 3, 64), 4);
    CHECK(std::vector<float>(rot.begin(), rot.begin() + 4) == std::vector<float>{1, 1, 1, 1});
    CHECK(std::vector<float>(rot.begin() + 64, rot.begin() + 68) == std::vector<float>{0.25f, 0.25f, 0.25f, -0.25f});
    const auto first4 = [](const std::vector<std::uint8_t>& c, int row) {
        return std::vector<std::uint8_t>(c.begin() + row * 64, c.begin() + row * 64 + 4);
    };
    const QuantizedTensor q8 = quantize_cpu("t", view_of(rot, 3, 64), {QuantFormat::Int8ConvRot, 4});
    CHECK(q8.scales == std::vector<float>{1.0f / 127, 0.25f / 127, 1e-30f});
    CHECK(first4(q8.codes, 0) == std::vector<std::uint8_t>{127, 127, 127, 127});
    CHECK(first4(q8.codes, 1) == std::vector<std::uint8_t>{127, 127, 127, 0x81});
    CHECK(all_codes_zero(q8) == false);
    const QuantizedTensor q4 = quantize_cpu("t", view_of(rot, 3, 64), {QuantFormat::W4a4ConvRot, 4});
    CHECK(q4.scales == std::vector<float>{1.0f / 7, 0.25f / 7, 1e-10f / 7});
    CHECK(first4(q4.codes, 0) == std::vector<std::uint8_t>{7, 7, 7, 7});
    CHECK(first4(q4.codes, 1) == std::vector<std::uint8_t>{7, 7, 7, 0xF9});
    CHECK(std::count(q4.codes.begin() + 128, q4.codes.end(), std::uint8_t{0}) == 64);
    // dequantize() rotates back: the original row, up to the code's rounding.
    const auto back = dequantize(q8);
    for (std::size_t i = 0; i < w.size(); ++i) CHECK(back[i] == doctest::Approx(w[i]).epsilon(1e-6));
    // Half steps round to even, and int4 clamps at 7.
    std::vector<float> ties(64, 0.0f);
    ties[0] = 7.0f, ties[1] = 3.5f, ties[2] = 2.5f, ties[3] = -0.5f;
    const QuantizedTensor t4 = quantize_cpu("t", view_of(ties, 1, 64), {QuantFormat::W4a4ConvRot, 4});
    CHECK(std::vector<std::uint8_t>(t4.codes.begin(), t4.codes.begin() + 4) == std::vector<std::uint8_t>{7, 4, 2, 0});
}

TEST_CASE("convrot: a 256-group layer decodes back to the weight within int8 rounding; K % G != 0 is refused") {
    const std::int64_t rows = 24, cols = 512;
    const auto w = normal(static_cast<std::size_t>(rows * cols), 3);
    const auto cpu = make_cpu_backend();
    const auto rot = cpu->rotate_groups("t", view_of(w, rows, cols), 256);
    const QuantizedTensor q = quantize_cpu("t", view_of(rot, rows, cols), {QuantFormat::Int8ConvRot, 256});
    const auto back = dequantize(q);
    double err = 0, norm = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        err += (back[i] - w[i]) * (back[i] - w[i]);
        norm += w[i] * w[i];
    }
    CHECK(std::sqrt(err / norm) < 0.01);  // Gaussian rows: ~0.75% at 127 levels
    CHECK(std::sqrt(err / norm) > 0.003);
    CHECK_THROWS_WITH_AS(cpu->rotate_groups("t", view_of(w, rows * 2, cols / 2), 512), "rotate_groups: group size 512 does not divide 256 columns", Error);
    CHECK_FALSE(format_fits({QuantFormat::Int8ConvRot, 256}, 4, 384));
    CHECK(format_fits({QuantFormat::Int8ConvRot, 16}, 4, 48));
    CHECK_FALSE(format_fits({QuantFormat::W4a4ConvRot, 16}, 4, 48));  // int4 also needs K % 64 == 0
    CHECK(format_fits({QuantFormat::W4a4ConvRot, 16}, 4, 64));
}

TEST_CASE("int4 packing: the even column in the low nibble, two's complement, every pair round-trips") {
    CHECK(pack_int4(std::vector<std::uint8_t>{1, static_cast<std::uint8_t>(-2)}) == std::vector<std::uint8_t>{0xE1});
    CHECK(pack_int4(std::vector<std::uint8_t>{static_cast<std::uint8_t>(-7), 7}) == std::vector<std::uint8_t>{0x79});
    std::vector<std::uint8_t> codes;
    for (int a = -8; a < 8; ++a)
        for (int b = -8; b < 8; ++b) {
            codes.push_back(static_cast<std::uint8_t>(a));
            codes.push_back(static_cast<std::uint8_t>(b));
        }
    const auto packed = pack_int4(codes);
    std::vector<std::byte> bytes(packed.size());
    std::memcpy(bytes.data(), packed.data(), packed.size());
    CHECK(unpack_int4(bytes) == codes);
    CHECK_THROWS_AS(pack_int4(std::vector<std::uint8_t>{1, 2, 3}), Error);
}

TEST_CASE("comfy_quant of the ConvRot formats: written keys, stored shapes, and ComfyUI's reading rules") {
    CHECK(comfy_quant_json({QuantFormat::Int8ConvRot, 256}, false) == R"({"format": "int8_tensorwise", "convrot": true, "convrot_groupsize": 256})");
    CHECK(comfy_quant_json({QuantFormat::W4a4ConvRot, 64}, true) ==
          R"({"format": "convrot_w4a4", "convrot_groupsize": 64, "full_precision_matrix_mult": true})");
    CHECK(scale_shape({QuantFormat::Int8ConvRot, 256}, 96, 512) == std::vector<std::int64_t>{96, 1});
    CHECK(scale_shape({QuantFormat::W4a4ConvRot, 256}, 96, 512) == std::vector<std::int64_t>{96});
    CHECK(weight_shape({QuantFormat::W4a4ConvRot, 256}, 96, 512) == std::vector<std::int64_t>{96, 256});
    CHECK(weight_dtype(QuantFormat::W4a4ConvRot) == DType::I8);
    CHECK(weight_dtype(QuantFormat::Int8ConvRot) == DType::I8);
    CHECK(comfy_mainline_loads(QuantFormat::W4a4ConvRot));
    const auto parse = [](std::string_view text) {
        std::vector<std::byte> b(text.size());
        std::memcpy(b.data(), text.data(), text.size());
        return parse_comfy_quant("f: tensor 'x.comfy_quant'", b);
    };
    const auto root = parse(R"({"format":"int8_tensorwise","convrot":true,"convrot_groupsize":64,"params":{"convrot_groupsize":16}})");
    CHECK(root.rotated());
    CHECK(root.convrot_groupsize == 64);
    const auto params = parse(R"({"format":"int8_tensorwise","params":{"convrot":true,"convrot_groupsize":16}})");
    CHECK(params.rotated());
    CHECK(params.convrot_groupsize == 16);
    CHECK(parse(R"({"format":"convrot_w4a4"})").convrot_groupsize == 256);
    CHECK_FALSE(parse(R"({"format":"int8_tensorwise"})").rotated());
    CHECK_THROWS_WITH_AS(parse("{\"format\": 3}"), "f: tensor 'x.comfy_quant': comfy_quant has no \"format\" string", Error);
}

TEST_CASE("plan: --convrot / --w4a4 usage errors, per-layer fallback to int8 row, the rotated copy counted") {
    Options o;
    o.comfy_quant = true;
    o.convrot = true;
    CHECK_THROWS_WITH_AS(requested_spec(o), "--convrot rotates INT8 weights: add --int8 (or use --w4a4 for INT4)", Error);
    o.int8 = true;
    o.convrot_group_size = 128;
    CHECK_THROWS_WITH_AS(requested_spec(o), "--convrot_group_size: ConvRot group size 128 is not a power of 4 (4, 16, 64, 256, 1024, 4096)",
                         Error);
    o.convrot_group_size = 64;
    o.scaling_mode = "block";
    CHECK_THROWS_WITH_AS(requested_spec(o), "--convrot has per-row scales; drop --scaling_mode block", Error);
    o.scaling_mode.reset();
    CHECK(requested_spec(o).format == QuantFormat::Int8ConvRot);
    CHECK(requested_spec(o).block_size == 64);
    o.w4a4 = true;
    CHECK_THROWS_WITH_AS(requested_spec(o), "choose one of --int8, --nvfp4, --mxfp8, --e5m2, --w4a4", Error);
    o.int8 = false;
    o.comfy_quant = false;
    CHECK_THROWS_WITH_AS(requested_spec(o), "--w4a4 needs --comfy_quant (legacy scale_weight files cannot hold it)", Error);

    const std::string dir = temp_dir("convrot_plan");
    write_safetensors(dir + "/m.safetensors", {{"big.weight", "F32", {40, 128}, random_f32(40 * 128, 1)},
                                               {"odd.weight", "F32", {16, 96}, random_f32(16 * 96, 2)}}, {});
    o.input = dir + "/m.safetensors";
    o.comfy_quant = true;
    const Plan p = build_plan(read_safetensors_header(o.input), o, filter_options(o));
    const LayerPlan& big = p.layers[static_cast<std::size_t>(p.input.find("big.weight"))];
    const LayerPlan& odd = p.layers[static_cast<std::size_t>(p.input.find("odd.weight"))];
    CHECK(big.spec.format == QuantFormat::W4a4ConvRot);
    CHECK(big.reason == "rounding-aware finish budget +0.1% (4-bit grid)");
    CHECK(big.rank_k > 0);
    CHECK(odd.spec.format == QuantFormat::Int8Row);
    CHECK(odd.reason.starts_with("ConvRot group 64 (and int4's 64) does not divide 96 input columns: int8 row "
                                 "instead of convrot w4a4"));
    CHECK(p.layout.tensors[p.layout.index_of("big.weight")].spec.shape == std::vector<std::int64_t>{40, 64});
    CHECK(p.layout.tensors[p.layout.index_of("big.weight_scale")].spec.shape == std::vector<std::int64_t>{40});
    CHECK(p.layout.tensors[p.layout.index_of("odd.weight_scale")].spec.shape == std::vector<std::int64_t>{16, 1});
    o.simple = true;  // no learned-rounding memory: what is left is the rotated copy
    Plan counted = build_plan(read_safetensors_header(o.input), o, filter_options(o));
    plan_memory(counted, *make_cpu_backend(), o);
    CHECK(counted.layers[static_cast<std::size_t>(p.input.find("big.weight"))].work_bytes == 40u * 128u * 4u);  // the rotated copy
}

TEST_CASE("bias correction of a ConvRot layer, computed in the rotated space, equals (W - W_hat) m in the weight's own") {
    const std::int64_t rows = 32, cols = 256;
    const auto w = normal(static_cast<std::size_t>(rows * cols), 9);
    const auto cpu = make_cpu_backend();
    const auto rot = cpu->rotate_groups("t", view_of(w, rows, cols), 64);
    TensorJob job;
    job.quant = quantize_cpu("t", view_of(rot, rows, cols), {QuantFormat::Int8ConvRot, 64});
    std::vector<float> bias(static_cast<std::size_t>(rows), 0.0f);
    std::vector<std::byte> bias_bytes(bias.size() * 4);
    std::memcpy(bias_bytes.data(), bias.data(), bias_bytes.size());
    CalibrationMeans means(5, 64);
    correct_bias(job, view_of(rot, rows, cols), bias_bytes, DType::F32, *cpu, means);
    const auto m = means.for_width(cols);
    const auto w_hat = dequantize(job.quant);
    for (std::int64_t r = 0; r < rows; ++r) {
        double want = 0;
        for (std::int64_t c = 0; c < cols; ++c) {
            const auto i = static_cast<std::size_t>(r * cols + c);
            want += (static_cast<double>(w[i]) - w_hat[i]) * m[static_cast<std::size_t>(c)];
        }
        float got = 0;
        std::memcpy(&got, job.bias.data() + 4 * r, 4);
        CHECK(got == doctest::Approx(want).epsilon(1e-3).scale(1e-6));
    }
}

TEST_CASE("learned rounding of a ConvRot int8 layer runs in the rotated space: never worse than round-to-nearest, Frobenius in budget") {
    // The rotation is orthogonal: W = W_rot * H, so ||W - Q H|| = ||W_rot - Q|| and the SVD of W_rot has W's
    // singular values (its right vectors rotated). Optimizing W_rot's codes against W_rot's basis is the whole job.
    const qftest::Weight w = qftest::structured_weight(256, 512, 17);
    const auto cpu = make_cpu_backend();
    const auto rot = cpu->rotate_groups("w", w.view, 256);
    const TensorView rv = view_of(rot, 256, 512);
    const LowRank basis = top_k_svd_cpu("w", rv, {16, 17, 10, 4, false});
    for (const Optimizer optimizer : {Optimizer::Original, Optimizer::AdamW}) {
        CAPTURE(optimizer_name(optimizer));
        const QuantizedTensor rtn = quantize_cpu("w", rv, {QuantFormat::Int8ConvRot, 256});
        QuantizedTensor q = rtn;
        RoundingSettings s;
        s.optimizer = optimizer;
        s.num_iter = optimizer == Optimizer::Original ? 500 : 60;
        s.optimizer_k = 16;
        learned_round_cpu("w", rv, basis, s, q);
        CHECK(q.scales == rtn.scales);
        const QualityMetrics before = measure_cpu(rv, rtn, &basis, {}), after = measure_cpu(rv, q, &basis, {});
        CHECK(after.projected_error < 0.9 * before.projected_error);
        CHECK(after.error_norm <= before.error_norm * (optimizer == Optimizer::Original ? 1 + 1e-4 + 1e-6 : 1 + 1e-3 + 1e-4 + 1e-6));
        // The same error measured in the weight's own space (dequantize() rotates back).
        const auto back = dequantize(q);
        std::vector<float> orig(back.size());
        for (std::int64_t r = 0; r < 256; ++r) decode_row_cpu(w.view, r, 0, 512, orig.data() + r * 512);
        double e2 = 0;
        for (std::size_t i = 0; i < back.size(); ++i) e2 += (static_cast<double>(orig[i]) - back[i]) * (orig[i] - back[i]);
        CHECK(std::sqrt(e2) == doctest::Approx(after.error_norm).epsilon(1e-4));
    }
}
