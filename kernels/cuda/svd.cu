#include "kernels/cuda/svd.cuh"

namespace quantflow::cuda {

DeviceProducts::DeviceProducts(const LtHandle& lt, const Stream& stream, const float* w_f32, std::int64_t rows, std::int64_t cols)
    : lt_(lt), stream_(stream), w_(w_f32), rows_(rows), cols_(cols) {}

void DeviceProducts::times(const float* x, std::int64_t l, float* y) { product(CUBLAS_OP_N, x, cols_, l, y, rows_); }

void DeviceProducts::times_transposed(const float* y, std::int64_t l, float* z) { product(CUBLAS_OP_T, y, rows_, l, z, cols_); }

void DeviceProducts::product(cublasOperation_t op, const float* in, std::int64_t in_rows, std::int64_t l, float* out,
                             std::int64_t out_rows) {
    const auto in_count = static_cast<std::size_t>(in_rows * l), out_count = static_cast<std::size_t>(out_rows * l);
    if (in_.size() < in_count) in_ = DeviceBuffer<float>(in_count, stream_.get());
    if (out_.size() < out_count) out_ = DeviceBuffer<float>(out_count, stream_.get());
    upload(in_, in, in_count, stream_);
    // Row-major [r, l] is column-major [l, r], and the row-major weight is the column-major W^T [cols, rows]:
    // out^T (l x out_rows) = in^T (l x in_rows) * op'(W^T), op' = N for W x and T for W^T y.
    lt_matmul(lt_, {CUDA_R_32F, CUBLAS_OP_N, op, l, out_rows, in_rows}, in_.get(), w_, out_.get(), stream_.get());
    download(out, out_, out_count, stream_);
    stream_.sync();
}

}  // namespace quantflow::cuda
