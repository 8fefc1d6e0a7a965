// stages/reader.hpp: turns the plan into jobs over the memory-mapped input, in input file order.
//
// A quantized layer is one job; a copied tensor is split into chunks of at most `chunk_bytes`, so the
// byte budget also bounds pass-through data. Views point into the mapping; release_job() drops the
// job's input pages once it is written, which keeps resident memory flat however large the model is.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/quant_types.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/format/safetensors_header.hpp"
#include "stages/messages.hpp"

namespace quantflow {

std::vector<TensorJob> make_jobs(const std::vector<LayerPlan>& layers, const SafetensorsHeader& input,
                                 std::uint64_t chunk_bytes);

// The raw bytes of input tensor `index`.
std::span<const std::byte> tensor_data(const MappedFile& file, const SafetensorsHeader& input, std::size_t index);
// Input tensor `index` as a 2-D weight view (its shape must be 2-D).
TensorView weight_view(const MappedFile& file, const SafetensorsHeader& input, std::size_t index);

// Starts read-ahead of the job's input (MADV_WILLNEED) so the disk works while earlier jobs compute.
void prefetch_job(const TensorJob& job, const MappedFile& file, const SafetensorsHeader& input);
// Drops the resident pages of the job's input.
void release_job(const TensorJob& job, const MappedFile& file, const SafetensorsHeader& input);

}  // namespace quantflow
