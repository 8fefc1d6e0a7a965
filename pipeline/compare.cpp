#include "pipeline/compare.hpp"
#include "pipeline/compare_verdict.hpp"

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "kernels/error.hpp"
#include "kernels/numerics.hpp"
#include "kernels/random.hpp"
#include "kernels/units.hpp"
#include "kernels/convrot.hpp"
#include "stages/format/block_scaled.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/int4_pack.hpp"
#include "stages/format/json_text.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/format/stored_layer.hpp"
#include "stages/reader.hpp"

namespace quantflow {
namespace {

constexpr int kPowerIterations = 8;  // the optimizers use 3; a measuring stick should be sharper
constexpr int kOversample = 10;
// Measured by tools/bench_svd_accuracy.py on structured weights (WAN shapes, 3 seeds): subspace overlap with the
// exact SVD >= 0.9999 from 6 power iterations on (4 give >= 0.9997).

struct OpenFile {
    SafetensorsHeader header;
    MappedFile file;
    std::map<std::string, std::size_t, std::less<>> index;
    explicit OpenFile(const std::string& path) : header(read_safetensors_header(path)), file(path) {
        for (std::size_t i = 0; i < header.tensors.size(); ++i) index.emplace(header.tensors[i].name, i);
    }
    const TensorInfo* find(std::string_view name) const {
        const auto it = index.find(name);
        return it == index.end() ? nullptr : &header.tensors[it->second];
    }
    std::span<const std::byte> data(const TensorInfo& t) const { return tensor_data(file, header, index.at(t.name)); }
    void prefetch(const TensorInfo* t) const {
        if (t) file.prefetch(header.data_start + t->begin, t->bytes());
    }
    void release(const TensorInfo* t) const {
        if (t) file.release(header.data_start + t->begin, t->bytes());
    }
};

// One quantized layer, decided from the two headers (and its small comfy_quant JSON) before any weight is read.
struct LayerJob {
    LayerComparison result;  // everything but the metrics and the verdict
    const TensorInfo* weight = nullptr;  // ORIGINAL's X.weight
    const TensorInfo* codes = nullptr;   // QUANTIZED's X.weight
    const TensorInfo* scale = nullptr;
    const TensorInfo* bias = nullptr;    // ORIGINAL's and QUANTIZED's X.bias: both or neither
    const TensorInfo* bias_q = nullptr;
    const TensorInfo* input_scale = nullptr;
    const TensorInfo* comfy_quant = nullptr;
    const TensorInfo* global_scale = nullptr;  // nvfp4's weight_scale_2
    QuantSpec spec;
    bool block_scaled = false;  // mxfp8 / nvfp4: padded, packed, swizzled (stages/format/block_scaled.hpp)
    bool rotated = false;       // ConvRot: codes of W * H (int4 packed for convrot_w4a4); compared in that space
    bool legacy = false, fpmm = false;
    std::uint64_t host_bytes = 0;  // see layer_host_bytes
};

std::string file_tensor(const std::string& path, std::string_view name) { return path + ": tensor '" + std::string(name) + "'"; }

// Host bytes of one layer while it is measured: its mapped weight and codes, the codes' copy, the float32 copy
// of the weight that the CPU backend's SVD decodes, scales, biases and test inputs.
std::uint64_t layer_host_bytes(const LayerJob& j, int samples) {
    const auto elements = static_cast<std::uint64_t>(j.result.rows * j.result.cols);
    std::uint64_t bytes = j.weight->bytes() + j.codes->bytes() + elements + 4 * elements + 4 * j.scale->elements() +
                          4 * static_cast<std::uint64_t>(j.result.cols) * static_cast<std::uint64_t>(samples);
    if (j.bias) bytes += j.bias->bytes() + j.bias_q->bytes() + 8 * static_cast<std::uint64_t>(j.result.rows);
    if (j.rotated) bytes += 4 * elements;  // the rotated original
    return bytes;
}

// Pass 1, headers only: every quantized layer of QUANTIZED with its counterpart in ORIGINAL, in name order.
std::vector<LayerJob> plan_layers(const OpenFile& original, const OpenFile& quant, const CompareOptions& options,
                                  std::size_t& unquantized) {
    std::vector<const TensorInfo*> weights;
    for (const auto& t : quant.header.tensors)
        if (t.name.ends_with(".weight") && t.shape.size() == 2) weights.push_back(&t);
    std::sort(weights.begin(), weights.end(), [](auto* a, auto* b) { return a->name < b->name; });
    std::vector<LayerJob> jobs;
    for (const TensorInfo* t : weights) {
        const bool fp8 = t->dtype == DType::F8_E4M3, int8 = t->dtype == DType::I8, e5m2 = t->dtype == DType::F8_E5M2;
        const std::string layer = t->name.substr(0, t->name.size() - std::strlen(".weight"));
        const std::string where = file_tensor(options.quantized, t->name);
        const TensorInfo* ref = original.find(t->name);
        std::string block_format;  // "mxfp8" / "nvfp4" from comfy_quant, before the shapes are compared
        ComfyQuantInfo info;
        if (const TensorInfo* cq = quant.find(layer + ".comfy_quant")) {
            info = parse_comfy_quant(file_tensor(options.quantized, cq->name), quant.data(*cq));
            if (info.format == "mxfp8" || info.format == "nvfp4") block_format = info.format;
        }
        const bool int4 = info.format == "convrot_w4a4" && int8;
        if (!fp8 && !int8 && !e5m2 && block_format.empty()) {
            if (ref) ++unquantized;
            continue;
        }
        if (!ref) throw Error(where + " is quantized but " + options.original + " has no tensor of that name");
        const QuantFormat block_kind = block_format == "nvfp4" ? QuantFormat::Nvfp4 : QuantFormat::Mxfp8;
        if (!block_format.empty() && ref->shape.size() == 2 && block_weight_shape(block_kind, ref->shape[0], ref->shape[1]) != t->shape)
            throw Error(where + " is " + block_format + " of shape " + format_shape(t->shape) + " but " + options.original + " has " +
                        format_shape(ref->shape) + " (stored " + format_shape(block_weight_shape(block_kind, ref->shape[0], ref->shape[1])) + ")");
        if (int4 && ref->shape.size() == 2 && std::vector<std::int64_t>{ref->shape[0], ref->shape[1] / 2} != t->shape)
            throw Error(where + " is convrot_w4a4 of shape " + format_shape(t->shape) + " but " + options.original + " has " +
                        format_shape(ref->shape) + " (stored [N, K/2])");
        if (block_format.empty() && !int4 && ref->shape != t->shape)
            throw Error(where + " has shape " + format_shape(t->shape) + " but " + options.original + " has " + format_shape(ref->shape));
        if (ref->dtype != DType::F32 && ref->dtype != DType::BF16 && ref->dtype != DType::F16)
            throw Error(file_tensor(options.original, ref->name) + " is " + std::string(dtype_name(ref->dtype)) +
                        ", not an unquantized F32/F16/BF16 weight");
        LayerJob j;
        j.weight = ref;
        j.codes = t;
        j.scale = quant.find(layer + ".weight_scale");
        j.legacy = j.scale == nullptr;
        if (j.legacy) j.scale = quant.find(layer + ".scale_weight");
        if (!j.scale) throw Error(where + " is " + std::string(dtype_name(t->dtype)) + " but has no weight_scale or scale_weight");

        LayerComparison& c = j.result;
        c.name = t->name;
        c.rows = ref->shape[0];
        c.cols = ref->shape[1];
        c.scale_shape = format_shape(j.scale->shape);
        if (j.legacy) {
            c.format = fp8 ? "legacy scale_weight (fp8)" : "legacy scale_weight (int8)";
        } else if ((j.comfy_quant = quant.find(layer + ".comfy_quant"))) {
            c.format = info.format;
            j.fpmm = info.full_precision_matrix_mult;
        } else {
            c.format = "no comfy_quant";
        }
        if (!block_format.empty()) {
            j.block_scaled = true;
            j.spec = {block_kind, scale_block_cols({block_kind, 0}, c.cols)};
            j.global_scale = quant.find(layer + ".weight_scale_2");
            if (block_kind == QuantFormat::Nvfp4 && !j.global_scale) throw Error(where + " is nvfp4 but has no weight_scale_2");
        } else if (!j.legacy && info.rotated() && int8) {
            j.rotated = true;
            j.spec = {int4 ? QuantFormat::W4a4ConvRot : QuantFormat::Int8ConvRot, info.convrot_groupsize};
            const std::string problem = convrot_group_problem(info.convrot_groupsize);
            if (!problem.empty() || c.cols % info.convrot_groupsize != 0)
                throw Error(where + ": " + (problem.empty() ? "ConvRot group " + std::to_string(info.convrot_groupsize) +
                                                                  " does not divide " + std::to_string(c.cols) + " input columns"
                                                            : problem) + " (ComfyUI raises ValueError)");
            if (j.scale->elements() != static_cast<std::uint64_t>(c.rows) && j.scale->elements() != 1)
                throw Error(file_tensor(options.quantized, j.scale->name) + ": " + std::to_string(j.scale->elements()) +
                            " scales for " + std::to_string(c.rows) + " rows of a ConvRot weight");
            if (j.scale->elements() == 1) j.spec.format = QuantFormat::Int8ConvRot;  // a scalar scale: one value per row below
        } else {
            j.spec = spec_from_scale(file_tensor(options.quantized, j.scale->name), fp8, c.rows, c.cols, j.scale->shape, e5m2);
        }
        c.k = std::min<std::int64_t>(options.k, std::min(c.rows, c.cols));
        const TensorInfo* bias = original.find(layer + ".bias");
        const TensorInfo* bias_q = quant.find(layer + ".bias");
        if (bias && bias_q && bias->shape == bias_q->shape && bias->elements() == static_cast<std::uint64_t>(c.rows)) {
            j.bias = bias;
            j.bias_q = bias_q;
        }
        if (fp8 || e5m2) j.input_scale = quant.find(layer + ".input_scale");
        j.host_bytes = layer_host_bytes(j, options.samples);
        jobs.push_back(std::move(j));
    }
    return jobs;
}

// Pass 2 for one layer: dequantize, measure, judge; then drop the layer's pages from both mappings.
void measure_layer(LayerJob& j, const OpenFile& original, const OpenFile& quant, const CompareOptions& options,
                   bool has_marker, Backend& backend) {
    LayerComparison& c = j.result;
    QuantizedTensor q;
    if (j.block_scaled) {
        float global = 1.0f;
        if (j.global_scale) {
            const auto g = decode_floats(quant.data(*j.global_scale), j.global_scale->dtype);
            if (g.size() != 1) throw Error(file_tensor(options.quantized, j.global_scale->name) + " must hold one value");
            global = g[0];
        }
        q = unpack_block_scaled(j.spec.format, c.rows, c.cols, quant.data(*j.codes), quant.data(*j.scale), global);
        quant.release(j.codes);
    } else {
        q.spec = j.spec;
        q.rows = c.rows;
        q.cols = c.cols;
        const auto codes = quant.data(*j.codes);
        if (j.spec.format == QuantFormat::W4a4ConvRot)
            q.codes = unpack_int4(codes);
        else
            q.codes.assign(reinterpret_cast<const std::uint8_t*>(codes.data()), reinterpret_cast<const std::uint8_t*>(codes.data()) + codes.size());
        quant.release(j.codes);  // copied: its pages are not needed again
        q.scales = decode_floats(quant.data(*j.scale), j.scale->dtype);
        if (j.rotated && q.scales.size() == 1) q.scales.assign(static_cast<std::size_t>(c.rows), q.scales[0]);
    }

    TensorView w = weight_view(original.file, original.header, original.index.at(j.weight->name));
    // ConvRot: the original rotated like the codes (orthogonal: the same errors and singular values; the test
    // inputs are Gaussian either way).
    std::vector<float> rotated;
    if (j.rotated) {
        rotated = backend.rotate_groups(j.weight->name, w, j.spec.block_size);
        w = {reinterpret_cast<const std::byte*>(rotated.data()), DType::F32, c.rows, c.cols};
    }
    const LowRank basis = backend.top_k_svd(j.weight->name, w, {c.k, named_seed(options.seed, j.weight->name), kOversample, kPowerIterations,
                                                                        exact_svd_is_cheap(w.rows, w.cols)});
    std::vector<float> x(static_cast<std::size_t>(c.cols * options.samples));
    fill_normal(named_seed(options.seed ^ 0x5157u, j.weight->name), 1.0, x);
    std::vector<float> b, b_new;
    if (j.bias) {
        b = decode_floats(original.data(*j.bias), j.bias->dtype);
        b_new = decode_floats(quant.data(*j.bias_q), j.bias_q->dtype);
    }
    const QualityMetrics m = backend.measure(w, q, &basis, {x, options.samples, b, b_new});
    const double wn = m.weight_norm > 0 ? m.weight_norm : 1.0, yn = m.output_norm > 0 ? m.output_norm : 1.0;
    c.relative_error = m.error_norm / wn;
    c.projected_error = m.projected_error / wn;
    c.output_error = m.output_error / yn;

    bool saturates = false;
    if (j.input_scale && q.scales.size() == 1) {
        const auto v = decode_floats(quant.data(*j.input_scale), j.input_scale->dtype);
        saturates = v.size() == 1 && v[0] != 1.0f && v[0] == q.scales[0];
    }
    if (j.block_scaled)
        block_verdict(c, j.codes->dtype, j.scale->dtype, j.global_scale != nullptr);
    else if (j.rotated)
        convrot_verdict(c, j.spec, j.scale->shape);
    else
        comfy_verdict(c, j.legacy, has_marker, j.fpmm, static_cast<std::int64_t>(j.scale->elements()), j.scale->shape.size(), saturates);
    for (const TensorInfo* t : {j.weight, j.bias}) original.release(t);
    for (const TensorInfo* t : {j.scale, j.bias_q, j.input_scale, j.comfy_quant, j.global_scale}) quant.release(t);
}

void prefetch_layer(const LayerJob& j, const OpenFile& original, const OpenFile& quant) {
    original.prefetch(j.weight);
    quant.prefetch(j.codes);
}

}  // namespace

Comparison compare_files(const CompareOptions& options, Backend& backend) {
    const OpenFile original(options.original), quant(options.quantized);
    const bool has_marker = quant.find("scaled_fp8") != nullptr;
    Comparison out;
    std::vector<LayerJob> jobs = plan_layers(original, quant, options, out.unquantized);
    // Pass 2 in ORIGINAL's file order, so the disk reads forward. Read-ahead covers the next layers while their
    // bytes fit in the budget together with the current one's; a layer larger than the budget runs alone.
    std::vector<LayerJob*> order;
    for (auto& j : jobs) order.push_back(&j);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->weight->begin < b->weight->begin; });
    std::size_t ahead = 0;    // layers [i, ahead) have been prefetched ...
    std::uint64_t window = 0;  // ... and hold this many bytes
    for (std::size_t i = 0; i < order.size(); ++i) {
        while (ahead < order.size() && (ahead == i || window + order[ahead]->host_bytes <= options.memory_budget)) {
            prefetch_layer(*order[ahead], original, quant);
            window += order[ahead++]->host_bytes;
        }
        measure_layer(*order[i], original, quant, options, has_marker, backend);
        window -= order[i]->host_bytes;
    }
    for (auto& j : jobs) out.layers.push_back(std::move(j.result));
    return out;
}

std::string comparison_text(const Comparison& c, const CompareOptions& options) {
    std::string s;
    char line[1024];
    int name_w = 36, format_w = 22;  // columns as wide as their longest entry
    for (const auto& l : c.layers) {
        name_w = std::max(name_w, static_cast<int>(std::min<std::size_t>(l.name.size(), 200)));
        format_w = std::max(format_w, static_cast<int>(std::min<std::size_t>(l.format.size(), 200)));
    }
    std::snprintf(line, sizeof line, "%-*s %-*s %-12s %-12s %10s %12s %10s  %s\n", name_w, "layer", format_w, "format", "shape", "scale",
                  "rel err", ("proj k=" + std::to_string(options.k)).c_str(), "out err", "comfy");
    s += line;
    double rel = 0, proj = 0, outp = 0;
    std::size_t loads = 0;
    for (const auto& l : c.layers) {
        std::snprintf(line, sizeof line, "%-*s %-*s %-12s %-12s %9.4f%% %11.5f%% %9.4f%%  %s%s%s\n", name_w, l.name.c_str(), format_w, l.format.c_str(),
                      (std::to_string(l.rows) + "x" + std::to_string(l.cols)).c_str(), l.scale_shape.c_str(), 100 * l.relative_error,
                      100 * l.projected_error, 100 * l.output_error, l.comfy_loads ? "yes" : "no",
                      l.comfy_note.empty() ? "" : ": ", l.comfy_note.c_str());
        s += line;
        rel += l.relative_error;
        proj += l.projected_error;
        outp += l.output_error;
        loads += l.comfy_loads;
    }
    const double n = c.layers.empty() ? 1.0 : static_cast<double>(c.layers.size());
    std::snprintf(line, sizeof line, "\n%zu quantized layers (%zu weights not quantized): mean rel err %.4f%%, projected %.5f%%, output %.4f%%; "
                  "%zu of %zu load in mainline ComfyUI\n", c.layers.size(), c.unquantized, 100 * rel / n, 100 * proj / n, 100 * outp / n,
                  loads, c.layers.size());
    s += line;
    std::snprintf(line, sizeof line, "projected error: top-%d subspaces of the exact SVD (LAPACK) for weights with a side <= %d, else of a "
                  "randomized SVD (oversampling %d, %d power iterations; overlap with the exact SVD >= 0.9999 on weights with a "
                  "decaying spectrum)\n", static_cast<int>(options.k), static_cast<int>(kExactSvdSide), kOversample, kPowerIterations);
    s += line;
    return s;
}

std::string comparison_json(const Comparison& c, const CompareOptions& options) {
    std::string s = "{\n  \"original\": " + json_quote(options.original) + ",\n  \"quantized\": " + json_quote(options.quantized) +
                    ",\n  \"k\": " + std::to_string(options.k) + ",\n  \"samples\": " + std::to_string(options.samples) +
                    ",\n  \"seed\": " + std::to_string(options.seed) +
                    ",\n  \"svd\": \"exact for a side <= " + std::to_string(kExactSvdSide) + ", else randomized, oversampling " +
                    std::to_string(kOversample) + ", " + std::to_string(kPowerIterations) + " power iterations\"" + ",\n  \"unquantized\": " + std::to_string(c.unquantized) +
                    ",\n  \"layers\": [\n";
    for (std::size_t i = 0; i < c.layers.size(); ++i) {
        const auto& l = c.layers[i];
        s += "    {\"name\": " + json_quote(l.name) + ", \"format\": " + json_quote(l.format) + ", \"shape\": [" +
             std::to_string(l.rows) + ", " + std::to_string(l.cols) + "], \"scale_shape\": " + l.scale_shape + ", \"k\": " +
             std::to_string(l.k) + ", \"relative_error\": " + json_number(l.relative_error) + ", \"projected_error\": " +
             json_number(l.projected_error) + ", \"output_error\": " + json_number(l.output_error) + ", \"comfy_loads\": " +
             (l.comfy_loads ? "true" : "false") + ", \"comfy_note\": " + json_quote(l.comfy_note) + "}" +
             (i + 1 < c.layers.size() ? ",\n" : "\n");
    }
    return s + "  ]\n}\n";
}

}  // namespace quantflow
