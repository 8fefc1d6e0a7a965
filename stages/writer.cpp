#include "stages/writer.hpp"

#include "kernels/error.hpp"
#include "stages/format/block_scaled.hpp"
#include "stages/format/int4_pack.hpp"

namespace quantflow {
namespace {

void write_tensor(const OutputLayout& layout, std::size_t index, const void* data, std::uint64_t bytes, OutputFile& out) {
    const PlannedTensor& t = layout.tensors[index];
    QF_EXPECT(bytes == t.bytes, "internal: tensor '" + t.spec.name + "' produced " + std::to_string(bytes) +
                                    " bytes, the plan has " + std::to_string(t.bytes));
    out.write_at(layout.file_offset(index), data, static_cast<std::size_t>(bytes));
    out.start_writeback(layout.file_offset(index), bytes);
}

}  // namespace

void write_header_and_constants(const OutputLayout& layout, OutputFile& out) {
    out.write_at(0, layout.header.data(), layout.header.size());
    for (std::size_t i = 0; i < layout.tensors.size(); ++i)
        if (!layout.tensors[i].spec.constant.empty())
            write_tensor(layout, i, layout.tensors[i].spec.constant.data(), layout.tensors[i].bytes, out);
}

void write_job(const TensorJob& job, const OutputLayout& layout, const SafetensorsHeader& input, const MappedFile& file,
               OutputFile& out) {
    const LayerPlan& lp = *job.plan;
    if (lp.action == Action::Copy) {
        const TensorInfo& t = input.tensors[lp.input];
        const std::uint64_t length = job.chunk_end - job.chunk_begin;
        if (length == 0) return;
        const std::uint64_t offset = layout.file_offset(lp.out_tensor) + job.chunk_begin;
        out.write_at(offset, file.view(input.data_start + t.begin + job.chunk_begin, length), static_cast<std::size_t>(length));
        out.start_writeback(offset, length);
        return;
    }
    const QuantizedTensor& q = job.quant;
    if (is_block_scaled(q.spec.format)) {
        const auto weight = pack_block_weight(q), scales = pack_block_scales(q);
        write_tensor(layout, lp.out_tensor, weight.data(), weight.size(), out);
        write_tensor(layout, lp.out_scale, scales.data(), scales.size(), out);
        if (lp.out_scale_2 != kNoTensor) write_tensor(layout, lp.out_scale_2, &q.global_scale, sizeof(float), out);
    } else if (q.spec.format == QuantFormat::W4a4ConvRot) {
        const auto weight = pack_int4(q.codes);
        write_tensor(layout, lp.out_tensor, weight.data(), weight.size(), out);
        write_tensor(layout, lp.out_scale, q.scales.data(), q.scales.size() * sizeof(float), out);
    } else {
        write_tensor(layout, lp.out_tensor, q.codes.data(), q.codes.size(), out);
        write_tensor(layout, lp.out_scale, q.scales.data(), q.scales.size() * sizeof(float), out);
    }
    if (lp.out_input_scale != kNoTensor) write_tensor(layout, lp.out_input_scale, q.scales.data(), sizeof(float), out);
    if (lp.out_bias != kNoTensor) write_tensor(layout, lp.out_bias, job.bias.data(), job.bias.size(), out);
}

}  // namespace quantflow
