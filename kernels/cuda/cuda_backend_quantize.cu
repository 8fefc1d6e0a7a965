// The CUDA backend's round-to-nearest quantization in every format, ConvRot's group rotation, nvfp4's block-scale
// search and the bias-correction product (the class: cuda_backend_class.cuh).
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "kernels/convrot.hpp"
#include "kernels/cuda/cuda_backend_class.cuh"
#include "kernels/numerics.hpp"

namespace quantflow::cuda {
namespace {

// The formats the kernels in quantize.cu and the residual GEMV decode (e4m3, int8 and int4 codes, float32 scales);
// the others (e5m2, mxfp8, nvfp4) quantize through quantize_blocks.cu.
bool has_cuda_kernels(QuantFormat format) { return is_fp8(format) || is_integer_grid(format); }

}  // namespace

std::vector<float> CudaBackend::rotate_groups(std::string_view name, const TensorView& w, std::int64_t g, std::unique_ptr<WeightHold>* keep) {
    QF_EXPECT(convrot_group_valid(g) && g <= kMaxConvrotGroup && w.cols % g == 0,
              "tensor '" + std::string(name) + "': group size " + std::to_string(g) + " does not divide " + std::to_string(w.cols) + " columns");
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    const cuda::Stream s;
    const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
    auto held = std::make_unique<Held>();
    held->bytes = DeviceBuffer<unsigned char>(n * sizeof(float));
    auto* rotated = reinterpret_cast<float*>(held->bytes.get());
    {
        const DeviceWeightRef uw = device_weight(w, s);
        cuda::rotate_groups(uw.view, g, rotated, s.get());
    }
    std::vector<float> out(n);
    staging().download(out.data(), rotated, n * sizeof(float), s);
    s.sync();
    if (keep) {  // the stages read the rotation from the device copy from now on: no upload of it
        held->view = {held->bytes.get(), DType::F32, w.rows, w.cols};
        {
            std::lock_guard lock(held_mutex_);
            held_[out.data()] = std::move(held);
        }
        *keep = std::make_unique<CudaHold>(*this, out.data());
    }
    return out;
}

QuantizedTensor CudaBackend::quantize(std::string_view name, const TensorView& w, const QuantSpec& spec) {
    if (!has_cuda_kernels(spec.format)) return quantize_new_format(name, w, spec);
    QF_EXPECT(format_fits(spec, w.rows, w.cols),
              "tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                  "] does not fit " + std::string(format_label(spec.format)) + " with block size " + std::to_string(spec.block_size));
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    const cuda::Stream s;  // each job its own stream: concurrent jobs overlap on the GPU
    const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
    const DeviceWeightRef uw = device_weight(w, s);
    const cuda::DeviceWeight& dw = uw.view;
    const cuda::ScaleGrid g = grid_of(spec, w.rows, w.cols);
    const auto cells = static_cast<std::size_t>(g.cells());

    DeviceBuffer<unsigned int> amax(cells, s.get());
    DeviceBuffer<unsigned long long> bad(1, s.get());
    QF_CUDA_CHECK(cudaMemsetAsync(amax.get(), 0, cells * sizeof(unsigned int), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0xFF, sizeof(unsigned long long), s.get()));
    cuda::cell_amax(dw, g, amax.get(), bad.get(), s.get());
    std::vector<unsigned int> amax_bits(cells);
    unsigned long long bad_row = 0;
    cuda::download(amax_bits.data(), amax, cells, s);
    cuda::download(&bad_row, bad, 1, s);
    s.sync();
    if (bad_row != std::numeric_limits<unsigned long long>::max())
        throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                    "] holds NaN or Inf in row " + std::to_string(bad_row) + "; refusing to quantize it");

    // Scales on the host with the CPU's own formulas (numerics.hpp): bit-identical by construction.
    const bool fp8 = is_fp8(spec.format);
    QuantizedTensor q;
    q.spec = spec;
    q.rows = w.rows;
    q.cols = w.cols;
    q.scales.resize(cells);
    std::vector<float> factor(cells);
    unsigned int tensor_amax = 0;
    for (std::size_t c = 0; c < cells; ++c) {
        const float a = bits_f32(amax_bits[c]);
        tensor_amax = std::max(tensor_amax, amax_bits[c]);
        factor[c] = encode_factor(spec.format, a);
        q.scales[c] = stored_scale(spec.format, a);
    }
    DeviceBuffer<float> dfactor(cells, s.get());
    DeviceBuffer<std::uint8_t> codes(n, s.get());
    cuda::upload(dfactor, factor.data(), cells, s);
    cuda::encode(dw, g, dfactor.get(), fp8 ? 0 : int_code_max(spec.format), codes.get(), s.get());
    q.codes.resize(n);
    staging().download(q.codes.data(), codes.get(), n, s);
    // The reference stores scale 1.0 everywhere for an all-zero weight (its codes are all zero); ConvRot keeps
    // comfy-kitchen's floors.
    if (tensor_amax == 0 && !is_convrot(spec.format)) std::fill(q.scales.begin(), q.scales.end(), 1.0f);
    return q;
}

QuantizedTensor CudaBackend::quantize_new_format(std::string_view name, const TensorView& w, const QuantSpec& spec) {
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    const cuda::Stream s;
    const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
    const DeviceWeightRef uw = device_weight(w, s);
    DeviceBuffer<unsigned int> amax(1, s.get());
    DeviceBuffer<unsigned long long> bad(1, s.get());
    QF_CUDA_CHECK(cudaMemsetAsync(amax.get(), 0, sizeof(unsigned int), s.get()));
    QF_CUDA_CHECK(cudaMemsetAsync(bad.get(), 0xFF, sizeof(unsigned long long), s.get()));
    cuda::cell_amax(uw.view, cuda::ScaleGrid{w.rows, w.cols, 1, 1}, amax.get(), bad.get(), s.get());
    unsigned int amax_bits = 0;
    unsigned long long bad_row = 0;
    cuda::download(&amax_bits, amax, 1, s);
    cuda::download(&bad_row, bad, 1, s);
    s.sync();
    if (bad_row != std::numeric_limits<unsigned long long>::max())
        throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                    "] holds NaN or Inf in row " + std::to_string(bad_row) + "; refusing to quantize it");
    const float tensor_amax = bits_f32(amax_bits);
    QuantizedTensor q;
    q.spec = spec;
    q.rows = w.rows;
    q.cols = w.cols;
    q.codes.resize(n);
    DeviceBuffer<std::uint8_t> codes(n, s.get());
    if (spec.format == QuantFormat::Fp8E5m2Tensor) {
        q.scales = {tensor_amax == 0.0f ? 1.0f : stored_scale(spec.format, tensor_amax)};
        cuda::encode_e5m2(uw.view, encode_factor(spec.format, tensor_amax), codes.get(), s.get());
    } else {
        const bool nvfp4 = spec.format == QuantFormat::Nvfp4;
        if (nvfp4) q.global_scale = tensor_amax > 0.0f ? tensor_amax / (kFp8Max * kE2m1Max) : 1.0f;
        q.scales.resize(static_cast<std::size_t>(w.rows * scale_cols(spec, w.cols)));
        DeviceBuffer<float> scales(q.scales.size(), s.get());
        cuda::encode_block_scaled(uw.view, nvfp4, q.global_scale, scales.get(), codes.get(), bad.get(), s.get());
        cuda::download(q.scales.data(), scales, q.scales.size(), s);
    }
    staging().download(q.codes.data(), codes.get(), n, s);
    s.sync();
    return q;
}

void CudaBackend::residual_gemv(const TensorView& w, const QuantizedTensor& q, std::span<const float> x, std::span<float> y) {
    QF_EXPECT(static_cast<std::int64_t>(x.size()) == w.cols && static_cast<std::int64_t>(y.size()) == w.rows,
              "residual_gemv: vector sizes do not match the weight");
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    const cuda::Stream s;  // each job its own stream: concurrent jobs overlap on the GPU
    const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
    const DeviceWeightRef uw = device_weight(w, s);
    DeviceBuffer<std::uint8_t> codes(n, s.get());
    DeviceBuffer<float> scales(q.scales.size(), s.get()), dx(x.size(), s.get()), dy(y.size(), s.get());
    staging().upload(codes.get(), q.codes.data(), n, s);
    const std::vector<float> scaled = cuda::cell_scales(q);
    cuda::upload(scales, scaled.data(), scaled.size(), s);
    cuda::upload(dx, x.data(), x.size(), s);
    cuda::residual_gemv(uw.view, grid_of(q.spec, q.rows, q.cols), codes.get(), scales.get(), cuda::code_kind(q.spec.format),
                        dx.get(), dy.get(), s.get());
    cuda::download(y.data(), dy, y.size(), s);
    s.sync();
}

double CudaBackend::search_block_scales(std::string_view, const TensorView& w, QuantizedTensor& q) {
    if (q.spec.format != QuantFormat::Nvfp4) return 0;
    const cuda::DeviceScope on(device_, cuda::DeviceScope::Mode::Checked);
    const cuda::Stream s;
    const std::size_t n = static_cast<std::size_t>(w.rows * w.cols);
    const std::int64_t blocks = (w.cols + 15) / 16;
    const DeviceWeightRef uw = device_weight(w, s);
    DeviceBuffer<std::uint8_t> codes(n, s.get());
    DeviceBuffer<float> scales(q.scales.size(), s.get());
    DeviceBuffer<double> errors(static_cast<std::size_t>(w.rows * blocks), s.get());
    staging().upload(codes.get(), q.codes.data(), n, s);
    cuda::upload(scales, q.scales.data(), q.scales.size(), s);
    cuda::search_nvfp4_scales(uw.view, q.global_scale, scales.get(), codes.get(), errors.get(), s.get());
    std::vector<double> e(static_cast<std::size_t>(w.rows * blocks));
    cuda::download(e.data(), errors, e.size(), s);
    cuda::download(q.scales.data(), scales, q.scales.size(), s);
    staging().download(q.codes.data(), codes.get(), n, s);
    s.sync();
    double total = 0;
    for (std::int64_t r = 0; r < w.rows; ++r) {
        double row = 0;
        for (std::int64_t b = 0; b < blocks; ++b) row += e[static_cast<std::size_t>(r * blocks + b)];
        total += row;
    }
    return total;
}

}  // namespace quantflow::cuda
