// kernels/cuda/svd.cuh: the randomized top-k SVD's panels (kernels/sketch_svd.hpp) on the GPU, with kernels of
// our own: the products with the weight read in its file dtype, the Gram matrices summed in double, the small
// right products. Every sum runs in a fixed order (partial sums per slice of rows, added in slice order), so the
// results do not depend on scheduling.
//
// This replaced cuSOLVER's randomized SVD (cusolverDnXgesvdr), which loaded its kernels on first use and held each
// layer of the first wave 0.16-0.18 s on an H200 while the writer waited, and then cuBLASLt float GEMMs with host
// QR, whose first GEMM costs 137 ms (70 ms for the first double one) and whose 5120 x 32 QR takes 3.4 ms.
#pragma once

#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/quantize.cuh"
#include "kernels/sketch_svd.hpp"

namespace quantflow::cuda {

class DevicePanels final : public SketchPanels {
public:
    // w: the weight on the device, read on `stream` (both outlive this); l: the sketch's width.
    DevicePanels(const DeviceWeight& w, std::int64_t l, const Stream& stream);
    void set(SketchPanel p, const float* host) override;
    void get(SketchPanel p, float* host) override;
    void multiply(SketchPanel to) override;
    void gram(SketchPanel p, double* g) override;
    void right_multiply(SketchPanel p, const float* r) override;

private:
    DeviceBuffer<float>& panel(SketchPanel p) { return p == SketchPanel::Left ? y_ : z_; }
    std::int64_t length(SketchPanel p) const { return p == SketchPanel::Left ? w_.rows : w_.cols; }

    DeviceWeight w_;
    std::int64_t l_;
    const Stream& stream_;
    DeviceBuffer<float> y_, z_, spare_, partial_, small_;
    DeviceBuffer<double> gram_partial_, gram_;
};

}  // namespace quantflow::cuda
