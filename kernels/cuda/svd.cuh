// kernels/cuda/svd.cuh: the products of the randomized top-k SVD (kernels/sketch_svd.hpp) on the GPU, as
// cuBLASLt float32 GEMMs with the decoded weight; the sketch's QR factorisations and small SVD run on the host.
//
// This replaced cuSOLVER's randomized SVD (cusolverDnXgesvdr): it loaded its kernels on first use, which held each
// layer of the first wave 0.16-0.18 s on an H200 while the writer waited (with CUDA_MODULE_LOADING=EAGER, 2.6 s).
// The GEMMs are one or two kernels, and both backends now run the same algorithm from the same sketch.
#pragma once

#include "kernels/cuda/handles.cuh"
#include "kernels/cuda/skinny.cuh"
#include "kernels/sketch_svd.hpp"

namespace quantflow::cuda {

class DeviceProducts final : public SketchProducts {
public:
    // w_f32: the weight [rows, cols] as row-major float32 on the device, read on `stream` (both outlive this).
    DeviceProducts(const LtHandle& lt, const Stream& stream, const float* w_f32, std::int64_t rows, std::int64_t cols);
    void times(const float* x, std::int64_t l, float* y) override;
    void times_transposed(const float* y, std::int64_t l, float* z) override;

private:
    // out [out_rows, l] = op(W) in [in_rows, l], through the device's copies of both.
    void product(cublasOperation_t op, const float* in, std::int64_t in_rows, std::int64_t l, float* out, std::int64_t out_rows);

    const LtHandle& lt_;
    const Stream& stream_;
    const float* w_;
    std::int64_t rows_, cols_;
    DeviceBuffer<float> in_, out_;
};

}  // namespace quantflow::cuda
