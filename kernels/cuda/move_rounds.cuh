// kernels/cuda/move_rounds.cuh: the rounding-aware finish's rounds on the GPU (MoveRounds of
// kernels/rounding_work.hpp), bit-identical to the host's (kernels/move_rounds_host.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "kernels/cuda/handles.cuh"
#include "kernels/rounding_work.hpp"

namespace quantflow::cuda {

// Rounds over `pool` (copied to the device: the spans may die after this returns) on stream `s`, which must
// outlive them. They hold about 84 bytes per candidate (the pool is at most one per 128 elements, about 0.7 bytes
// per element), less than the candidate pass before them, which has freed its buffers by then: the layer's
// device memory (CudaBackend::layer_memory) counts the pass.
std::unique_ptr<MoveRounds> make_device_rounds(int device, const RoundsPool& pool, const Stream& s);

}  // namespace quantflow::cuda
