#include "stages/format/safetensors_layout.hpp"

#include <algorithm>

#include "kernels/error.hpp"
#include "stages/format/json_text.hpp"

namespace quantflow {

std::uint64_t tensor_bytes(DType dtype, const std::vector<std::int64_t>& shape) {
    std::uint64_t elements = 1;
    for (const auto d : shape) elements *= static_cast<std::uint64_t>(d);
    return elements * static_cast<std::uint64_t>(dtype_bits(dtype)) / 8;
}

std::size_t OutputLayout::index_of(std::string_view name) const {
    const auto it = by_name.find(std::string(name));
    QF_EXPECT(it != by_name.end(), "internal: output tensor '" + std::string(name) + "' is not in the plan");
    return it->second;
}

OutputLayout plan_output_layout(std::vector<OutputTensorSpec> tensors,
                                const std::vector<std::pair<std::string, std::string>>& metadata) {
    std::sort(tensors.begin(), tensors.end(), [](const OutputTensorSpec& a, const OutputTensorSpec& b) {
        if (a.dtype != b.dtype) return a.dtype > b.dtype;
        return a.name < b.name;
    });
    OutputLayout layout;
    std::string json = "{";
    if (!metadata.empty()) {
        json += "\"__metadata__\":{";
        for (std::size_t i = 0; i < metadata.size(); ++i)
            json += (i ? "," : "") + json_quote(metadata[i].first) + ":" + json_quote(metadata[i].second);
        json += "}";
    }
    std::uint64_t offset = 0;
    for (auto& spec : tensors) {
        const std::uint64_t bytes = tensor_bytes(spec.dtype, spec.shape);
        QF_EXPECT(spec.constant.empty() || spec.constant.size() == bytes,
                  "internal: constant tensor '" + spec.name + "' has " + std::to_string(spec.constant.size()) +
                      " bytes, its shape needs " + std::to_string(bytes));
        const auto [it, inserted] = layout.by_name.emplace(spec.name, layout.tensors.size());
        QF_EXPECT(inserted, "output would hold tensor '" + spec.name +
                                "' twice (an input tensor already has the name of a generated one)");
        if (json.size() > 1) json += ",";
        json += json_quote(spec.name) + ":{\"dtype\":\"" + std::string(dtype_name(spec.dtype)) + "\",\"shape\":[";
        for (std::size_t i = 0; i < spec.shape.size(); ++i) json += (i ? "," : "") + std::to_string(spec.shape[i]);
        json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
        layout.tensors.push_back({std::move(spec), offset, bytes});
        offset += bytes;
    }
    json += "}";
    json.append((8 - json.size() % 8) % 8, ' ');
    QF_EXPECT(json.size() <= 100'000'000, "output header would be " + std::to_string(json.size()) +
                                              " bytes, above the 100000000-byte safetensors limit");
    layout.header.resize(8);
    for (int i = 0; i < 8; ++i) layout.header[static_cast<std::size_t>(i)] = static_cast<char>((json.size() >> (8 * i)) & 0xFF);
    layout.header += json;
    layout.data_start = layout.header.size();
    layout.total_size = layout.data_start + offset;
    return layout;
}

}  // namespace quantflow
