#include "stages/reader.hpp"

#include <algorithm>

namespace quantflow {
namespace {

// The input byte range a job reads: the chunk of a copy, or the weight (and bias) of a layer.
template <typename Fn>
void for_each_input_range(const TensorJob& job, const SafetensorsHeader& input, Fn&& fn) {
    const LayerPlan& lp = *job.plan;
    const TensorInfo& t = input.tensors[lp.input];
    if (lp.action == Action::Copy) {
        fn(input.data_start + t.begin + job.chunk_begin, job.chunk_end - job.chunk_begin);
        return;
    }
    fn(input.data_start + t.begin, t.bytes());
    if (lp.bias_input != kNoTensor) {
        const TensorInfo& b = input.tensors[lp.bias_input];
        fn(input.data_start + b.begin, b.bytes());
    }
}

}  // namespace

std::vector<TensorJob> make_jobs(const std::vector<LayerPlan>& layers, const SafetensorsHeader& input,
                                 std::uint64_t chunk_bytes) {
    chunk_bytes = std::max<std::uint64_t>(chunk_bytes, 1 << 20);
    std::vector<TensorJob> jobs;
    for (const auto& lp : layers) {
        const TensorInfo& t = input.tensors[lp.input];
        if (lp.action == Action::Copy) {
            // Zero-byte tensors still need a (no-op) job so every output slot is accounted for.
            std::uint64_t begin = 0;
            do {
                TensorJob job;
                job.plan = &lp;
                job.chunk_begin = begin;
                job.chunk_end = std::min(t.bytes(), begin + chunk_bytes);
                job.budget_bytes = job.chunk_end - job.chunk_begin;
                jobs.push_back(std::move(job));
                begin += chunk_bytes;
            } while (begin < t.bytes());
        } else if (lp.action == Action::Quantize) {
            TensorJob job;
            job.plan = &lp;
            const auto elements = static_cast<std::uint64_t>(t.shape[0] * t.shape[1]);
            // Input pages + one code byte per element + f32 scales (at most one per element/bs) + bias twice.
            std::uint64_t bias = lp.bias_input != kNoTensor ? 2 * input.tensors[lp.bias_input].bytes() : 0;
            job.budget_bytes = t.bytes() + elements + elements / std::max<std::int64_t>(lp.spec.block_size, 1) * 4 + bias +
                               lp.work_bytes;
            job.device_bytes = lp.device_bytes;
            jobs.push_back(std::move(job));
        }
    }
    return jobs;
}

std::span<const std::byte> tensor_data(const MappedFile& file, const SafetensorsHeader& input, std::size_t index) {
    const TensorInfo& t = input.tensors[index];
    return {file.view(input.data_start + t.begin, t.bytes()), static_cast<std::size_t>(t.bytes())};
}

TensorView weight_view(const MappedFile& file, const SafetensorsHeader& input, std::size_t index) {
    const TensorInfo& t = input.tensors[index];
    return {tensor_data(file, input, index).data(), t.dtype, t.shape.at(0), t.shape.at(1)};
}

void prefetch_job(const TensorJob& job, const MappedFile& file, const SafetensorsHeader& input) {
    for_each_input_range(job, input, [&](std::uint64_t offset, std::uint64_t length) { file.prefetch(offset, length); });
}

void release_job(const TensorJob& job, const MappedFile& file, const SafetensorsHeader& input) {
    for_each_input_range(job, input, [&](std::uint64_t offset, std::uint64_t length) { file.release(offset, length); });
}

}  // namespace quantflow
