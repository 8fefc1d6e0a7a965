#include "pipeline/decode.hpp"

#include <cstring>

#include "kernels/error.hpp"
#include "kernels/quant_types.hpp"
#include "kernels/convrot.hpp"
#include "stages/format/block_scaled.hpp"
#include "stages/format/comfy_quant.hpp"
#include "stages/format/int4_pack.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/output_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/format/safetensors_layout.hpp"
#include "stages/reader.hpp"

namespace quantflow {
namespace {

struct Layer {
    std::size_t weight = 0;
    QuantizedTensor q;
};

float one_value(const std::string& where, std::span<const std::byte> bytes, DType dtype) {
    const auto v = decode_floats(bytes, dtype);
    QF_EXPECT(v.size() == 1, where + " must hold one value, not " + std::to_string(v.size()));
    return v[0];
}

}  // namespace

std::size_t decode_file(const std::string& quantized, const std::string& output, bool overwrite) {
    const SafetensorsHeader header = read_safetensors_header(quantized);
    const MappedFile file(quantized);
    const auto data = [&](std::int64_t index) { return tensor_data(file, header, static_cast<std::size_t>(index)); };
    std::vector<Layer> layers;
    for (std::size_t i = 0; i < header.tensors.size(); ++i) {
        const TensorInfo& t = header.tensors[i];
        if (!t.name.ends_with(".weight") || t.shape.size() != 2) continue;
        const std::string layer = t.name.substr(0, t.name.size() - std::strlen(".weight"));
        const auto cq = header.find(layer + ".comfy_quant");
        const auto sc = header.find(layer + ".weight_scale");
        if (cq < 0 || sc < 0) continue;
        const std::string where = quantized + ": tensor '" + layer + ".weight_scale";
        const ComfyQuantInfo info = parse_comfy_quant(quantized + ": tensor '" + layer + ".comfy_quant'", data(cq));
        const std::string& format = info.format;
        const TensorInfo& scale = header.tensors[static_cast<std::size_t>(sc)];
        Layer l{i, {}};
        if (format == "mxfp8" || format == "nvfp4") {
            const QuantFormat f = format == "mxfp8" ? QuantFormat::Mxfp8 : QuantFormat::Nvfp4;
            const std::int64_t rows = t.shape[0], cols = f == QuantFormat::Nvfp4 ? 2 * t.shape[1] : t.shape[1];
            float global = 1.0f;
            if (f == QuantFormat::Nvfp4) {
                const auto g = header.find(layer + ".weight_scale_2");
                QF_EXPECT(g >= 0, quantized + ": nvfp4 layer '" + layer + "' has no weight_scale_2");
                global = one_value(where + "_2'", data(g), header.tensors[static_cast<std::size_t>(g)].dtype);
            }
            l.q = unpack_block_scaled(f, rows, cols, data(static_cast<std::int64_t>(i)), data(sc), global);
        } else if ((format == "float8_e4m3fn" && t.dtype == DType::F8_E4M3) || (format == "float8_e5m2" && t.dtype == DType::F8_E5M2)) {
            l.q.spec = {format == "float8_e5m2" ? QuantFormat::Fp8E5m2Tensor : QuantFormat::Fp8Tensor, 64};
            l.q.rows = t.shape[0];
            l.q.cols = t.shape[1];
            const auto codes = data(static_cast<std::int64_t>(i));
            l.q.codes.assign(reinterpret_cast<const std::uint8_t*>(codes.data()), reinterpret_cast<const std::uint8_t*>(codes.data()) + codes.size());
            l.q.scales = {one_value(where + "'", data(sc), scale.dtype)};
        } else if (info.rotated() && t.dtype == DType::I8) {
            const bool int4 = format == "convrot_w4a4";
            const std::string problem = convrot_group_problem(info.convrot_groupsize);
            const std::int64_t cols = int4 ? 2 * t.shape[1] : t.shape[1];
            QF_EXPECT(problem.empty() && cols % info.convrot_groupsize == 0,
                      quantized + ": layer '" + layer + "': " +
                          (problem.empty() ? "ConvRot group " + std::to_string(info.convrot_groupsize) + " does not divide " + std::to_string(cols) + " columns" : problem));
            l.q.spec = {int4 ? QuantFormat::W4a4ConvRot : QuantFormat::Int8ConvRot, info.convrot_groupsize};
            l.q.rows = t.shape[0];
            l.q.cols = cols;
            const auto codes = data(static_cast<std::int64_t>(i));
            if (int4) l.q.codes = unpack_int4(codes);
            else l.q.codes.assign(reinterpret_cast<const std::uint8_t*>(codes.data()), reinterpret_cast<const std::uint8_t*>(codes.data()) + codes.size());
            l.q.scales = decode_floats(data(sc), scale.dtype);
            QF_EXPECT(l.q.scales.size() == 1 || l.q.scales.size() == static_cast<std::size_t>(l.q.rows),
                      where + "' holds " + std::to_string(l.q.scales.size()) + " values for " + std::to_string(l.q.rows) + " rows");
            if (l.q.scales.size() == 1) l.q.scales.assign(static_cast<std::size_t>(l.q.rows), l.q.scales[0]);
        } else {
            continue;
        }
        layers.push_back(std::move(l));
    }
    QF_EXPECT(!layers.empty(), quantized + " has no float8 tensor-wise, mxfp8, nvfp4 or ConvRot comfy_quant layer to decode");
    std::vector<OutputTensorSpec> specs;
    for (const auto& l : layers) specs.push_back({header.tensors[l.weight].name, DType::F32, {l.q.rows, l.q.cols}, {}});
    const OutputLayout layout = plan_output_layout(std::move(specs), {{"quantflow_decoded_from", quantized}});
    OutputFile out(output, layout.total_size, overwrite);
    out.write_at(0, layout.header.data(), layout.header.size());
    for (const auto& l : layers) {
        const std::vector<float> values = dequantize(l.q);
        const std::size_t index = layout.index_of(header.tensors[l.weight].name);
        out.write_at(layout.file_offset(index), values.data(), values.size() * sizeof(float));
    }
    out.commit();
    return layers.size();
}

}  // namespace quantflow
