// kernels/cuda/rounding_work.cuh: the CUDA backend's learned-rounding primitives (kernels/rounding_work.hpp),
// over device copies of the weight, the codes (and the round-to-nearest ones), the scales and the basis.
//
// Every full-size pass runs on the work's own stream (jobs in flight overlap on the GPU); the k x k results
// come back to the host and are reduced there in a fixed order, so the results are deterministic and, where
// the products match, bit-identical to the CPU work's (kernels/cpu/rounding_cpu.cpp, the reference).
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/cuda/staging.cuh"
#include "kernels/quant_types.hpp"
#include "kernels/rounding_work.hpp"

namespace quantflow::cuda {

// A weight on the device in its file dtype (the kernels decode it on the fly): a held copy (Backend::hold)
// or one uploaded for this call alone (`owned`).
struct DeviceWeightRef {
    DeviceBuffer<unsigned char> owned;
    DeviceWeight view;
};

// The scale grid of a format on a [rows, cols] weight.
ScaleGrid grid_of(const QuantSpec& spec, std::int64_t rows, std::int64_t cols);

// q's scales as the kernels read them, one per cell: global * block scale (nvfp4), formed in float as the CPU's
// decoders form it; the scales themselves for every other format (global scale 1).
inline std::vector<float> cell_scales(const QuantizedTensor& q) {
    std::vector<float> s(q.scales);
    if (q.global_scale != 1.0f)
        for (float& x : s) x = q.global_scale * x;
    return s;
}

// How the format's code bytes decode.
inline CodeKind code_kind(QuantFormat format) {
    if (format == QuantFormat::Fp8E5m2Tensor) return CodeKind::E5m2;
    if (format == QuantFormat::Nvfp4) return CodeKind::E2m1;
    return is_fp8(format) || format == QuantFormat::Mxfp8 ? CodeKind::E4m3 : CodeKind::Int8;
}

// The formats make_rounding_work takes: the float grids (e4m3 with any scale layout, mxfp8, e5m2, nvfp4's E2M1
// under its two-level scales) and int8 (ConvRot's too: the work sees the rotated weight). Int4 runs on the host.
inline bool gpu_rounding_grid(QuantFormat format) { return code_kind(format) != CodeKind::Int8 || int_code_max(format) == 127; }

// The work of one layer on `device` (the caller has made it current): q holds the round-to-nearest codes
// and scales and must outlive the work; load_weight(s) gives the weight on the device, copied on stream s.
// Copies of codes go through `ring`. Throws Error when device memory runs out.
std::unique_ptr<RoundingWork> make_rounding_work(int device, std::string_view name, const LowRank& basis, QuantizedTensor& q,
                                                 StagingRing& ring, const std::function<DeviceWeightRef(const Stream&)>& load_weight);

}  // namespace quantflow::cuda
