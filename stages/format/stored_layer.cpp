#include "stages/format/stored_layer.hpp"

#include <simdjson.h>

#include <cstring>
#include <map>

#include "kernels/convrot.hpp"
#include "kernels/dtype.hpp"
#include "kernels/error.hpp"
#include "kernels/units.hpp"
#include "stages/format/block_scaled.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/int4_pack.hpp"

namespace quantflow {
namespace {

std::span<const std::byte> bytes_of(const SafetensorsHeader& header, const MappedFile& file, std::size_t index) {
    const TensorInfo& t = header.tensors[index];
    return {file.view(header.data_start + t.begin, t.bytes()), static_cast<std::size_t>(t.bytes())};
}

std::size_t index_of(const SafetensorsHeader& header, const std::string& name) {
    const auto i = header.find(name);
    return i < 0 ? kNoStoredTensor : static_cast<std::size_t>(i);
}

// _quantization_metadata's per-layer objects as JSON text (ComfyUI lets them override the comfy_quant tensors).
std::map<std::string, std::string> header_objects(const SafetensorsHeader& header) {
    std::map<std::string, std::string> out;
    const std::string* text = header.metadata_value(kQuantMetadataKey);
    if (!text) return out;
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    simdjson::dom::object layers;
    if (parser.parse(*text).get(doc) != simdjson::SUCCESS || doc["layers"].get_object().get(layers) != simdjson::SUCCESS)
        throw Error(header.path + ": __metadata__ _quantization_metadata is not JSON with a \"layers\" object");
    for (const auto [name, obj] : layers) out.emplace(std::string(name), simdjson::to_string(obj));
    return out;
}

// comfy_quant's "orig_shape" [N, K], if any.
std::vector<std::int64_t> orig_shape(std::span<const std::byte> json) {
    simdjson::dom::parser parser;
    const simdjson::padded_string text(reinterpret_cast<const char*>(json.data()), json.size());
    simdjson::dom::element doc;
    simdjson::dom::array shape;
    std::vector<std::int64_t> out;
    if (parser.parse(text).get(doc) != simdjson::SUCCESS || doc["orig_shape"].get_array().get(shape) != simdjson::SUCCESS) return out;
    for (const auto d : shape) {
        std::int64_t v = 0;
        if (d.get_int64().get(v) != simdjson::SUCCESS) return {};
        out.push_back(v);
    }
    return out;
}

bool stored_dtype(DType d) { return d == DType::F8_E4M3 || d == DType::F8_E5M2 || d == DType::I8 || d == DType::U8; }

void describe(StoredLayer& s, const SafetensorsHeader& header, const TensorInfo& t, const std::string& json_text,
              std::span<const std::byte> json) {
    const std::string where = header.path + ": tensor '" + t.name + "'";
    const TensorInfo& scale = header.tensors[s.scale];
    const bool fp8 = t.dtype == DType::F8_E4M3, e5m2 = t.dtype == DType::F8_E5M2, int8 = t.dtype == DType::I8;
    s.rows = t.shape[0];
    s.cols = t.shape[1];
    if (json_text.empty()) {  // legacy scale_weight (or a comfy layer without its comfy_quant)
        if (!fp8 && !int8) {
            s.problem = "a " + std::string(dtype_name(t.dtype)) + " weight without comfy_quant";
            return;
        }
        s.format = fp8 ? "legacy fp8" : "legacy int8";
        s.spec = spec_from_scale(where, fp8, s.rows, s.cols, scale.shape);
        return;
    }
    const ComfyQuantInfo info = parse_comfy_quant(where, json);
    s.format = info.format;
    if (info.format == "mxfp8" || info.format == "nvfp4") {
        const QuantFormat f = info.format == "nvfp4" ? QuantFormat::Nvfp4 : QuantFormat::Mxfp8;
        const auto shape = orig_shape(json);
        if (shape.size() != 2 || block_weight_shape(f, shape[0], shape[1]) != t.shape) {
            s.problem = info.format + " without an \"orig_shape\" matching its stored " + format_shape(t.shape) +
                        ": the layer's real shape is unknown";
            return;
        }
        s.spec = {f, f == QuantFormat::Nvfp4 ? 16 : 32};
        s.rows = shape[0];
        s.cols = shape[1];
        s.global_scale = index_of(header, t.name.substr(0, t.name.size() - 7) + ".weight_scale_2");
        if (f == QuantFormat::Nvfp4 && s.global_scale == kNoStoredTensor) throw Error(where + " is nvfp4 but has no weight_scale_2");
        return;
    }
    if (info.rotated()) {
        const bool int4 = info.format == "convrot_w4a4";
        if (!int8) throw Error(where + " is " + info.format + " but stored as " + std::string(dtype_name(t.dtype)) + ", not I8");
        if (int4) s.cols = 2 * t.shape[1];
        const std::string problem = convrot_group_problem(info.convrot_groupsize);
        if (!problem.empty() || s.cols % info.convrot_groupsize != 0)
            throw Error(where + ": " + (problem.empty() ? "ConvRot group " + std::to_string(info.convrot_groupsize) + " does not divide " +
                                                              std::to_string(s.cols) + " input columns" : problem));
        if (scale.elements() != static_cast<std::uint64_t>(s.rows) && scale.elements() != 1)
            throw Error(where + ": " + std::to_string(scale.elements()) + " scales for " + std::to_string(s.rows) + " rows of a ConvRot weight");
        s.spec = {int4 ? QuantFormat::W4a4ConvRot : QuantFormat::Int8ConvRot, info.convrot_groupsize};
        return;
    }
    if (!fp8 && !int8 && !e5m2) {
        s.problem = "format " + info.format + " stored as " + std::string(dtype_name(t.dtype));
        return;
    }
    s.spec = spec_from_scale(where, fp8, s.rows, s.cols, scale.shape, e5m2);
}

}  // namespace

QuantSpec spec_from_scale(const std::string& where, bool fp8, std::int64_t rows, std::int64_t cols, std::vector<std::int64_t> dims,
                          bool e5m2) {
    std::int64_t numel = 1;
    for (const auto d : dims) numel *= d;
    if (e5m2 && numel == 1) return {QuantFormat::Fp8E5m2Tensor, 64};
    if (e5m2) throw Error(where + ": an F8_E5M2 weight needs a single-value scale (float8_e5m2 is tensor-wise), not " + std::to_string(numel));
    if (dims.size() == 3 && dims[2] == 1) dims.pop_back();
    if (numel == 1) return {fp8 ? QuantFormat::Fp8Tensor : QuantFormat::Int8Tensor, 64};
    if ((dims.size() == 1 && dims[0] == rows) || (dims.size() == 2 && dims[0] == rows && dims[1] == 1))
        return {fp8 ? QuantFormat::Fp8Row : QuantFormat::Int8Row, 64};
    if (dims.size() == 2 && dims[0] == rows && dims[1] > 0 && cols % dims[1] == 0)
        return {fp8 ? QuantFormat::Fp8Block : QuantFormat::Int8Lode, cols / dims[1]};
    if (dims.size() == 2 && dims[0] > 0 && dims[1] > 0 && rows % dims[0] == 0 && cols % dims[1] == 0 &&
        rows / dims[0] == cols / dims[1])
        return {fp8 ? QuantFormat::Fp8Block2d : QuantFormat::Int8Block, rows / dims[0]};
    throw Error(where + ": scale of " + std::to_string(numel) + " values does not fit weight [" + std::to_string(rows) + ", " +
                std::to_string(cols) + "] as a tensor, row, group or tile grid");
}

std::vector<StoredLayer> find_stored_layers(const SafetensorsHeader& header) {
    std::vector<StoredLayer> out;
    std::optional<MappedFile> file;  // mapped at the first comfy_quant tensor: most inputs hold no stored layer
    std::map<std::string, std::string> from_header;
    bool header_read = false;
    for (std::size_t i = 0; i < header.tensors.size(); ++i) {
        const TensorInfo& t = header.tensors[i];
        if (!t.name.ends_with(".weight") || t.shape.size() != 2 || !stored_dtype(t.dtype)) continue;
        const std::string layer = t.name.substr(0, t.name.size() - std::strlen(".weight"));
        StoredLayer s;
        s.weight = i;
        s.scale = index_of(header, layer + ".weight_scale");
        if (s.scale == kNoStoredTensor) s.scale = index_of(header, layer + ".scale_weight");
        if (s.scale == kNoStoredTensor) continue;  // an integer tensor of its own (an index table, say): not a layer
        s.comfy_quant = index_of(header, layer + ".comfy_quant");
        s.input_scale = index_of(header, layer + ".input_scale");
        if (s.input_scale == kNoStoredTensor) s.input_scale = index_of(header, layer + ".scale_input");
        if (!header_read) from_header = header_objects(header), header_read = true;
        const auto h = from_header.find(layer);
        if (h != from_header.end()) {
            const std::span<const std::byte> json(reinterpret_cast<const std::byte*>(h->second.data()), h->second.size());
            describe(s, header, t, h->second, json);
        } else if (s.comfy_quant != kNoStoredTensor) {
            if (!file) file.emplace(header.path);
            const auto json = bytes_of(header, *file, s.comfy_quant);
            describe(s, header, t, std::string(reinterpret_cast<const char*>(json.data()), json.size()), json);
        } else {
            describe(s, header, t, {}, {});
        }
        out.push_back(std::move(s));
    }
    return out;
}

QuantizedTensor read_stored_layer(const SafetensorsHeader& header, const MappedFile& file, const StoredLayer& s) {
    const std::string where = header.path + ": tensor '" + header.tensors[s.weight].name + "'";
    const auto codes = bytes_of(header, file, s.weight);
    const auto scales = bytes_of(header, file, s.scale);
    if (is_block_scaled(s.spec.format)) {
        float global = 1.0f;
        if (s.global_scale != kNoStoredTensor) {
            const auto g = decode_floats(bytes_of(header, file, s.global_scale), header.tensors[s.global_scale].dtype);
            if (g.size() != 1) throw Error(where + ": weight_scale_2 must hold one value, not " + std::to_string(g.size()));
            global = g[0];
        }
        return unpack_block_scaled(s.spec.format, s.rows, s.cols, codes, scales, global);
    }
    QuantizedTensor q;
    q.spec = s.spec;
    q.rows = s.rows;
    q.cols = s.cols;
    if (s.spec.format == QuantFormat::W4a4ConvRot)
        q.codes = unpack_int4(codes);
    else
        q.codes.assign(reinterpret_cast<const std::uint8_t*>(codes.data()), reinterpret_cast<const std::uint8_t*>(codes.data()) + codes.size());
    q.scales = decode_floats(scales, header.tensors[s.scale].dtype);
    const auto want = static_cast<std::size_t>(scale_rows(s.spec, s.rows) * scale_cols(s.spec, s.cols));
    if (q.scales.size() == 1 && want > 1) q.scales.assign(want, q.scales[0]);  // a scalar scale of a per-row ConvRot layer
    if (q.scales.size() != want || q.codes.size() != static_cast<std::size_t>(s.rows * s.cols))
        throw Error(where + ": " + std::to_string(q.codes.size()) + " codes and " + std::to_string(q.scales.size()) +
                    " scales do not make a " + std::string(format_label(s.spec.format)) + " layer [" + std::to_string(s.rows) + ", " +
                    std::to_string(s.cols) + "]");
    return q;
}

}  // namespace quantflow
